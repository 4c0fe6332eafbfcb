"""The toy CLIP: a tiny open_clip CLIP that segpcl pretrains itself, contrastively, on captioned
renderings of the toy world's pretraining domain (half the batches mildly shifted towards the downstream
domain, so zero-shot transfer does not collapse). Deterministic from a seed; cached under a content hash."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ... import toyworld as tw
from ...environment import cache_dir
from ..clip import ClipModel
from ..tiny import build_tiny
from . import weights
from .recipe import RECIPE_VERSION, ToyPretrainRecipe, lr_schedule, recipe_hash

# the recipe's names live in recipe.py; they stay importable from here (cli/use.py imports them from here)
__all__ = [
    "RECIPE_VERSION",
    "ToyPretrainRecipe",
    "lr_schedule",
    "pretrain_toy_clip",
    "pretrained_toy_clip",
    "recipe_hash",
]


def _caption_table(tokenizer) -> tuple[torch.Tensor, int]:
    """Tokens of every (class, size, phrasing) caption, indexed by (label * 2 + size) * P + phrasing."""
    texts = []
    for label in range(len(tw.CLASS_NAMES)):
        for size in range(len(tw.SIZES)):
            for template in tw.CAPTION_TEMPLATES:
                name = tw.CLASS_NAMES[label]
                texts.append(
                    template.format(name, size=tw.SIZES[size], name=name)
                    if "{size}" in template
                    else template.format(name)
                )
    return tokenizer(texts), len(tw.CAPTION_TEMPLATES)


def _wrap(clip, tokenizer, image_size) -> ClipModel:
    return ClipModel(clip, tokenizer, image_size)


def pretrain_toy_clip(recipe: ToyPretrainRecipe = ToyPretrainRecipe(), progress: bool = True) -> ClipModel:
    """Pretrain the toy CLIP from scratch (about 3 minutes on 2 CPU cores at the default recipe)."""
    torch.manual_seed(recipe.seed)
    clip, tokenizer, image_size = build_tiny("toy-clip")
    # open_clip's own attention, as when the shipped weights were made (the Linear attention computes the same
    # function with other float rounding, which 700 steps amplify into other weights)
    model = ClipModel(clip, tokenizer, image_size, linearize=False)
    table, n_phrasings = _caption_table(tokenizer)
    rng = np.random.default_rng(recipe.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_schedule(recipe))
    model.train()
    bar = tqdm(range(recipe.steps), desc="pretraining toy CLIP", disable=not progress)
    for step in bar:
        labels = rng.integers(0, len(tw.CLASS_NAMES), recipe.batch_size)
        colours, shapes = tw.split_class(labels)
        domain = tw.MILD_SHIFT if rng.random() < recipe.mild_shift_fraction else tw.PRETRAIN
        images, sizes = tw.render(colours, shapes, domain, seed=int(rng.integers(2**31)), size=image_size)
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        phr = rng.integers(0, n_phrasings, recipe.batch_size)
        tokens = table[torch.from_numpy((labels * 2 + sizes) * n_phrasings + phr)]
        img = model.image_features(x)
        txt = model.text_features(tokens)
        logits = model.logit_scale() * img @ txt.T
        lab = torch.from_numpy(labels)
        same = (lab[:, None] == lab[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        loss = 0.5 * (
            torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
            + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean()
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % 20 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model = _wrap(clip, tokenizer, image_size)  # Linear attention from here on, like every loaded model
    model.eval()
    return model


def pretrained_toy_clip(recipe: ToyPretrainRecipe = ToyPretrainRecipe(), progress: bool = True) -> ClipModel:
    """The pretrained toy CLIP: the weights shipped with the package when they come from this recipe
    (weights.py), else the user cache, else pretrained now (and cached)."""
    from safetensors.torch import load_file, save_file

    shipped = weights.load_shipped(recipe)
    if shipped is not None:
        return shipped

    path = cache_dir() / f"toy-clip-{recipe_hash(recipe)}.safetensors"
    clip, tokenizer, image_size = build_tiny("toy-clip")
    if path.is_file():
        try:
            clip.load_state_dict(load_file(str(path)))
            model = _wrap(clip, tokenizer, image_size)
            model.eval()
            return model
        except Exception:
            path.unlink(missing_ok=True)  # a corrupt cache entry is rebuilt, not fatal
    model = pretrain_toy_clip(recipe, progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    save_file({k: v.contiguous() for k, v in model.open_clip_state_dict().items()}, str(tmp))
    os.replace(tmp, path)
    return model

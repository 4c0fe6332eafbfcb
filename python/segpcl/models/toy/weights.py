"""The toy CLIP's weights shipped with the package (`segpcl/weights/toy-clip.safetensors`), so the first
`segpcl train` needs no pretraining.

The file holds every tensor of the pretrained toy CLIP in fp32, bit for bit, except the 49408 x 64 token
embedding (12.6 MB of the 16.4 MB): pretraining touches only the rows of the few tokens in its captions; every
other row is its initial value (seeded) times AdamW's decoupled weight decay, step after step, which is
replayed exactly at load time (`_decayed_init`, 0.3 s). So only the trained rows are stored (with their
indices), and the file is ~4 MB. The metadata records the recipe hash it was made from and the sha256 of the
whole fp32 state: a file from another recipe is ignored (the recipe then pretrains and caches, as before), and
a rebuild that does not reproduce the state exactly (another torch with other float rounding) is not used.
`segpcl toy pretrain` regenerates the file from the recipe.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

import torch

from ..clip import ClipModel
from ..tiny import build_tiny
from .recipe import ToyPretrainRecipe, lr_schedule, recipe_hash

log = logging.getLogger("segpcl")

SHIPPED = Path(__file__).resolve().parents[2] / "weights" / "toy-clip.safetensors"  # segpcl/weights/
FORMAT = "segpcl-toy-clip/1"
EMBED = "token_embedding.weight"


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """sha256 over the sorted keys, shapes and fp32 bytes of a state dict."""
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().to(torch.float32).contiguous().cpu()
        digest.update(f"{key}:{tuple(t.shape)}".encode())
        digest.update(t.numpy().tobytes())
    return digest.hexdigest()


def _decayed_init(recipe: ToyPretrainRecipe) -> torch.Tensor:
    """The token embedding as pretraining leaves a row it never uses: the seeded initial value times
    (1 - lr_t * weight_decay) for every step t, in the order and float arithmetic of AdamW."""
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left as it was
        torch.manual_seed(recipe.seed)
        clip, _, _ = build_tiny("toy-clip")  # the recipe's initialisation (pretrain_toy_clip seeds the same way)
    x = clip.token_embedding.weight.detach().clone()
    factor = lr_schedule(recipe)
    with torch.no_grad():
        for step in range(recipe.steps):
            lr = recipe.lr * factor(step)  # what LambdaLR sets before optimizer step `step`
            x.mul_(1 - lr * recipe.weight_decay)  # AdamW's decoupled decay; a row without gradient moves no more
    return x


def save_shipped(model: ClipModel, recipe: ToyPretrainRecipe, path: Path = SHIPPED) -> Path:
    """Write the compact file for `model` (pretrained by `recipe`); checks that it loads back bit for bit."""
    from safetensors.torch import save_file

    state = {k: v.detach().contiguous().cpu() for k, v in model.open_clip_state_dict().items()}
    embed = state.pop(EMBED)
    base = _decayed_init(recipe)
    rows = torch.nonzero((embed != base).any(dim=1)).flatten()
    out = dict(state)
    out["token_embedding.rows"] = rows.to(torch.int64)
    out["token_embedding.values"] = embed[rows].contiguous()
    full = dict(state, **{EMBED: embed})
    meta = {"format": FORMAT, "recipe_hash": recipe_hash(recipe), "sha256": state_sha256(full)}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_file(out, str(tmp), metadata=meta)
    os.replace(tmp, path)
    if load_shipped(recipe, path) is None:
        raise RuntimeError(f"{path} does not load back to the same weights")
    return path


def shipped_metadata(path: Path = SHIPPED) -> dict[str, str] | None:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception:
        return None


def load_shipped(recipe: ToyPretrainRecipe, path: Path = SHIPPED) -> ClipModel | None:
    """The toy CLIP from the shipped file, or None when the file is absent, of another recipe or format, or
    does not rebuild the recorded state exactly."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = shipped_metadata(path) if path.is_file() else None
    if not meta or meta.get("format") != FORMAT or meta.get("recipe_hash") != recipe_hash(recipe):
        return None
    try:
        state = load_file(str(path))
        rows, values = state.pop("token_embedding.rows"), state.pop("token_embedding.values")
        embed = _decayed_init(recipe)
        embed[rows] = values
        state[EMBED] = embed
        if state_sha256(state) != meta.get("sha256"):
            log.warning("%s does not rebuild the toy CLIP exactly here; pretraining it from the recipe", path)
            return None
        # built after the checks, like the cache path (one build_tiny), so the caller's random state moves on
        # exactly as it does when the weights come from the cache (LoRA's initialisation draws from it next)
        clip, tokenizer, image_size = build_tiny("toy-clip")
        clip.load_state_dict(state, strict=True)
    except Exception as exc:  # a damaged file: the recipe pretrains
        log.warning("cannot read %s (%s); pretraining the toy CLIP from the recipe", path, exc)
        return None
    model = ClipModel(clip, tokenizer, image_size)
    model.eval()
    return model

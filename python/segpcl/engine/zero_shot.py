"""Zero-shot retention: accuracy of the current model on extra ImageFolder data sets (`--zs-eval NAME=PATH`),
class names from folder names, evaluated before the first task and after the last."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..benchmarks.base import BAD_LABEL, stack_images
from ..models.text import TextEmbeddingCache


@torch.no_grad()
def zero_shot_accuracies(model, cfg, device, progress: bool = True) -> dict[str, float]:
    from ..benchmarks.imagefolder import load_imagefolder
    from ..benchmarks.templates import GENERIC_TEMPLATES

    out = {}
    was_training = model.training
    model.eval()
    for name, path in sorted(cfg.data.zs_eval.items()):
        dataset, class_names = load_imagefolder(Path(path), model.image_size)
        text = TextEmbeddingCache(model, class_names, GENERIC_TEMPLATES).embeddings
        loader = DataLoader(
            dataset,
            batch_size=cfg.train.eval_batch_size,
            collate_fn=stack_images,
            num_workers=cfg.data.num_workers,
        )
        correct = total = 0
        for images, labels in tqdm(loader, desc=f"zero-shot {name}", leave=False, disable=not progress):
            keep = labels != BAD_LABEL
            if not keep.any():
                continue
            feats = model.image_features(images[keep].to(device))
            correct += int(((feats @ text.T).argmax(1).cpu() == labels[keep]).sum())
            total += int(keep.sum())
        out[name] = 100.0 * correct / max(total, 1)
    model.train(was_training)
    return out

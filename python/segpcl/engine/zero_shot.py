"""Zero-shot retention: accuracy of the current model on extra ImageFolder data sets (`--zs-eval NAME=PATH`),
class names from folder names, evaluated before the first task and after the last."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..benchmarks.base import stack_images
from ..models.text import TextEmbeddingCache
from .evaluate import evaluate_seen


@torch.no_grad()
def zero_shot_accuracies(model, cfg, device, progress: bool = True) -> dict[str, float]:
    from ..benchmarks.imagefolder import load_imagefolder
    from ..benchmarks.templates import GENERIC_TEMPLATES

    out = {}
    was_training = model.training
    model.eval()
    for name, path in sorted(cfg.data.zs_eval.items()):
        dataset, class_names = load_imagefolder(Path(path), model.image_size, max_pixels=cfg.data.max_pixels)
        text = TextEmbeddingCache(model, class_names, GENERIC_TEMPLATES).embeddings
        loader = DataLoader(
            dataset,
            batch_size=cfg.train.eval_batch_size,
            collate_fn=stack_images,
            num_workers=cfg.data.num_workers,
        )
        correct, total, _ = evaluate_seen(
            lambda images, text=text: model.image_features(images) @ text.T,
            loader,
            np.zeros(len(class_names), dtype=np.int64),  # one "task" holding every class
            1,
            device,
            progress,
        )
        out[name] = 100.0 * correct[0] / max(total[0], 1)
    model.train(was_training)
    return out

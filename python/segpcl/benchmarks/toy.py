"""The embedded toy benchmark: 64 (colour, shape) classes of the toy world's downstream domain,
8 tasks of 8 classes, 80 training and 30 test images per class, rendered in memory from a seed."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .. import toyworld as tw
from ..cache import cache_dir
from .base import Benchmark, DataConfig, register_benchmark

TOY_TEMPLATES = ["a photo of a {}.", "a {}."]
TRAIN_PER_CLASS = 80
TEST_PER_CLASS = 30
TOY_DATA_SEED = 12345


class _InMemoryImages(Dataset):
    """uint8 images [N, H, W, 3] served as float [3, S, S] in [0, 1]."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, image_size: int):
        self.images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
        self.labels = labels.astype(np.int64)
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        x = self.images[i].float() / 255
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x[None], size=self.image_size, mode="bilinear", align_corners=False)[0]
        return x, int(self.labels[i])


def _rendered_split(per_class: int, seed: int, image_size: int) -> _InMemoryImages:
    """Rendered once, then read from the user cache (rendering is deterministic, so the cache is too)."""
    labels = np.repeat(np.arange(len(tw.CLASS_NAMES)), per_class)
    path = cache_dir() / f"toy-data-v{tw.RENDER_VERSION}-{per_class}-{seed}.npy"
    images = None
    if path.is_file():
        try:
            images = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            images = None
    if images is None or images.shape != (len(labels), 32, 32, 3):
        colours, shapes = tw.split_class(labels)
        images, _ = tw.render(colours, shapes, tw.DOWNSTREAM, seed=seed, size=32)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.npy")
        np.save(tmp, images)
        os.replace(tmp, path)
    return _InMemoryImages(images, labels, image_size)


@register_benchmark(
    "toy",
    n_classes=len(tw.CLASS_NAMES),
    initial=8,
    increment=8,
    description="embedded toy world: 64 coloured shapes in a shifted domain (no data needed)",
    needs_data=False,
)
def build_toy(cfg: DataConfig) -> Benchmark:
    train = _rendered_split(TRAIN_PER_CLASS, TOY_DATA_SEED, cfg.image_size)
    test = _rendered_split(TEST_PER_CLASS, TOY_DATA_SEED + 7919, cfg.image_size)
    return Benchmark(
        name="toy",
        class_names=list(tw.CLASS_NAMES),
        templates=list(TOY_TEMPLATES),
        train=train,
        test=test,
        train_targets=train.labels,
        test_targets=test.labels,
    )

"""The embedded toy benchmark: 64 (colour, shape) classes of the toy world's downstream domain,
8 tasks of 8 classes, 80 training and 30 test images per class (30 validation images when asked for), rendered
in memory from the data seed (`data.seed`, default the run seed): each data seed is another sample of the world."""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from .. import toyworld as tw
from ..environment import cache_dir
from .base import Benchmark, DataConfig, register_benchmark

TOY_TEMPLATES = ["a photo of a {}.", "a {}."]
TRAIN_PER_CLASS = 80
TEST_PER_CLASS = 30
VAL_PER_CLASS = TEST_PER_CLASS
"""The toy's own validation set (data.val_fraction > 0) is as large as its test set and rendered apart, so
training keeps all its images and tuning sees as many images as the final evaluation."""
TOY_DATA_SEED = 12345
SPLITS = ("train", "test", "val")


def render_seed(data_seed: int, split: str) -> int:
    """The rendering seed of one split of one data sample (part of the cache file's name). Data seed 0 renders
    the images every seed used before data.seed existed; distinct for every (data seed, split): 2 * 7919 < 1_000_003."""
    return TOY_DATA_SEED + 7919 * SPLITS.index(split) + 1_000_003 * int(data_seed)


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
    train = _rendered_split(TRAIN_PER_CLASS, render_seed(cfg.sample_seed, "train"), cfg.image_size)
    test = _rendered_split(TEST_PER_CLASS, render_seed(cfg.sample_seed, "test"), cfg.image_size)
    val = (
        _rendered_split(VAL_PER_CLASS, render_seed(cfg.sample_seed, "val"), cfg.image_size)
        if cfg.val_fraction > 0
        else None
    )
    return Benchmark(
        name="toy",
        class_names=list(tw.CLASS_NAMES),
        templates=list(TOY_TEMPLATES),
        train=train,
        test=test,
        train_targets=train.labels,
        test_targets=test.labels,
        notes={"data_seed": cfg.sample_seed, "val_source": f"{VAL_PER_CLASS} rendered images per class"},
        val=val,
        val_targets=None if val is None else val.labels,
    )


BOUNDARY_ORDER = "boundary"
"""`data.class_order=boundary` (toy only): the ground-truth order of `boundary_class_order`."""


def boundary_class_order(task_size: int = 8, seed: int = 1993) -> list[int]:
    """A class order of the toy world in which each task t >= 2 shares an attribute with exactly half of the
    classes of task t-1 and nothing with the other half (the drift diagnostic's ground truth).

    Tasks are blocks of 2 colours x (16 / task_size) shapes (task_size 2, 4 or 8; 64 / task_size tasks). The
    shapes are cut into g = 16 / task_size groups and task t takes shape group t mod g, so consecutive tasks
    share no shape; its colour pair shares exactly one colour with the previous task's pair, and the tasks of
    each shape group take disjoint pairs, so the blocks tile the 8 x 8 grid. Old classes of task t-1 with the
    shared colour share an attribute with task t; the others share nothing. The colours, shapes and the chain
    of pairs are drawn from `seed` (deterministic); within a task, classes go by colour, then shape."""
    from ..errors import ConfigError

    n_colours, n_shapes = len(tw.COLOURS), len(tw.SHAPES)
    if task_size not in (2, 4, 8):
        raise ConfigError(
            f"data.class_order=boundary needs tasks of one size, 2, 4 or 8 classes (got {task_size or 'several sizes'})"
        )
    groups = 2 * n_shapes // task_size
    per_group = n_shapes // groups
    n_tasks = n_colours * n_shapes // task_size
    rng = np.random.RandomState(seed)
    colours = rng.permutation(n_colours).tolist()
    shapes = rng.permutation(n_shapes).tolist()
    shape_groups = [shapes[i * per_group : (i + 1) * per_group] for i in range(groups)]

    def extend(pairs: list[tuple[int, int]]) -> list[tuple[int, int]] | None:
        t = len(pairs)
        if t == n_tasks:
            return pairs
        used = {c for i, p in enumerate(pairs) if i % groups == t % groups for c in p}
        free = [c for c in colours if c not in used]
        options = []
        for i, a in enumerate(free):
            for b in free[i + 1 :]:
                if t == 0 or len({a, b} & set(pairs[-1])) == 1:
                    options.append((a, b))
        for k in rng.permutation(len(options)).tolist():
            found = extend(pairs + [options[k]])
            if found is not None:
                return found
        return None

    pairs = extend([])
    if pairs is None:  # pragma: no cover  (a chain exists for every allowed size: the tests build them all)
        raise ConfigError("no boundary class order found")
    order = []
    for t, pair in enumerate(pairs):
        for c in sorted(pair):
            for s in shape_groups[t % groups]:
                order.append(int(tw.class_of(np.array(c), np.array(s))))
    return order

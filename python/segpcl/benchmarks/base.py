"""Benchmark abstraction: a named data set with class names, prompt templates and train/test data,
cut into a class-incremental stream of tasks.

Images are float tensors [3, H, W] in [0, 1] (no normalisation: the model wrapper normalises, so that
PGD can clamp to the valid pixel range). Labels are dataset class ids; a sample whose file could not be
read carries the label BAD_LABEL and is dropped (and counted) by the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError

BAD_LABEL = -1
PYCIL_SEED = 1993


@dataclass
class DataConfig:
    """Where and how a benchmark reads its data."""

    data_root: Path | None = None
    """Folder holding the data set in one of its accepted layouts (not needed for `toy`)."""
    image_size: int = 224
    """Side of the square model input; images are resized (shorter side) and centre-cropped to it."""
    class_names_file: Path | None = None
    """Optional file overriding class names: lines `id name`, or one name per line in class-index order."""
    templates_file: Path | None = None
    """Optional file of prompt templates, one per line, each containing `{}`."""
    strict: bool = False
    """Raise on unreadable image files instead of skipping them with a warning."""
    download: bool = False
    """Allow torchvision to download the data set where it can (CIFAR100 only)."""
    seed: int = 0
    """Seed for anything random in building the data (e.g. a per-class split written to the run dir)."""
    run_dir: Path | None = None
    """Run directory, where benchmarks that derive a split write it down."""


@dataclass
class Benchmark:
    """A data set ready for a class-incremental stream."""

    name: str
    class_names: list[str]
    templates: list[str]
    train: Dataset
    test: Dataset
    train_targets: np.ndarray
    test_targets: np.ndarray
    notes: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class BenchmarkInfo:
    name: str
    n_classes: int
    initial: int
    increment: int
    description: str
    needs_data: bool
    builder: Callable[[DataConfig], Benchmark]
    is_present: Callable[[Path | None], bool]


_REGISTRY: dict[str, BenchmarkInfo] = {}


def register_benchmark(
    name: str,
    *,
    n_classes: int,
    initial: int,
    increment: int,
    description: str,
    needs_data: bool = True,
    is_present: Callable[[Path | None], bool] | None = None,
):
    """Register `builder(DataConfig) -> Benchmark` under `name`."""

    def deco(builder: Callable[[DataConfig], Benchmark]):
        _REGISTRY[name] = BenchmarkInfo(
            name=name,
            n_classes=n_classes,
            initial=initial,
            increment=increment,
            description=description,
            needs_data=needs_data,
            builder=builder,
            is_present=is_present or (lambda root: not needs_data),
        )
        return builder

    return deco


def list_benchmarks() -> list[BenchmarkInfo]:
    # every benchmark module has registered by now: the package's __init__ imports them all (`_all`)
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_benchmark_info(name: str) -> BenchmarkInfo:
    if name not in _REGISTRY:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"unknown benchmark {name!r}; choose one of: {known} (see `segpcl benches`)")
    return _REGISTRY[name]


def build_benchmark(name: str, cfg: DataConfig) -> Benchmark:
    return get_benchmark_info(name).builder(cfg)


def pycil_class_order(n_classes: int, seed: int = PYCIL_SEED) -> list[int]:
    """PyCIL's class order: `np.random.seed(seed); np.random.permutation(n_classes)`."""
    rng = np.random.RandomState(seed)
    return rng.permutation(n_classes).tolist()


def task_sizes_from(n_classes: int, initial: int, increment: int) -> list[int]:
    """Initial task of `initial` classes, then tasks of `increment`; a shorter last task takes the rest."""
    if initial < 1 or increment < 1:
        raise ConfigError(f"initial ({initial}) and increment ({increment}) must be >= 1")
    if initial > n_classes:
        raise ConfigError(f"initial ({initial}) exceeds the number of classes ({n_classes})")
    sizes = [initial]
    left = n_classes - initial
    while left > 0:
        sizes.append(min(increment, left))
        left -= sizes[-1]
    return sizes


class _Subset(Dataset):
    def __init__(self, base: Dataset, indices: np.ndarray):
        self.base, self.indices = base, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[int(self.indices[i])]


def _first_per_class(targets: np.ndarray, limit: int) -> np.ndarray:
    keep = np.zeros(len(targets), dtype=bool)
    for c in np.unique(targets):
        keep[np.nonzero(targets == c)[0][:limit]] = True
    return np.nonzero(keep)[0]


def limit_per_class(bench: Benchmark, max_train: int | None, max_test: int | None) -> Benchmark:
    """The same benchmark with at most max_train / max_test images per class (the first ones)."""
    train, test, train_t, test_t = bench.train, bench.test, bench.train_targets, bench.test_targets
    if max_train is not None:
        idx = _first_per_class(np.asarray(train_t), max_train)
        train, train_t = _Subset(train, idx), np.asarray(train_t)[idx]
    if max_test is not None:
        idx = _first_per_class(np.asarray(test_t), max_test)
        test, test_t = _Subset(test, idx), np.asarray(test_t)[idx]
    return Benchmark(bench.name, bench.class_names, bench.templates, train, test, train_t, test_t, bench.notes)


class _RemappedSubset(Dataset):
    """Samples of `base` at `indices`, with labels mapped from dataset ids to stream positions."""

    def __init__(self, base: Dataset, indices: np.ndarray, id_to_pos: np.ndarray):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.id_to_pos = id_to_pos

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image, label = self.base[int(self.indices[i])]
        label = int(label)
        return image, (BAD_LABEL if label == BAD_LABEL else int(self.id_to_pos[label]))


class TaskStream:
    """A benchmark cut into tasks. Labels inside the stream are positions in the class order, so the
    classes of task t are the contiguous range `task_range(t)`."""

    def __init__(self, bench: Benchmark, class_order: Sequence[int], task_sizes: Sequence[int]):
        order = [int(c) for c in class_order]
        if sorted(order) != list(range(bench.n_classes)):
            raise ConfigError(
                f"class order must be a permutation of 0..{bench.n_classes - 1} "
                f"(got {len(order)} entries for {bench.n_classes} classes)"
            )
        if sum(task_sizes) != bench.n_classes or min(task_sizes) < 1:
            raise ConfigError(f"task sizes {list(task_sizes)} must be positive and sum to {bench.n_classes} classes")
        self.bench = bench
        self.class_order = order
        self.task_sizes = [int(s) for s in task_sizes]
        self.id_to_pos = np.empty(bench.n_classes, dtype=np.int64)
        self.id_to_pos[order] = np.arange(bench.n_classes)
        self._train_pos = self.id_to_pos[np.asarray(bench.train_targets, dtype=np.int64)]
        self._test_pos = self.id_to_pos[np.asarray(bench.test_targets, dtype=np.int64)]

    @property
    def n_tasks(self) -> int:
        return len(self.task_sizes)

    @property
    def class_names(self) -> list[str]:
        """Class names in stream order (position p is class_order[p])."""
        return [self.bench.class_names[c] for c in self.class_order]

    def task_range(self, t: int) -> range:
        start = sum(self.task_sizes[:t])
        return range(start, start + self.task_sizes[t])

    def n_seen(self, t: int) -> int:
        return sum(self.task_sizes[: t + 1])

    def task_of_position(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_tasks), self.task_sizes)

    def train_set(self, t: int) -> Dataset:
        r = self.task_range(t)
        idx = np.nonzero((self._train_pos >= r.start) & (self._train_pos < r.stop))[0]
        return _RemappedSubset(self.bench.train, idx, self.id_to_pos)

    def task_test_set(self, t: int) -> Dataset:
        """Test images of task t's classes only (labels are stream positions, as everywhere in the stream)."""
        r = self.task_range(t)
        idx = np.nonzero((self._test_pos >= r.start) & (self._test_pos < r.stop))[0]
        return _RemappedSubset(self.bench.test, idx, self.id_to_pos)

    def test_set(self, t: int) -> Dataset:
        """Test images of every class seen up to and including task t."""
        idx = np.nonzero(self._test_pos < self.n_seen(t))[0]
        return _RemappedSubset(self.bench.test, idx, self.id_to_pos)


def stack_images(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([int(b[1]) for b in batch], dtype=torch.long)
    return images, labels

"""Benchmark abstraction: a named data set with class names, prompt templates and train/test data,
cut into a class-incremental stream of tasks.

Images are float tensors [3, H, W] in [0, 1] (no normalisation: the model wrapper normalises, so that
PGD can clamp to the valid pixel range). Labels are dataset class ids; a sample whose file could not be
read carries the label BAD_LABEL and is dropped (and counted) by the engine.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
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
    max_pixels: int | None = 40_000_000
    """Pixel cap (width x height, read before decoding): a larger image is skipped like an unreadable file (an
    error with `strict`). None: no cap but PIL's own."""
    download: bool = False
    """Allow torchvision to download the data set where it can (CIFAR100 only)."""
    seed: int = 0
    """Seed of the data splits a benchmark derives (ImageNet-R's 80/20, the validation hold-out): fixed, the same
    for every run seed."""
    sample_seed: int = 0
    """Seed of the images a benchmark draws itself (the toy renders its training, validation and test images
    from it: `data.seed`); data read from files ignore it."""
    val_fraction: float = 0.0
    """> 0: evaluate on a validation set instead of the test split (`data.val_fraction`; see `with_validation`)."""
    test_fraction: float = 0.2
    """Share of each class's images held out for test where a benchmark splits them itself (`folder`)."""
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
    val: Dataset | None = None
    """A validation split of the benchmark's own (a release's, or the toy's rendered one); None: held out from
    the training images when one is asked for."""
    val_targets: np.ndarray | None = None
    split: str = "test"
    """What `test` holds: "test", or "validation" (the images `with_validation` chose; no test image is kept)."""

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


DATA_DEFINED = 0
"""n_classes / initial / increment of a benchmark whose classes come from its data (`folder`)."""
DEFAULT_TASKS = 10
"""Tasks of a DATA_DEFINED benchmark's stream without --initial/--increment."""

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
    return with_validation(get_benchmark_info(name).builder(cfg), cfg.val_fraction, cfg.seed)


def holdout_mask(targets: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """True for round(fraction * n) of each class's n images (at least 1, never all), drawn per class from
    (seed, class id): the same images whatever the run seed, the class order or the other classes."""
    targets = np.asarray(targets, dtype=np.int64)
    held = np.zeros(len(targets), dtype=bool)
    for c in np.unique(targets):
        idx = np.nonzero(targets == c)[0]
        k = min(len(idx) - 1, max(1, int(np.floor(fraction * len(idx) + 0.5))))
        if k > 0:
            held[np.random.default_rng([seed, int(c)]).choice(idx, k, replace=False)] = True
    return held


def with_validation(bench: Benchmark, fraction: float, seed: int) -> Benchmark:
    """With fraction > 0, the benchmark whose `test` is a validation set, and the test split dropped, so nothing
    downstream can read it: the benchmark's own validation split if it has one (training keeps its images),
    else `fraction` of each class's training images (holdout_mask), which training then loses."""
    if fraction <= 0:
        return bench
    if bench.val is not None:
        train, train_t, val, val_t = bench.train, bench.train_targets, bench.val, bench.val_targets
        source = bench.notes.get("val_source", f"{bench.name}'s own validation split")
    else:
        held = holdout_mask(bench.train_targets, fraction, seed)
        keep, out = np.nonzero(~held)[0], np.nonzero(held)[0]
        train_t, val_t = np.asarray(bench.train_targets)[keep], np.asarray(bench.train_targets)[out]
        train, val = _Subset(bench.train, keep), _Subset(bench.train, out)
        source = f"{fraction:g} of each class's training images (seeded draw, split seed {seed})"
    notes = {**bench.notes, "validation": source}
    return replace(
        bench,
        train=train,
        train_targets=train_t,
        test=val,
        test_targets=np.asarray(val_t),
        val=None,
        val_targets=None,
        split="validation",
        notes=notes,
    )


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


def stream_task_sizes(info: BenchmarkInfo, n_classes: int, initial: int | None, increment: int | None) -> list[int]:
    """Task sizes from --initial/--increment (None: the benchmark's own). A DATA_DEFINED benchmark has none of its
    own: without either option its classes make DEFAULT_TASKS tasks as even as can be (larger ones first, fewer
    tasks when there are fewer classes); one option alone sets both."""
    if info.initial != DATA_DEFINED:
        return task_sizes_from(n_classes, initial or info.initial, increment or info.increment)
    if initial is None and increment is None:
        k = min(DEFAULT_TASKS, n_classes)
        return [n_classes // k + (1 if i < n_classes % k else 0) for i in range(k)]
    return task_sizes_from(n_classes, initial or increment, increment or initial)  # type: ignore[arg-type]


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
    return replace(bench, train=train, test=test, train_targets=train_t, test_targets=test_t)


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

    @property
    def split(self) -> str:
        """Which images evaluation reads: "test", or "validation" (data.val_fraction > 0)."""
        return self.bench.split

    def task_of_position(self) -> np.ndarray:
        return np.repeat(np.arange(self.n_tasks), self.task_sizes)

    def train_set(self, t: int) -> Dataset:
        r = self.task_range(t)
        idx = np.nonzero((self._train_pos >= r.start) & (self._train_pos < r.stop))[0]
        return _RemappedSubset(self.bench.train, idx, self.id_to_pos)

    def task_test_set(self, t: int) -> Dataset:
        """Evaluation images (test, or validation: `split`) of task t's classes only (labels are stream
        positions, as everywhere in the stream)."""
        r = self.task_range(t)
        idx = np.nonzero((self._test_pos >= r.start) & (self._test_pos < r.stop))[0]
        return _RemappedSubset(self.bench.test, idx, self.id_to_pos)

    def test_set(self, t: int) -> Dataset:
        """Evaluation images (test, or validation: `split`) of every class seen up to and including task t."""
        idx = np.nonzero(self._test_pos < self.n_seen(t))[0]
        return _RemappedSubset(self.bench.test, idx, self.id_to_pos)


def stack_images(batch: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([b[0] for b in batch])
    labels = torch.tensor([int(b[1]) for b in batch], dtype=torch.long)
    return images, labels

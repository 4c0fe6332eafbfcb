"""The data loaders of a run: shuffled training batches, ordered test batches, and the task's training images in
dataset order for the method's hooks (BatchSource). Unreadable images carry BAD_LABEL and are dropped here, in
one place. Under several processes ShardedLoaders gives each rank its part (see engine/distributed.py)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset

from ..benchmarks.base import BAD_LABEL, stack_images
from ..config import RunConfig
from . import distributed


def readable(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(images, labels, keep): the batch without the images that could not be read, and the mask of those kept."""
    keep = labels != BAD_LABEL
    return images[keep], labels[keep], keep


class BatchSource:
    """A task's training images in dataset order, (images, labels) on the device, unreadable ones dropped; may be
    iterated several times (each pass reads the data again)."""

    def __init__(self, loader_factory, device: torch.device, on_batch=None):
        self._loader_factory, self._device, self._on_batch = loader_factory, device, on_batch

    def __iter__(self):
        loader = self._loader_factory()
        if self._on_batch is not None:
            self._on_batch(loader, None)
        for images, labels in loader:
            images, labels, keep = readable(images, labels)
            if self._on_batch is not None:
                self._on_batch(loader, keep)
            if len(labels):
                yield images.to(self._device, non_blocking=True), labels.to(self._device)


class Loaders:
    """DataLoaders of a stream with the run's settings (one process)."""

    def __init__(self, cfg: RunConfig, device: torch.device):
        self.cfg, self.device = cfg, device

    def _sampler(self, ds: Dataset, shuffle: bool):
        return None

    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
        workers = self.cfg.data.num_workers
        gen = torch.Generator().manual_seed(seed)
        sampler = self._sampler(ds, shuffle)
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            generator=gen,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            collate_fn=stack_images,
        )

    def train(self, ds: Dataset, seed: int) -> DataLoader:
        return self._loader(ds, self.cfg.train.batch_size, True, seed)

    def ordered_batches(self, ds: Dataset) -> BatchSource:
        """The whole of `ds` in dataset order (the same in every process)."""
        return BatchSource(lambda: self._loader(ds, self.cfg.train.eval_batch_size, False), self.device)

    def task_batches(self, ds: Dataset) -> BatchSource:
        """What the method's hooks read of a task's training set: all of it here; a rank's shard in ShardedLoaders."""
        return self.ordered_batches(ds)

    def test(self, ds: Dataset) -> DataLoader:
        return self._loader(ds, self.cfg.train.eval_batch_size, False)

    def reduce_counts(self, correct: list[int], total: list[int], skipped: int) -> tuple[list[int], list[int], int]:
        """Evaluation counts over every process (one process: as they are)."""
        return correct, total, skipped


class ShardedLoaders(Loaders):
    """Training batches: this rank's 1/N of each global batch; test loaders and `task_batches`: this rank's
    strided shard (evaluation counts are summed by reduce_counts); `ordered_batches` stays the whole set (the
    drift diagnostic runs identically on every rank)."""

    def __init__(self, cfg: RunConfig, device: torch.device, comm: distributed.AnchorComm):
        super().__init__(cfg, device)
        self.comm = comm
        self._shard = False

    def _sampler(self, ds, shuffle: bool):
        if shuffle:
            return distributed.ShardedShuffleSampler(ds)
        return distributed.StridedSampler(len(ds)) if self._shard else None

    def _sharded(self, ds, batch_size: int) -> DataLoader:
        self._shard = True
        try:
            return self._loader(ds, batch_size, False)
        finally:
            self._shard = False

    def train(self, ds, seed: int) -> DataLoader:
        loader = self._loader(ds, distributed.per_rank_batch(self.cfg.train.batch_size), True, seed)
        loader.sampler.generator = loader.generator  # the draws of a single process's shuffled loader
        return loader

    def test(self, ds) -> DataLoader:
        return self._sharded(ds, self.cfg.train.eval_batch_size)

    def task_batches(self, ds) -> BatchSource:
        """This rank's shard; records in comm.shard_indices the dataset index of each image it yields."""
        position = {"indices": [], "at": 0}

        def record(loader, keep):
            if keep is None:  # a new pass
                self.comm.shard_indices = []
                position.update(indices=loader.sampler.indices, at=0)
                return
            chunk = position["indices"][position["at"] : position["at"] + len(keep)]
            position["at"] += len(keep)
            self.comm.shard_indices.extend(i for i, k in zip(chunk, keep.tolist(), strict=True) if k)

        return BatchSource(lambda: self._sharded(ds, self.cfg.train.eval_batch_size), self.device, record)

    def reduce_counts(self, correct: list[int], total: list[int], skipped: int) -> tuple[list[int], list[int], int]:
        c, n, s = distributed.all_reduce_ints(correct, total, [skipped])
        return c, n, s[0]

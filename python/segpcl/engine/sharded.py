"""The task loop's pieces under several processes (see engine/distributed.py): sharded loaders, and how rank 0
leads a run (it alone claims, locks and writes the run directory) while the other ranks follow it."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..benchmarks.base import BAD_LABEL
from ..errors import TrainingError
from . import distributed
from .checkpoint import RunDir
from .trainer import _Loaders

log = logging.getLogger("segpcl")


class ShardedLoaders(_Loaders):
    """Training batches: this rank's 1/N of each global batch; test loaders and `shard_batches`: this rank's
    strided shard (evaluation counts are all-reduced by evaluate_seen); `ordered_batches` stays the whole set
    (the drift diagnostic runs identically on every rank)."""

    def __init__(self, cfg, device: torch.device, comm: distributed.AnchorComm):
        super().__init__(cfg, device, self._sampler)
        self.comm = comm
        self._shard = False

    def _sampler(self, ds, shuffle: bool, seed: int):
        if shuffle:
            return distributed.ShardedShuffleSampler(ds)
        return distributed.StridedSampler(len(ds)) if self._shard else None

    def _sharded(self, ds, batch_size: int):
        self._shard = True
        try:
            return self._loader(ds, batch_size, False)
        finally:
            self._shard = False

    def train(self, ds, seed: int):
        loader = self._loader(ds, distributed.per_rank_batch(self.cfg.train.batch_size), True, seed)
        loader.sampler.generator = loader.generator  # the draws of a single process's shuffled loader
        return loader

    def test(self, ds):
        loader = self._sharded(ds, self.cfg.train.eval_batch_size)
        loader.reduce_counts = _reduce_counts
        return loader

    def shard_batches(self, ds):
        """Like ordered_batches, over this rank's shard; records the dataset index of each image it yields."""

        def batches():
            self.comm.shard_indices = []
            loader = self._sharded(ds, self.cfg.train.eval_batch_size)
            indices, pos = loader.sampler.indices, 0
            for images, labels in loader:
                keep = labels != BAD_LABEL
                chunk = indices[pos : pos + len(labels)]
                pos += len(labels)
                self.comm.shard_indices.extend(i for i, k in zip(chunk, keep.tolist(), strict=True) if k)
                if keep.any():
                    yield images[keep].to(self.device, non_blocking=True), labels[keep].to(self.device)

        return batches


def _reduce_counts(correct: list[int], total: list[int], skipped: int) -> tuple[list[int], list[int], int]:
    c, n, s = distributed.all_reduce_ints(correct, total, [skipped])
    return c, n, s[0]


def reduce_task_info(info: dict) -> dict:
    """A task's training numbers over all ranks: `skipped_images` summed, the `mean_*` losses averaged over the
    ranks that have them (every rank takes the same steps, so that is the mean over the global batches)."""
    mine = {k: float(v) for k, v in info.items() if k.startswith("mean_") or k == "skipped_images"}
    parts = distributed.all_gather_objects(mine)
    out: dict = {"skipped_images": int(sum(p.get("skipped_images", 0) for p in parts))}
    for key in sorted({k for p in parts for k in p} - {"skipped_images"}):
        values = [p[key] for p in parts if key in p]
        out[key] = sum(values) / len(values)
    return out


class NoLogger:
    """A follower's RunLogger: rank 0 writes metrics.csv and TensorBoard."""

    def on_step(self, *args, **kw) -> None:
        pass

    def on_task(self, *args, **kw) -> None:
        pass

    def close(self) -> None:
        pass


_state = {"leading": False, "announced": False}


def leading() -> bool:
    """Whether rank 0 is inside run_ranks (run_training then runs the ordinary single-writer path)."""
    return _state["leading"]


def announce(cfg, root: Path, start_after: int | None) -> None:
    """Rank 0, at the start of the task loop: tell the followers what to run."""
    if distributed.active() and distributed.rank() == 0 and not _state["announced"]:
        _state["announced"] = True
        distributed.broadcast_object(("ok", cfg, str(root), start_after))


def run_ranks(run_training, cfg, out_dir, resume, progress, sampler_factory, resume_overrides, from_task):
    """Rank 0 runs the ordinary path (claims, locks and writes the run directory) and announces the run to the
    others once its checks passed; a failure before that is announced instead, so every rank stops with it."""
    from .trainer import _run

    if distributed.rank() == 0:
        _state.update(leading=True, announced=False)
        try:
            return run_training(cfg, out_dir, resume, progress, sampler_factory, resume_overrides, from_task)
        except BaseException as exc:
            if not _state["announced"]:
                _state["announced"] = True
                distributed.broadcast_object(("error", f"{type(exc).__name__}: {exc}"))
            _raise_lost_peer(exc)
            raise
        finally:
            _state["leading"] = False
    log.setLevel(logging.WARNING)  # rank 0 logs the run
    message = distributed.broadcast_object(None)
    if message[0] == "error":
        raise TrainingError(f"rank 0 stopped before training ({message[1]}); rank {distributed.rank()} stops too")
    _, cfg, root, start_after = message
    try:
        return _run(cfg, RunDir(Path(root)), start_after, False, sampler_factory, {"training": False})
    except BaseException as exc:
        _raise_lost_peer(exc)
        raise


_COLLECTIVE_FAILURE = ("gloo", "NCCL", "Connection reset", "Connection closed", "Timed out", "timed out")


def _raise_lost_peer(exc: BaseException) -> None:
    """A collective that failed because another rank died or stopped answering becomes one clear error."""
    is_dist = isinstance(exc, getattr(torch.distributed, "DistError", ()))
    if not is_dist and not (isinstance(exc, RuntimeError) and any(s in str(exc) for s in _COLLECTIVE_FAILURE)):
        return
    first = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
    raise TrainingError(
        f"rank {distributed.rank()} lost contact with another training process ({first}); it died or did not "
        f"answer within {distributed.timeout_seconds():.0f} s ({distributed.TIMEOUT_ENV}). Completed tasks are "
        "saved in the run directory: continue with `segpcl train --resume DIR` (under torchrun or --nproc)"
    ) from exc

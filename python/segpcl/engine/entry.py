"""The one entry point of training: `run_training` starts a fresh run, continues one (`resume`), and, under
torchrun, runs in every process: rank 0 claims, checks, locks and writes the run directory and announces the
run to the other ranks once its checks passed (or the failure that stopped it), and they follow it."""

from __future__ import annotations

import copy
import logging
import shutil
from datetime import datetime
from pathlib import Path

import torch

from ..config import RunConfig, apply_overrides, validate, write_config
from ..errors import ConfigError, SegpclError, TrainingError
from . import distributed
from .checkpoint import RunDir, atomic_write_text
from .claim import claim_out_dir, is_run_dir, remove_failed_start, remove_new_folders, run_log
from .resume import config_differences, defines_run, load_run_config, resume_point
from .run import Run, RunResult

log = logging.getLogger("segpcl")


def default_run_dir(cfg: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.data.bench}-{cfg.method.name}-{stamp}"


def run_training(
    cfg: RunConfig | None = None,
    out_dir: Path | None = None,
    resume: Path | None = None,
    progress: bool = True,
    resume_overrides: dict | None = None,
    from_task: int | None = None,
) -> RunResult:
    """Run (or resume) a whole class-incremental stream; returns the run directory and its metrics.

    With `resume`, the run's config.yaml is loaded and `resume_overrides` (e.g. a lower train.lr or another
    device) are checked, then applied for the remaining tasks and written back; the run continues after the
    last verified checkpoint (or after task `from_task`, 1-based; 0 retrains from the start). The run
    directory is locked for the whole call."""
    if not distributed.init_from_env(_device_name(cfg, resume, resume_overrides)):
        return _lead(cfg, out_dir, resume, progress, resume_overrides, from_task, _Announcement(False))
    if distributed.rank() != 0:
        return _follow()
    announcement = _Announcement(True)
    try:
        return _lead(cfg, out_dir, resume, progress, resume_overrides, from_task, announcement)
    except BaseException as exc:
        announcement.fail(exc)
        _raise_lost_peer(exc)
        raise


class _Announcement:
    """Rank 0 tells the other ranks once what to run, or why it stopped before the task loop."""

    def __init__(self, ranks: bool):
        self.pending = ranks

    def send(self, cfg: RunConfig, root: Path, start_after: int | None) -> None:
        if self.pending:
            self.pending = False
            distributed.broadcast_object(("ok", cfg, str(root), start_after))

    def fail(self, exc: BaseException) -> None:
        if self.pending:
            self.pending = False
            distributed.broadcast_object(("error", f"{type(exc).__name__}: {exc}"))


def _follow() -> RunResult:
    """A rank other than 0: wait for rank 0's announcement, then run the same tasks without writing."""
    log.setLevel(logging.WARNING)  # rank 0 logs the run
    message = distributed.broadcast_object(None)
    if message[0] == "error":
        raise TrainingError(f"rank 0 stopped before training ({message[1]}); rank {distributed.rank()} stops too")
    _, cfg, root, start_after = message
    try:
        return Run(cfg, RunDir(Path(root)), start_after, False).run()
    except BaseException as exc:
        _raise_lost_peer(exc)
        raise


def _lead(cfg, out_dir, resume, progress, overrides, from_task, announcement: _Announcement) -> RunResult:
    if resume is not None:
        return _resume(Path(resume), overrides or {}, from_task, progress, announcement)
    if cfg is None:
        raise ConfigError("run_training needs a config or a run directory to resume")
    if from_task is not None:
        raise ConfigError("--from-task applies only with --resume DIR")
    return _fresh(cfg, out_dir, progress, announcement)


def _fresh(cfg: RunConfig, out_dir: Path | None, progress: bool, announcement: _Announcement) -> RunResult:
    """A new run: claim the folder, lock it, write config.yaml, run; a start that fails before the first
    checkpoint is written removes what it created, so the same command can simply be run again."""
    validate(cfg)
    distributed.per_rank_batch(cfg.train.batch_size)  # under torchrun: before anything is created or loaded
    run = RunDir(Path(out_dir) if out_dir is not None else default_run_dir(cfg))
    created = claim_out_dir(run)
    ours = False
    try:
        try:
            run.acquire()
        except OSError as exc:
            raise ConfigError(f"cannot write the run directory {run.root}: {exc.strerror or exc}") from None
        ours = True  # we hold the lock of a folder that was new or empty
        try:
            if is_run_dir(run.root):  # another process finished a run here between our check and the lock
                ours = False
                raise ConfigError(f"{run.root} already holds a run; use --resume {run.root} or another --out")
            try:
                run.create()
                write_config(cfg, run.config_path)
            except OSError as exc:
                raise ConfigError(f"cannot write the run directory {run.root}: {exc.strerror or exc}") from None
            with run_log(run):
                announcement.send(cfg, run.root, None)
                return Run(cfg, run, None, progress).run()
        except BaseException:
            if ours and not run.task_folders():  # no checkpoint: nothing to resume from
                remove_failed_start(run, created)
            raise
        finally:
            run.release()
    except BaseException:
        if created is not None and not ours:
            remove_new_folders(run.root, created)
        raise


def _resume(root: Path, overrides: dict, from_task: int | None, progress: bool, announcement) -> RunResult:
    """Check everything (config, overrides, checkpoints) before changing a single file, then continue."""
    run = RunDir(root)
    old = load_run_config(root)
    cfg = apply_overrides(copy.deepcopy(old), overrides)
    fixed = config_differences(old, cfg, defines_run)
    if fixed:
        raise ConfigError(
            f"--resume cannot change what defines the run ({'; '.join(fixed)}); the method, model, LoRA layout, "
            "data split and seed stay as the run started: use a new --out for a new run"
        )
    validate(cfg)
    distributed.per_rank_batch(cfg.train.batch_size)
    if not run.checkpoints.is_dir():
        raise ConfigError(f"{root} is not a segpcl run directory (no checkpoints/ folder)")
    run.refuse_links()  # a link planted in a shared run folder: refused before the lock is written
    try:
        run.acquire()
    except OSError as exc:
        raise ConfigError(f"cannot lock {run.lock_path}: {exc.strerror or exc}") from None
    try:
        start_after = resume_point(run, old, from_task)
        run.remove_stale_temporaries()
        if from_task is not None:
            # an explicit restart point: later checkpoints are superseded (they would otherwise mix in)
            for k in run.task_folders():
                if start_after is None or k > start_after:
                    shutil.rmtree(run.task_dir(k))
        if start_after is None:
            run.latest_path.unlink(missing_ok=True)
        elif run.latest_name() != run.task_dir(start_after).name:
            atomic_write_text(run.latest_path, run.task_dir(start_after).name)
        if config_differences(old, cfg):
            write_config(cfg, run.config_path)
        with run_log(run):
            announcement.send(cfg, run.root, start_after)
            return Run(cfg, run, start_after, progress).run()
    finally:
        run.release()


def _device_name(cfg: RunConfig | None, resume, overrides: dict | None) -> str:
    """The run's train.device (which backend the process group uses), without loading anything else."""
    if overrides and overrides.get("train.device"):
        return str(overrides["train.device"])
    if cfg is not None:
        return cfg.train.device
    if resume is not None:
        try:
            return load_run_config(Path(resume)).train.device
        except SegpclError:
            return "auto"
    return "auto"


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

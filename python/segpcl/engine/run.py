"""A run, read top to bottom: `Run(cfg, folder, start_after)` builds the stream, the model and the method, fresh
or restored after a verified checkpoint; `run_task(t)` is one task (before_task, epochs, after_task,
evaluation); `save(t)` writes its checkpoint and metrics; `metrics()` is metrics.json. The same object runs in
one process and, under torchrun, in every rank (only rank 0 writes).

Every task reseeds from (seed, task), so `--resume` after a completed task replays the rest (up to float
rounding: peft's MultiheadAttention LoRA adds and subtracts its delta in the base weights on each forward).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import RunConfig
from ..environment import environment
from ..errors import ConfigError, TrainingError
from ..method.registry import method_class
from ..metrics import AccuracyMatrix
from ..report import accuracy_svg
from . import distributed
from .build import build_method, build_model, build_stream, data_seed, image_size_guess
from .checkpoint import RunDir, restore_task, write_json, write_task_contents
from .classes import write_classes
from .device import autocast_factory, resolve_device, seed_everything, task_seed
from .evaluate import evaluate_stream
from .loaders import Loaders, ShardedLoaders
from .logs import NoLogger, RunLogger
from .loop import train_task
from .reference_images import reference_images
from .resume import resume_hint, run_identity
from .transfer import record_clip_branch, record_transfer

log = logging.getLogger("segpcl")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    class_names: list[str] = field(default_factory=list)


class Run:
    """One class-incremental run in its directory (see the module docstring)."""

    def __init__(self, cfg: RunConfig, folder: RunDir, start_after: int | None, progress: bool):
        """`cfg` validated by the caller (engine/entry.py); `start_after`: the verified checkpoint to continue
        after (None: a fresh run)."""
        self.cfg, self.folder, self.progress = cfg, folder, progress
        self.main = distributed.rank() == 0
        self.device = distributed.local_device(resolve_device(cfg.train.device))
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)  # Triton launches on the current device
        self._build()
        self.matrix = AccuracyMatrix(self.stream.n_tasks)
        self.timings: list[dict] = []
        self.task_info: list[dict] = []
        self.skipped = {"train": 0, "test": 0}
        self.zs: dict = {}
        self.drift: list[dict] = []  # --diagnose: one entry per task t >= 2
        self.start = 0 if start_after is None else self._restore(start_after)
        self.env = {**environment(), "device": str(self.device)}

    def _build(self) -> None:
        """The stream (checked before any weights load), the model, the method and the loaders."""
        cfg, device = self.cfg, self.device
        guess = image_size_guess(cfg.model.arch)
        stream_dir = self.folder.root if self.main else None  # rank 0 writes files a benchmark keeps in the run
        self.stream = build_stream(cfg, guess, stream_dir)
        if device.type != "cuda" and cfg.model.precision == "bf16":
            log.warning("model.precision=bf16 is autocast on CUDA only; running fp32 on %s", device)
        self.model = build_model(cfg, device)  # seeded from train.seed (reopening a run builds it the same way)
        if self.model.image_size != guess:
            self.stream = build_stream(cfg, self.model.image_size, stream_dir)
        needs = method_class(cfg.method.name).needs(cfg.method.name)
        references = reference_images(cfg, self.model.image_size) if needs.reference_images else None
        autocast = autocast_factory(device, cfg.model.precision)
        self.method = build_method(cfg, self.model, self.stream, device, autocast, references)
        self.loaders = Loaders(cfg, device)
        if distributed.active():  # each rank scans and encodes its shard; anchors and prototypes are merged
            self.method.comm = distributed.AnchorComm()
            self.loaders = ShardedLoaders(cfg, device, self.method.comm)

    def _restore(self, latest: int) -> int:
        """Load the verified checkpoint of task `latest`; returns the first task still to run."""
        folder, hint = self.folder.task_dir(latest), resume_hint(self.folder, latest)
        state = restore_task(folder, latest, self.model, self.method, hint)
        try:  # verified against its manifest already; this catches a manifest forged along with the file
            self.matrix.load_state(state["metrics"])
            self.timings, self.task_info = state["timings"], state["task_info"]
            self.skipped, self.zs, self.drift = state["skipped"], state["zs"], state.get("drift", [])
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"checkpoint {folder} cannot be read ({type(exc).__name__}: {exc}); {hint}") from None
        if len(self.matrix.acc) != latest + 1:
            why = f"holds {len(self.matrix.acc)} tasks' results, not {latest + 1}"
            raise ConfigError(f"checkpoint {folder} {why}; {hint}")
        log.info("resuming %s after task %d", self.folder.root, latest + 1)
        return latest + 1

    @property
    def n_tasks(self) -> int:
        """The tasks this run trains (--max-tasks: the first N)."""
        return min(self.stream.n_tasks, self.cfg.data.max_tasks or self.stream.n_tasks)

    def run_task(self, t: int, logger) -> None:
        """Task t: forward-transfer probe, before_task, the epochs, after_task, evaluation on all seen classes."""
        cfg, method, train_set = self.cfg, self.method, self.stream.train_set(t)
        times = {"transfer_eval": self._record_transfer(t)}
        seed_everything(task_seed(cfg.train.seed, t))
        t0 = time.perf_counter()
        info = method.before_task(t, self.loaders.task_batches(train_set))
        distributed.dump_anchors(getattr(method, "anchors", None), t)  # SEGPCL_DEBUG_ANCHORS only
        times["before_task"] = time.perf_counter() - t0
        diagnosis = self._begin_diagnosis(t, train_set, times)
        if method.trains:
            t0 = time.perf_counter()
            loader = self.loaders.train(train_set, task_seed(cfg.train.seed, t))
            info.update(train_task(method, loader, cfg, t, str(self.folder.root), logger.on_step, self.progress))
            if distributed.active():  # the whole batch's numbers: unreadable images summed, losses averaged
                info.update(distributed.reduce_task_info(info))
            self.skipped["train"] += info.pop("skipped_images")
            times["train"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        info.update(method.after_task(t, self.loaders.task_batches(train_set)))
        times["after_task"] = time.perf_counter() - t0
        if diagnosis is not None:  # the task's final model: after_task may average or fuse weights
            self._diagnose(t, diagnosis, times)
        t0 = time.perf_counter()
        method.begin_eval(t)
        correct, total, self.skipped["test"] = evaluate_stream(
            method.predict, self.loaders, self.stream, self.stream.test_set(t), t, self.device, self.progress
        )
        times["eval"] = time.perf_counter() - t0
        self.matrix.update(t, correct, total)
        clip_args = (self.stream, self.loaders, t, self.device, self.progress, (correct, total))
        times["eval_clip"] = record_clip_branch(self.matrix, method, *clip_args)
        self.timings.append(times)
        self.task_info.append(info)
        log.info("task %d/%d: accuracy %.2f (%s)", t + 1, self.stream.n_tasks, self.matrix.seen_accuracy[-1], info)
        if cfg.data.zs_eval and t == self.n_tasks - 1:
            self._zero_shot("after")

    def _record_transfer(self, t: int) -> float:
        return record_transfer(
            self.matrix, self.method, self.stream, self.loaders, t, self.device, self.progress, self.method.trains
        )

    def _begin_diagnosis(self, t: int, train_set, times: dict):
        """--diagnose: the teacher and probe anchors of task t (tasks after the first, methods that train)."""
        if not (self.cfg.train.diagnose and self.method.trains and t >= 1):
            return None
        from ..analysis.drift import begin_diagnosis

        t0 = time.perf_counter()
        diagnosis = begin_diagnosis(self.method, self.loaders.task_batches(train_set), self.device)
        times["diagnose"] = time.perf_counter() - t0
        return diagnosis

    def _diagnose(self, t: int, diagnosis, times: dict) -> None:
        from ..analysis.drift import diagnose_task, drift_table

        t0 = time.perf_counter()
        self.drift.append(diagnose_task(self.method, diagnosis, self.stream, self.loaders.ordered_batches, t))
        times["diagnose"] += time.perf_counter() - t0
        log.info("%s", drift_table(self.drift[-1:]))

    def _zero_shot(self, when: str) -> None:
        """--zs-eval: zero-shot accuracy on other data sets before the first task and after the last."""
        from .zero_shot import zero_shot_accuracies

        for name, acc in zero_shot_accuracies(self.model, self.cfg, self.device, self.progress).items():
            entry = self.zs.setdefault(name, {})
            entry[when] = acc
            if when == "after" and "before" in entry:
                entry["delta"] = acc - entry["before"]

    def save(self, t: int, logger) -> None:
        """Rank 0: task t's checkpoint first (metrics.json never runs ahead of it), then metrics and plots."""
        if not self.main:
            return
        state = {
            "metrics": self.matrix.state(),
            "timings": self.timings,
            "task_info": self.task_info,
            "skipped": self.skipped,
            "zs": self.zs,
            **({"drift": self.drift} if self.drift else {}),
        }
        contents = lambda folder: write_task_contents(folder, self.model, self.method, state)  # noqa: E731
        self.folder.save_task(t, contents, run_identity(self.cfg))
        metrics = self.metrics()
        write_json(self.folder.metrics_path, metrics)
        logger.on_task(t, metrics)  # metrics.csv, TensorBoard
        self.folder.write_plot(accuracy_svg(metrics))
        if self.drift:
            from ..analysis.drift import drift_svg

            title = f"{self.cfg.method.name} on {self.cfg.data.bench}: drift of old classes"
            self.folder.write_plot(drift_svg(self.drift, title), "drift.svg")

    def metrics(self) -> dict:
        """metrics.json: the accuracy matrix and its summaries, timings, task information, environment."""
        cfg, stream = self.cfg, self.stream
        out = {
            "bench": cfg.data.bench,
            "method": cfg.method.name,
            "seed": cfg.train.seed,
            "n_tasks": stream.n_tasks,
            "task_sizes": stream.task_sizes,
            "split": stream.split,  # what every accuracy here was measured on: "test" or "validation"
            "data_seed": data_seed(cfg),
            "tasks_completed": len(self.matrix.acc),
            **self.matrix.result(),
            "timings": self.timings,
            "task_info": self.task_info,
            "skipped_images": self.skipped,
            "environment": self.env,
        }
        if self.zs:
            out["zero_shot_retention"] = self.zs
        if self.drift:
            out["drift"] = self.drift
        return out

    def run(self) -> RunResult:
        """Every remaining task, each saved as it completes (a fresh run that fails before its first checkpoint
        leaves no trace: engine/entry.py)."""
        if self.cfg.data.zs_eval and self.start == 0:
            self._zero_shot("before")
        if self.main:
            write_classes(self.folder.root, self.stream)  # lets predict/export work where the data set is absent
        steps_done = sum(int(i.get("steps", 0)) for i in self.task_info)
        logger = NoLogger()
        if self.main:
            logger = RunLogger(self.folder.root, self.cfg.train.log, steps_done, config=self.cfg.to_dict())
        t = self.start
        try:
            for t in range(self.start, self.n_tasks):
                self.run_task(t, logger)
                self.save(t, logger)
        except torch.OutOfMemoryError as exc:
            raise TrainingError(
                f"out of GPU memory in task {t + 1} ({str(exc).splitlines()[0]}); completed tasks are saved in "
                f"{self.folder.checkpoints}. Lower train.batch_size, train.eval_batch_size or method.k_seed "
                f"(--set ...), or use --precision bf16, then continue with `segpcl train --resume {self.folder.root}`"
            ) from exc
        except Exception as exc:
            full = self.folder.disk_full_error(exc)
            if full is None:
                raise
            raise full from exc
        finally:
            logger.close()
        metrics = self.metrics()
        if self.main:
            write_json(self.folder.metrics_path, metrics)
        distributed.barrier()  # the followers end with rank 0's last write
        return RunResult(self.folder.root, metrics, self.stream.class_names)

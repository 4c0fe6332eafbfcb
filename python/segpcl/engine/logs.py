"""Logs people already read: `metrics.csv` (one row per task, always) and, with `--log tensorboard`
(train.log), TensorBoard event files under `<run>/tensorboard/` (per-step losses by part, per-task
accuracies, the mean pre-clip gradient norm and share of clipped steps, the accuracy matrix as text).
TensorBoard is an optional extra: `pip install segpcl[tensorboard]`. With `--log wandb`, the same scalars go to
a Weights & Biases run (engine/wandb_log.py; `pip install segpcl[wandb]`).
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from ..errors import ConfigError
from .checkpoint import atomic_write_text
from .nofollow import refuse_link

LOG_KINDS = ("tensorboard", "wandb")


def metrics_csv(metrics: dict) -> str:
    """metrics.json's per-task numbers as CSV: one row per completed task (accuracies in percent)."""
    acc = metrics.get("accuracy_matrix") or []
    seen = metrics.get("seen_accuracy") or metrics.get("task_accuracy") or []
    n_tasks = int(metrics.get("n_tasks") or len(acc))
    sizes = metrics.get("task_sizes") or []
    pre = metrics.get("pre_task_accuracy") or []
    zero = metrics.get("zero_shot_task_accuracy") or []
    timings = metrics.get("timings") or []
    infos = metrics.get("task_info") or []
    loss_keys = sorted({k for info in infos for k in info if k.startswith("mean_")})
    header = ["task", "classes_seen", "seen_accuracy", *[f"acc_task{j + 1}" for j in range(n_tasks)]]
    header += ["pre_task_accuracy", "zero_shot_accuracy", "seconds", "steps", "anchors", "clipped_share", *loss_keys]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for t, row in enumerate(acc):
        info = infos[t] if t < len(infos) else {}
        seconds = sum(float(v) for v in (timings[t] if t < len(timings) else {}).values())
        writer.writerow(
            [
                t + 1,
                sum(sizes[: t + 1]) if sizes else "",
                _num(seen[t] if t < len(seen) else None),
                *[_num(row[j]) if j < len(row) else "" for j in range(n_tasks)],
                _num(pre[t] if t < len(pre) else None),
                _num(zero[t] if t < len(zero) else None),
                f"{seconds:.2f}",
                info.get("steps", ""),
                info.get("anchors", ""),
                _num(info.get("clipped_share")),
                *[_num(info.get(k)) for k in loss_keys],
            ]
        )
    return buf.getvalue()


def _num(value) -> str:
    return "" if value is None else f"{float(value):.4f}"


def write_metrics_csv(run_root: Path, metrics: dict) -> None:
    atomic_write_text(Path(run_root) / "metrics.csv", metrics_csv(metrics))


def check_log_kinds(kinds) -> list[str]:
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    unknown = [k for k in kinds if k not in LOG_KINDS]
    if unknown:
        raise ConfigError(f"unknown log kind {unknown[0]!r} (train.log / --log); choose from: {', '.join(LOG_KINDS)}")
    return kinds


def tensorboard_writer(log_dir: Path):
    """A torch SummaryWriter, or a ConfigError saying how to install TensorBoard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            "--log tensorboard needs the tensorboard package: pip install 'segpcl[tensorboard]' "
            "(or pip install tensorboard)"
        ) from None
    refuse_link(log_dir)  # the event files are never written through a link
    return SummaryWriter(log_dir=str(log_dir))


def step_scalars(task: int, loss: float, parts: dict, lr: float | None) -> dict[str, float]:
    """A training step's scalars, by tag: the loss and its parts, the learning rate, the task (1-based)."""
    out = {"loss/total": loss, **{f"loss/{key}": float(value) for key, value in parts.items()}}
    if lr is not None:
        out["train/lr"] = lr
    out["train/task"] = task + 1
    return out


def task_scalars(task: int, metrics: dict) -> dict[str, float]:
    """A finished task's scalars, by tag: accuracies, the summaries, what the optimiser did this task."""
    out = {"accuracy/seen": (metrics.get("seen_accuracy") or [])[task]}
    out.update({f"accuracy/task{j + 1}": a for j, a in enumerate(metrics["accuracy_matrix"][task])})
    for key in ("last", "avg", "forgetting", "bwt"):
        if isinstance(metrics.get(key), int | float):
            out[f"summary/{key}"] = metrics[key]
    infos = metrics.get("task_info") or []
    info = infos[task] if task < len(infos) else {}
    for key, tag in (("mean_grad_norm", "train/grad_norm_mean"), ("clipped_share", "train/clipped_share")):
        if key in info:  # what the optimiser did this task (the norm before clipping)
            out[tag] = info[key]
    return out


class RunLogger:
    """metrics.csv after every task; TensorBoard events and a wandb run when asked. `previous_steps`: training
    steps of the tasks already done (a resumed run continues the step axis); `config`: the run's config, shown
    by wandb."""

    def __init__(self, run_root: Path, kinds=(), previous_steps: int = 0, config: dict | None = None):
        self.root = Path(run_root)
        self.kinds = check_log_kinds(kinds)
        self.step = int(previous_steps)
        self.writer = tensorboard_writer(self.root / "tensorboard") if "tensorboard" in self.kinds else None
        self.wandb = None
        if "wandb" in self.kinds:
            from .wandb_log import WandbLog  # wandb is imported only by runs that log to it

            self.wandb = WandbLog(self.root, config)

    def on_step(self, task: int, loss: float, parts: dict, lr: float | None = None) -> None:
        """One training step (loss already on the host; the parts are read only when a log is on)."""
        self.step += 1
        if self.writer is None and self.wandb is None:
            return
        scalars = step_scalars(task, loss, parts, lr)
        if self.writer is not None:
            for tag, value in scalars.items():
                self.writer.add_scalar(tag, value, self.step)
        if self.wandb is not None:
            self.wandb.on_step(self.step, scalars)

    def on_task(self, task: int, metrics: dict) -> None:
        write_metrics_csv(self.root, metrics)
        if self.writer is None and self.wandb is None:
            return
        scalars = task_scalars(task, metrics)
        if self.wandb is not None:
            self.wandb.on_task(task, scalars, metrics["accuracy_matrix"])
        if self.writer is None:
            return
        for tag, value in scalars.items():
            self.writer.add_scalar(tag, value, task + 1)
        acc = metrics["accuracy_matrix"][task]
        rows = ["| after task | " + " | ".join(f"task {j + 1}" for j in range(len(acc))) + " |"]
        rows.append("|---" * (len(acc) + 1) + "|")
        for t, row in enumerate(metrics["accuracy_matrix"][: task + 1]):
            cells = [f"{a:.2f}" for a in row] + [""] * (len(acc) - len(row))
            rows.append(f"| {t + 1} | " + " | ".join(cells) + " |")
        self.writer.add_text("accuracy_matrix", "\n".join(rows), task + 1)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.wandb is not None:
            self.wandb.close()
            self.wandb = None


class NoLogger:
    """A follower's RunLogger: rank 0 writes metrics.csv, TensorBoard and wandb."""

    def on_step(self, *args, **kw) -> None:
        pass

    def on_task(self, *args, **kw) -> None:
        pass

    def close(self) -> None:
        pass

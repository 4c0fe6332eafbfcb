"""Reopening a run: the model, its LoRA adapter and the method (prototypes included) of a run directory after one
of its tasks, assembled with the engine's own builders (engine/build.py), so an evaluation of the reopened
method reproduces the run's own numbers.

Used by `segpcl.load_run`, `segpcl eval`, `segpcl predict` and `segpcl export`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from ..benchmarks.base import TaskStream
from ..config import RunConfig, validate
from ..engine.build import build_method, build_model, build_stream, image_size_guess
from ..engine.checkpoint import RunDir, check_manifest, restore_task
from ..engine.classes import NamesOnlyStream, read_classes
from ..engine.device import autocast_factory, resolve_device
from ..engine.evaluate import evaluate_stream
from ..engine.loaders import Loaders
from ..engine.resume import load_run_config
from ..errors import ConfigError, DataError
from ..method.base import ContinualMethod
from ..method.registry import method_class
from ..models.clip import ClipModel


@dataclass
class Reopened:
    """A run after task `task` (0-based), ready to predict (begin_eval called)."""

    root: Path
    cfg: RunConfig
    task: int
    stream: TaskStream | NamesOnlyStream
    """The run's task stream, or only its names (classes.json) when the data set is not at hand."""
    model: ClipModel
    learner: ContinualMethod
    """The run's method (for SeGP-CL's rows, a Learner)."""
    device: torch.device
    state: dict
    """The checkpoint's state.json (the metrics so far, timings, task information)."""


def checkpoint_task(run: RunDir, task: int | None) -> int:
    """The 0-based task of the checkpoint to open: `task` (1-based) or the last completed one; verified."""
    folders = run.task_folders()
    if not folders:
        raise ConfigError(f"{run.root} has no task checkpoints yet (checkpoints/task_XX); train at least one task")
    if task is None:
        k = run.latest_task()
        if k is None or k not in folders:
            k = folders[-1]
    else:
        if task < 1:
            raise ConfigError(f"--task counts from 1, got {task}")
        k = task - 1
        if k not in folders:
            have = ", ".join(str(t + 1) for t in folders)
            raise ConfigError(f"{run.root} has no checkpoint of task {task} (checkpoints of tasks: {have})")
    problem = check_manifest(run.task_dir(k))
    if problem:
        raise ConfigError(f"checkpoint {run.task_dir(k)} is damaged: {problem}; open another --task")
    return k


def reopen(
    run_dir: str | Path,
    task: int | None = None,
    device: str | None = None,
    data_root: str | Path | None = None,
    need_data: bool = True,
) -> Reopened:
    """Reassemble the run in `run_dir` after task `task` (1-based; default the last completed task).

    `device` overrides the run's train.device ("cpu" when None and the run's device is not available here);
    `data_root` points at the benchmark's data elsewhere (its test images; the class names too with
    `need_data`). With `need_data=False` (predict, export, load_run) the data set is not read: the class names,
    templates and task sizes come from the run's verified classes.json (engine/classes.py), so nothing but
    config.yaml, classes.json and the checkpoint is read from the run; `evaluate_task` builds the data set
    when it is asked for. A run without classes.json (an old segpcl's) reads its names from the data set at
    an explicit `data_root`."""
    root = Path(run_dir)
    if root.is_file() and root.name == "config.yaml":
        root = root.parent
    if not root.is_dir():
        raise ConfigError(f"{root}: no such run directory (pass the --out folder of a segpcl train run)")
    cfg = copy.deepcopy(load_run_config(root))
    if data_root is not None:
        cfg.data.data_root = str(data_root)
    if device is not None:
        cfg.train.device = device
    validate(cfg)
    run = RunDir(root)
    k = checkpoint_task(run, task)
    dev = resolve_device(cfg.train.device)
    guess = image_size_guess(cfg.model.arch)
    stream = None if need_data else read_classes(root, run.task_dir(k))
    if stream is None:
        if not need_data and data_root is None:
            raise ConfigError(
                f"{root} has no classes.json (a run of an older segpcl): pass --data-root (data_root=) where its "
                "data set is, to read its class names from it"
            )
        stream = build_stream(cfg, guess, root)  # data problems are reported before the weights load
    elif k >= stream.n_tasks:
        raise ConfigError(f"{root}/classes.json has {stream.n_tasks} tasks, but a checkpoint of task {k + 1}")
    model = build_model(cfg, dev)
    if model.image_size != guess and not isinstance(stream, NamesOnlyStream):
        stream = build_stream(cfg, model.image_size, root)
    # the distillation source of lora+distill-ref is a training-time input only; inference never reads it
    reference = torch.empty(0) if method_class(cfg.method.name).needs(cfg.method.name).reference_images else None
    learner = build_method(cfg, model, stream, dev, autocast_factory(dev, cfg.model.precision), reference)
    folder = run.task_dir(k)
    state = restore_task(folder, k, model, learner)
    model.eval()
    learner.begin_eval(k)
    return Reopened(root, cfg, k, stream, model, learner, dev, state)


def evaluate_task(reopened: Reopened, progress: bool = False) -> dict:
    """Accuracy on the evaluation images (the run's `split`: test, or validation) of every class seen after the
    reopened task, as the trainer measures it: {"task": 1-based, "split", "accuracy": per-task accuracies
    (percent), "seen_accuracy": percent, "correct", "total"}."""
    r = reopened
    if isinstance(r.stream, NamesOnlyStream):
        r.stream = _data_stream(r)
    loaders = Loaders(r.cfg, r.device)
    correct, total, skipped = evaluate_stream(
        r.learner.predict, loaders, r.stream, r.stream.test_set(r.task), r.task, r.device, progress
    )
    return {
        "task": r.task + 1,
        "split": r.stream.split,
        "accuracy": [100.0 * c / max(n, 1) for c, n in zip(correct, total, strict=True)],
        "seen_accuracy": 100.0 * sum(correct) / max(sum(total), 1),
        "correct": correct,
        "total": total,
        "skipped_images": skipped,
    }


def _data_stream(r: Reopened) -> TaskStream:
    """The run's data set, read when its images are first asked for; it must hold the classes the run opened
    with (its classes.json)."""
    try:
        stream = build_stream(r.cfg, r.model.image_size, r.root)
    except DataError as exc:
        raise DataError(
            f"{exc} (evaluating {r.root} reads its test images: pass --data-root, or data_root=, where they are)"
        ) from None
    if stream.class_names != r.stream.class_names or stream.task_sizes != r.stream.task_sizes:
        raise DataError(
            f"the data set at {r.cfg.data.data_root} does not hold the classes of {r.root} (its classes.json); "
            "pass --data-root where the run's own data set is"
        )
    return stream


BRANCHES = ("run", "clip", "dual")


def set_branch(reopened: Reopened, branch: str | None) -> None:
    """Which inference the learner uses: run (None: the run's own), clip (the CLIP path alone), or dual (CLIP
    fused with the prototype branch; only for runs that kept prototypes)."""
    branch = branch or "run"
    if branch not in BRANCHES:
        raise ConfigError(f"branch must be one of {', '.join(BRANCHES)}, got {branch!r}")
    reopened.learner.use_branch(reopened.task, branch)

"""Reopening a run: the model, its LoRA adapter, the prototypes and the learner of a run directory after one of
its tasks, assembled exactly as the trainer assembles them (the trainer calls `build_model` and
`build_learner` too), so an evaluation of the reopened learner reproduces the run's own numbers.

Used by `segpcl.load_run`, `segpcl eval`, `segpcl predict` and `segpcl export`.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..benchmarks.base import TaskStream
from ..config import RunConfig, validate
from ..errors import ConfigError, DataError
from ..method.learner import Learner, method_switches
from ..models.clip import ClipModel
from ..models.loading import load_clip
from ..models.lora import apply_lora, load_adapter
from .checkpoint import RunDir, check_manifest, load_prototypes
from .device import autocast_factory, resolve_device, seed_everything


def build_model(cfg: RunConfig, device: torch.device) -> ClipModel:
    """The run's CLIP before LoRA, in eval mode; seeded from train.seed first, so a model without weights file
    (a random tiny one) is the same in every process that builds it."""
    seed_everything(cfg.train.seed)
    model = load_clip(cfg.model.arch, cfg.model.pretrained, device=device, precision=cfg.model.precision)
    model.eval()
    return model


def build_learner(
    cfg: RunConfig,
    model: ClipModel,
    stream: TaskStream | NamesOnlyStream,
    device: torch.device,
    autocast,
    reference_images: torch.Tensor | None = None,
) -> Learner:
    """LoRA on the model (for the methods that train), then the learner over the stream's classes."""
    switches = method_switches(cfg.method.name)
    if switches.train:
        apply_lora(model, cfg.lora)
        model.to(device)
    return Learner(
        model,
        stream.class_names,
        stream.bench.templates,
        stream.task_sizes,
        cfg.method,
        text_has_lora=switches.train and "text" in cfg.lora.towers,
        device=device,
        autocast=autocast,
        reference_images=reference_images,
    )


CLASSES = "classes.json"


def write_classes(root: Path, stream: TaskStream) -> None:
    """<run>/classes.json: the class names in stream order, the prompt templates and the task sizes."""
    from .checkpoint import write_json

    write_json(
        Path(root) / CLASSES,
        {
            "class_names": stream.class_names,
            "templates": list(stream.bench.templates),
            "task_sizes": stream.task_sizes,
        },
    )


class _Names:
    def __init__(self, templates: list[str]):
        self.templates = templates


class NamesOnlyStream:
    """What inference needs of a TaskStream (names, templates, task sizes), read from <run>/classes.json when
    the data set is not at hand; it has no images."""

    has_data = False

    def __init__(self, class_names: list[str], templates: list[str], task_sizes: list[int]):
        self.class_names = list(class_names)
        self.bench = _Names(list(templates))
        self.task_sizes = [int(n) for n in task_sizes]

    @property
    def n_tasks(self) -> int:
        return len(self.task_sizes)

    def task_range(self, t: int) -> range:
        start = sum(self.task_sizes[:t])
        return range(start, start + self.task_sizes[t])


def _names_only(root: Path) -> NamesOnlyStream | None:
    try:
        data = json.loads((root / CLASSES).read_text())
        return NamesOnlyStream(data["class_names"], data["templates"], data["task_sizes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


@dataclass
class Reopened:
    """A run after task `task` (0-based), ready to predict (begin_eval called)."""

    root: Path
    cfg: RunConfig
    task: int
    stream: TaskStream | NamesOnlyStream
    """The run's task stream, or only its names (classes.json) when the data set is not at hand."""
    model: ClipModel
    learner: Learner
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
    `data_root` points at the benchmark's data elsewhere (the class names and the test images come from it).
    With `need_data=False`, a run whose data set is not at hand opens from its classes.json (prediction only)."""
    from .trainer import build_stream, image_size_guess, load_run_config

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
    try:
        stream = build_stream(cfg, guess, root)
    except DataError:
        stream = _names_only(root) if not need_data else None
        if stream is None:
            raise
    model = build_model(cfg, dev)
    if model.image_size != guess and not isinstance(stream, NamesOnlyStream):
        stream = build_stream(cfg, model.image_size, root)
    switches = method_switches(cfg.method.name)
    # the distillation source of lora+distill-ref is a training-time input only; inference never reads it
    reference = torch.empty(0) if switches.source == "ref" else None
    learner = build_learner(cfg, model, stream, dev, autocast_factory(dev, cfg.model.precision), reference)
    folder = run.task_dir(k)
    try:
        state = json.loads((folder / "state.json").read_text())
        if switches.train:
            load_adapter(model, folder / "adapter")
        learner.load_state_dict({"task": k, "prototypes": load_prototypes(folder / "prototypes.npz")})
    except ConfigError:
        raise
    except Exception as exc:
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise ConfigError(f"checkpoint {folder} cannot be read ({why})") from None
    model.eval()
    learner.begin_eval(k)
    return Reopened(root, cfg, k, stream, model, learner, dev, state)


def evaluate_task(reopened: Reopened, progress: bool = False) -> dict:
    """Accuracy on the test images of every class seen after the reopened task, as the trainer measures it:
    {"task": 1-based, "accuracy": per-task accuracies (percent), "seen_accuracy": percent, "correct", "total"}."""
    from .evaluate import evaluate_seen
    from .trainer import _Loaders

    r = reopened
    if isinstance(r.stream, NamesOnlyStream):
        raise DataError(
            f"the data set of {r.root} ({r.cfg.data.bench} at {r.cfg.data.data_root}) is not there: pass --data-root "
            "(or data_root=) where its test images are"
        )
    loaders = _Loaders(r.cfg, r.device)
    correct, total, skipped = evaluate_seen(
        r.learner.predict,
        loaders.test(r.stream.test_set(r.task)),
        r.stream.task_of_position(),
        r.task + 1,
        r.device,
        progress,
    )
    return {
        "task": r.task + 1,
        "accuracy": [100.0 * c / max(n, 1) for c, n in zip(correct, total, strict=True)],
        "seen_accuracy": 100.0 * sum(correct) / max(sum(total), 1),
        "correct": correct,
        "total": total,
        "skipped_images": skipped,
    }


BRANCHES = ("run", "clip", "dual")


def set_branch(reopened: Reopened, branch: str | None) -> None:
    """Which inference the learner uses: run (None: the run's own), clip (the CLIP path alone), or dual (CLIP
    fused with the prototype branch; only for runs that kept prototypes)."""
    branch = branch or "run"
    if branch not in BRANCHES:
        raise ConfigError(f"branch must be one of {', '.join(BRANCHES)}, got {branch!r}")
    learner = reopened.learner
    learner.begin_eval(reopened.task)
    if branch == "clip":
        learner._eval_protos = None
    elif branch == "dual" and (learner._eval_protos is None or learner.switches.ncm):
        if not len(learner.prototypes) or learner.cfg.beta == 0 or learner.switches.ncm:
            raise ConfigError(
                f"the run's method {reopened.cfg.method.name!r} has no dual path (no prototypes, beta = 0, or "
                "the prototype branch alone): use --branch clip or run"
            )
        fallback = None if learner.raw_space else learner._eval_text
        n = learner.n_seen(reopened.task)
        learner._eval_protos = learner.prototypes.matrix(n, fallback, device=learner.device)

"""What `--resume` may change, what defines a run, and where a run continues.

One table (RESUMABLE_OPTIONS and the keys below) is read by the CLI (which options it accepts with --resume),
the engine (which --set keys it refuses) and the error messages."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from ..config import RunConfig, config_from_dict
from ..errors import ConfigError
from .checkpoint import RunDir, check_manifest, manifest_identity

log = logging.getLogger("segpcl")

RESUMABLE_OPTIONS: dict[str, tuple[str, str]] = {
    # click parameter -> (its option, the config key it sets): what may change when a run continues
    "device": ("--device", "train.device"),
    "workers": ("--workers", "data.num_workers"),
    "data_root": ("--data-root", "data.data_root"),
    "tokenizer": ("--tokenizer", "model.tokenizer"),  # where the tokenizer files are, like the data
    "epochs": ("--epochs", "train.epochs"),
    "precision": ("--precision", "model.precision"),
    "strict": ("--strict", "data.strict"),
    "diagnose": ("--diagnose", "train.diagnose"),
    "max_tasks": ("--max-tasks", "data.max_tasks"),
    "log_kinds": ("--log", "train.log"),
}
RESUME_CONTROLS = ("resume", "from_task", "quiet", "nproc", "sets")
"""Options that steer the continuation itself (--set is checked key by key against defines_run)."""

FREE_ON_RESUME = ("data.data_root", "data.strict", "data.max_pixels", "data.num_workers", "data.max_tasks")
"""data.* keys that may change on resume (where the data lives, how it is read); every other data key
defines the split or the images."""

DEFINING_KEYS = ("model.arch", "model.pretrained", "train.seed", "method.name")
DEFINING_SECTIONS = ("data.", "lora.")


def defines_run(key: str) -> bool:
    """Whether a dotted config key is part of what a run is (method, model, split, images, LoRA, seed)."""
    if key in FREE_ON_RESUME:
        return False
    return key.startswith(DEFINING_SECTIONS) or key in DEFINING_KEYS


def resume_refusal(options: list[str]) -> str:
    """The message for CLI options that may not change when a run continues."""
    allowed = ", ".join(opt for opt, _ in RESUMABLE_OPTIONS.values())
    return (
        f"{', '.join(options)} cannot change when resuming a run (they define the run or act only at its start); "
        f"only {allowed}, --from-task and --set (not method.name, model, lora, the data split or the seed) apply "
        "to the remaining tasks"
    )


def flat_config(cfg: RunConfig) -> dict:
    out: dict = {}

    def walk(tree, prefix):
        for key, value in tree.items():
            if isinstance(value, dict) and key != "zs_eval":
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    walk(cfg.to_dict(), "")
    return out


def run_identity(cfg: RunConfig) -> dict:
    """The settings that define the run (stored in every checkpoint's manifest)."""
    return {k: v for k, v in flat_config(cfg).items() if defines_run(k)}


def config_differences(old: RunConfig, new: RunConfig, keys=None) -> list[str]:
    """`key: old -> new` for every differing key (restricted to `keys`, a predicate, when given)."""
    a, b = flat_config(old), flat_config(new)
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and (keys is None or keys(k))
    ]


def load_run_config(root: Path) -> RunConfig:
    """The config.yaml of a run directory, or a one-line ConfigError saying what is wrong with it."""
    import yaml

    path = root / "config.yaml"
    if not root.is_dir():
        raise ConfigError(f"--resume {root}: no such folder")
    if not path.is_file():
        raise ConfigError(f"{root} is not a segpcl run directory (no config.yaml); pass the folder of a run")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{path} is damaged ({first}); restore it (every checkpoint keeps the run's settings)"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is damaged (it does not hold a mapping of config sections); restore it")
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path} is damaged or from another segpcl version: {exc}") from None


def resume_hint(run: RunDir, below: int) -> str:
    j = run.last_intact_before(below)
    if j is None:
        return (
            f"no earlier checkpoint is intact; retrain from the first task with "
            f"`segpcl train --resume {run.root} --from-task 0`"
        )
    return (
        f"the last intact checkpoint is task {j + 1}; continue from it with "
        f"`segpcl train --resume {run.root} --from-task {j + 1}` (retrains the tasks after it)"
    )


def resume_point(run: RunDir, cfg: RunConfig, from_task: int | None) -> int | None:
    """The 0-based task whose verified checkpoint the run continues after (None: from the start).
    Never guesses: a damaged, missing or foreign checkpoint stops with what was found and how to go on."""
    folders = run.task_folders()
    if from_task is not None:
        if from_task == 0:
            return None
        k = from_task - 1
        if k not in folders:
            have = ", ".join(str(t + 1) for t in folders) or "none"
            raise ConfigError(
                f"--from-task {from_task}: {run.task_dir(k)} does not exist (checkpoints of tasks: {have})"
            )
        problem = check_manifest(run.task_dir(k))
        if problem:
            raise ConfigError(
                f"--from-task {from_task}: checkpoint {run.task_dir(k)} is damaged: {problem}; {resume_hint(run, k)}"
            )
    else:
        name = run.latest_name()
        if name is None:
            if not folders:
                claimed = _metrics_tasks_completed(run)
                if claimed:
                    raise ConfigError(
                        f"{run.latest_path} is missing and there are no task checkpoints, but metrics.json says "
                        f"{claimed} tasks were completed; the checkpoints are lost: retrain with "
                        f"`segpcl train --resume {run.root} --from-task 0`"
                    )
                return None
            k = folders[-1]
            problem = check_manifest(run.task_dir(k))
            if problem:
                raise ConfigError(
                    f"{run.latest_path} is missing; found checkpoints of tasks "
                    f"{', '.join(str(t + 1) for t in folders)}, and the highest, {run.task_dir(k).name}, is damaged: "
                    f"{problem}; {resume_hint(run, k)}"
                )
            log.warning(
                "%s is missing; continuing after task %d, the highest verified checkpoint", run.latest_path, k + 1
            )
        else:
            k = int(name.split("_")[1])
            problem = check_manifest(run.task_dir(k))
            if problem:
                raise ConfigError(
                    f"checkpoint {run.task_dir(k)} (the last completed task, named by LATEST) is damaged: {problem}; "
                    f"{resume_hint(run, k)}"
                )
    stored = manifest_identity(run.task_dir(k))
    mine = run_identity(cfg)
    differ = [f"{key}: {stored[key]!r} vs {mine.get(key)!r}" for key in sorted(stored) if stored[key] != mine.get(key)]
    if differ:
        raise ConfigError(
            f"checkpoint {run.task_dir(k)} was written by a run with other settings than {run.config_path} "
            f"({'; '.join(differ[:4])}); the run directory mixes two runs: restore config.yaml or start a new run"
        )
    return k


def _metrics_tasks_completed(run: RunDir) -> int:
    try:
        return int(json.loads(run.metrics_path.read_text()).get("tasks_completed") or 0)
    except (OSError, ValueError, AttributeError, TypeError):
        return 0

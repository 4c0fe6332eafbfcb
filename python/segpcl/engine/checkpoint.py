"""The run directory and per-task checkpoints, written atomically (temp folder + rename).

checkpoints/task_XX/ holds the LoRA adapter (peft format), the prototypes (.npz), the learner state and the
metrics so far (JSON); checkpoints/LATEST names the last completed task. Nothing is pickled but tensors.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from ..errors import ConfigError


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, data) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, default=_jsonable))


def _jsonable(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj)}")


class RunDir:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"

    def create(self) -> RunDir:
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def config_path(self) -> Path:
        return self.root / "config.yaml"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    @property
    def log_path(self) -> Path:
        return self.root / "log.txt"

    def write_plot(self, svg: str, name: str = "accuracy.svg") -> None:
        (self.root / "plots").mkdir(exist_ok=True)
        atomic_write_text(self.root / "plots" / name, svg)

    def task_dir(self, t: int) -> Path:
        return self.checkpoints / f"task_{t:02d}"

    def save_task(self, t: int, write_contents) -> Path:
        """Call write_contents(tmp_folder) then move the folder into place and point LATEST at it."""
        final = self.task_dir(t)
        tmp = self.checkpoints / f".task_{t:02d}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_contents(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        atomic_write_text(self.checkpoints / "LATEST", final.name)
        return final

    def latest_task(self) -> int | None:
        latest = self.checkpoints / "LATEST"
        if not latest.is_file():
            return None
        name = latest.read_text().strip()
        if not (self.checkpoints / name).is_dir():
            raise ConfigError(f"{latest} names {name}, which is missing; the run directory is damaged")
        return int(name.split("_")[1])


def save_prototypes(path: Path, state: dict) -> None:
    np.savez(path, **{k: np.asarray(v) for k, v in state.items()})


def load_prototypes(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}

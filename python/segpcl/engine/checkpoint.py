"""The run directory and per-task checkpoints, written atomically (temp folder + rename).

checkpoints/task_XX/ holds the LoRA adapter (peft format), the prototypes (.npz), the learner state and the
metrics so far (JSON), and MANIFEST.json (size and sha256 of every other file, and the settings that define
the run), written last; checkpoints/LATEST names the last completed task. Nothing is pickled but tensors.

A run directory is locked (fcntl.flock on `<run>/.lock`, which holds the owner's pid) for a run's whole life;
the OS drops the lock when the process ends in any way, so a dead owner's lock is simply taken over.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
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


MANIFEST = "MANIFEST.json"
LOCK = ".lock"
_TASK_DIR = re.compile(r"^task_(\d+)$")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
        os.fsync(fh.fileno())
    return digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_manifest(folder: Path, identity: dict | None = None) -> dict:
    """Record size and sha256 of every file under `folder` (and the run's identity) in MANIFEST.json."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[path.relative_to(folder).as_posix()] = {"size": path.stat().st_size, "sha256": _sha256(path)}
    manifest = {"files": files, "identity": identity or {}}
    write_json(folder / MANIFEST, manifest)
    return manifest


def check_manifest(folder: Path, required: tuple[str, ...] = ("state.json", "prototypes.npz")) -> str | None:
    """None if every file of the checkpoint folder matches its manifest, else what is wrong (one phrase)."""
    path = folder / MANIFEST
    if not folder.is_dir():
        return "the folder is missing"
    if not path.is_file():
        return f"it has no {MANIFEST} (not written completely, or by an older segpcl)"
    try:
        files = json.loads(path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {MANIFEST} is unreadable"
    for name in required:
        if name not in files:
            return f"its manifest does not list {name}"
    for name, want in files.items():
        file = folder / name
        if not file.is_file():
            return f"{name} is missing"
        size = file.stat().st_size
        if size != want.get("size"):
            return f"{name} has {size} bytes, {want.get('size')} were written"
        if _sha256(file) != want.get("sha256"):
            return f"{name} does not match its sha256 (changed after it was written)"
    return None


def manifest_identity(folder: Path) -> dict:
    try:
        return json.loads((folder / MANIFEST).read_text()).get("identity", {})
    except (OSError, ValueError, AttributeError):
        return {}


class RunLocked(ConfigError):
    """Another live process holds the run directory's lock."""


class RunDir:
    def __init__(self, root: Path):
        self.root = Path(root)
        self.checkpoints = self.root / "checkpoints"
        self._lock_fh = None

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK

    def lock_holder(self) -> int | None:
        """The pid of a live process holding this run's lock, or None (free, or a dead owner's stale lock)."""
        if not self.lock_path.is_file():
            return None
        try:
            with open(self.lock_path, "rb") as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return _pid_in(self.lock_path) or -1
                fcntl.flock(fh, fcntl.LOCK_UN)
        except OSError:
            return None
        return None

    def acquire(self) -> None:
        """Take the run's lock for this process (until release() or exit); refuses when a live process holds it."""
        fh = open(self.lock_path, "a+")  # noqa: SIM115 - held for the run's life
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            pid = _pid_in(self.lock_path)
            who = f"process {pid}" if pid else "another process"
            raise RunLocked(
                f"{self.root} is in use by {who} (a segpcl run holds {self.lock_path}); wait for it to finish "
                "or stop it, or use another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._lock_fh = fh

    def release(self) -> None:
        if self._lock_fh is not None:
            fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
            self._lock_fh.close()
            self._lock_fh = None

    @contextlib.contextmanager
    def locked(self) -> Iterator[RunDir]:
        self.acquire()
        try:
            yield self
        finally:
            self.release()

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

    @property
    def latest_path(self) -> Path:
        return self.checkpoints / "LATEST"

    def save_task(self, t: int, write_contents, identity: dict | None = None) -> Path:
        """Call write_contents(tmp_folder), write its manifest, then move the folder into place and point
        LATEST at it. A kill at any point leaves either the previous state or the new one."""
        final = self.task_dir(t)
        tmp = self.checkpoints / f".task_{t:02d}.tmp{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_contents(tmp)
        write_manifest(tmp, identity)
        _fsync_dir(tmp)
        if final.exists():
            old = self.checkpoints / f".task_{t:02d}.old{os.getpid()}"
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(self.checkpoints)
        atomic_write_text(self.latest_path, final.name)
        return final

    def task_folders(self) -> list[int]:
        """Indices (0-based) of the task_XX folders present, ascending."""
        if not self.checkpoints.is_dir():
            return []
        found = (_TASK_DIR.match(p.name) for p in self.checkpoints.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def latest_name(self) -> str | None:
        """What LATEST says (None if it is missing); a name that is not a task folder is an error."""
        if not self.latest_path.is_file():
            return None
        try:
            name = self.latest_path.read_text().strip()
        except (OSError, UnicodeDecodeError):
            name = ""
        if not _TASK_DIR.match(name):
            raise ConfigError(
                f"{self.latest_path} is damaged (it should name a task folder like task_00); remove it and "
                f"run `segpcl train --resume {self.root}` again to continue from the checkpoints themselves"
            )
        return name

    def latest_task(self) -> int | None:
        """The last completed task (0-based) as LATEST names it, None if none; not verified."""
        name = self.latest_name()
        return None if name is None else int(name.split("_")[1])

    def last_intact_before(self, t: int) -> int | None:
        """The highest task below t whose checkpoint verifies, or None."""
        for k in reversed([k for k in self.task_folders() if k < t]):
            if check_manifest(self.task_dir(k)) is None:
                return k
        return None

    def remove_stale_temporaries(self) -> None:
        """Half-written checkpoint folders of a killed process (only call while holding the lock)."""
        if self.checkpoints.is_dir():
            for p in self.checkpoints.iterdir():
                if p.name.startswith(".task_") and (".tmp" in p.name or ".old" in p.name):
                    shutil.rmtree(p, ignore_errors=True)


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError, UnicodeDecodeError):
        return None


def save_prototypes(path: Path, state: dict) -> None:
    np.savez(path, **{k: np.asarray(v) for k, v in state.items()})


def load_prototypes(path: Path) -> dict:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


METHOD_TENSORS = "method.safetensors"
"""A method's own tensors (state_dict()["tensors"]), where it keeps any besides the prototypes."""


def write_task_contents(folder: Path, model, method, state: dict) -> None:
    """What a task checkpoint holds: the LoRA adapter, the method's state and the run's state (metrics so far)."""
    from ..models.lora import save_adapter

    save_adapter(model, folder / "adapter")
    method_state = method.state_dict()
    save_prototypes(folder / "prototypes.npz", method_state["prototypes"])
    if method_state.get("tensors"):
        from safetensors.torch import save_file

        save_file(
            {k: v.detach().cpu().contiguous() for k, v in method_state["tensors"].items()}, folder / METHOD_TENSORS
        )
    write_json(folder / "state.json", state)


def restore_task(folder: Path, task: int, model, method, hint: str = "") -> dict:
    """Load a verified task checkpoint into `model` (its adapter, where the method trains LoRA) and `method`;
    returns the run state it holds (state.json). A file that cannot be read is a one-line ConfigError."""
    from ..models.lora import load_adapter

    try:
        state = json.loads((folder / "state.json").read_text())
        if method.trains:
            load_adapter(model, folder / "adapter")
        method_state = {"task": task, "prototypes": load_prototypes(folder / "prototypes.npz")}
        if (folder / METHOD_TENSORS).is_file():
            from safetensors.torch import load_file

            method_state["tensors"] = load_file(folder / METHOD_TENSORS)
        method.load_state_dict(method_state)
    except ConfigError:
        raise
    except Exception as exc:
        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        raise ConfigError(f"checkpoint {folder} cannot be read ({why}){'; ' + hint if hint else ''}") from None
    return state

"""The run directory and per-task checkpoints, written atomically (temp folder + rename).

checkpoints/task_XX/ holds the LoRA adapter (peft format), the prototypes (.npz), the learner state and the
metrics so far (JSON), and MANIFEST.json (size and sha256 of every other file, and the settings that define
the run), written last; checkpoints/LATEST names the last completed task. Nothing is pickled but tensors.

A run directory is locked (fcntl.flock on `<run>/.lock`, which holds the owner's pid) for a run's whole life;
the OS drops the lock when the process ends in any way, so a dead owner's lock is simply taken over. Nothing is
written through a symbolic link (engine/nofollow.py).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..errors import ConfigError, TrainingError
from .nofollow import atomic_write_text, first_link, link_refused, make_dir, open_no_link, refuse_link


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


def _record(path: Path) -> dict:
    return {"size": path.stat().st_size, "sha256": _sha256(path)}


def write_manifest(folder: Path, identity: dict | None = None, run_files: dict | None = None) -> dict:
    """Record size and sha256 of every file under `folder` (and the run's identity, and `run_files`: records of
    the run's own files beside checkpoints/) in MANIFEST.json."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST):
        files[path.relative_to(folder).as_posix()] = _record(path)
    manifest = {"files": files, "identity": identity or {}}
    if run_files:
        manifest["run_files"] = run_files
    write_json(folder / MANIFEST, manifest)
    return manifest


RUN_FILES = ("classes.json",)
"""Files beside checkpoints/ that opening a run reads (engine/classes.py); each checkpoint records them."""


def run_file_record(folder: Path, name: str) -> dict | None:
    """The size and sha256 that checkpoint `folder` recorded of the run's file `name`; None when it recorded
    none (a checkpoint written before segpcl recorded run files)."""
    try:
        record = json.loads((folder / MANIFEST).read_text()).get("run_files", {}).get(name)
    except (OSError, ValueError, AttributeError):
        return None
    return record if isinstance(record, dict) else None


def matches_record(path: Path, record: dict) -> bool:
    return path.stat().st_size == record.get("size") and _sha256(path) == record.get("sha256")


def _outside(folder: Path, name) -> bool:
    """Whether a manifest entry names a path outside its checkpoint folder (absolute, `..`, or through a link)."""
    if not isinstance(name, str) or not name or Path(name).is_absolute() or ".." in Path(name).parts:
        return True
    return not (folder / name).resolve().is_relative_to(folder.resolve())


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
    if not isinstance(files, dict) or not all(isinstance(w, dict) for w in files.values()):
        return f"its {MANIFEST} is unreadable"
    for name in required:
        if name not in files:
            return f"its manifest does not list {name}"
    for name, want in files.items():
        if _outside(folder, name):
            return f"its manifest names {name!r}, a path outside the checkpoint folder"
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
        if self.lock_path.is_symlink() or not self.lock_path.is_file():
            return None
        try:
            with open(self.lock_path, "rb", opener=lambda p, f: os.open(p, f | os.O_NOFOLLOW)) as fh:
                try:
                    fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
                except BlockingIOError:
                    return _pid_in(self.lock_path) or -1
                fcntl.flock(fh, fcntl.LOCK_UN)
        except OSError:
            return None
        return None

    def acquire(self) -> None:
        """Take the run's lock for this process (until release() or exit); refuses when a live process holds it,
        and a lock file that is a link (never truncated through)."""
        fh = os.fdopen(open_no_link(self.lock_path, os.O_RDWR | os.O_CREAT), "r+")
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
        make_dir(self.checkpoints)
        return self

    WRITTEN_FOLDERS = ("checkpoints", "plots", "tensorboard")
    """The folders of a run that segpcl writes into (with every file directly in the run folder)."""

    def refuse_links(self) -> None:
        """A ConfigError naming the first symbolic link where this run writes; called before anything is written."""
        link = first_link(self.root, self.WRITTEN_FOLDERS)
        if link is not None:
            raise link_refused(link)

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
        make_dir(self.root / "plots")
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
        refuse_link(self.checkpoints)
        refuse_link(final)
        tmp = self.checkpoints / f".task_{t:02d}.tmp{os.getpid()}"
        _remove(tmp)
        tmp.mkdir()  # a new folder of ours: what is written inside cannot be a planted link
        try:
            write_contents(tmp)
            run_files = {n: _record(self.root / n) for n in RUN_FILES if (self.root / n).is_file()}
            write_manifest(tmp, identity, run_files)
            _fsync_dir(tmp)
        except BaseException:
            _remove(tmp)  # a half-written checkpoint (a full disk: give its space back)
            raise
        if final.exists():
            old = self.checkpoints / f".task_{t:02d}.old{os.getpid()}"
            _remove(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(self.checkpoints)
        atomic_write_text(self.latest_path, final.name)
        return final

    def disk_full_error(self, exc: BaseException) -> TrainingError | None:
        """The one-line error for a write that failed because the disk is full (None for any other failure)."""
        if isinstance(exc, OSError):
            full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
        else:  # safetensors reports the OS error as text
            full = type(exc).__name__ == "SafetensorError" and ("No space left" in str(exc) or "quota" in str(exc))
        if not full:
            return None
        saved = self.task_folders()
        kept = (
            f"tasks 1 to {saved[-1] + 1} are saved in {self.checkpoints}; free space, then continue with "
            f"`segpcl train --resume {self.root}`"
            if saved
            else "no task was saved yet: free space and run the command again"
        )
        return TrainingError(f"no space left on the disk (or over quota) while writing {self.root}; {kept}")

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
                    _remove(p)


def _remove(path: Path) -> None:
    """A file, a link (not what it points to) or a folder tree; nothing if absent."""
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


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
        if method.has_lora:
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

"""Claiming a run directory for a new run: refuse what is not ours, create it, and leave nothing behind when the
start fails before the first checkpoint is written; the run's log.txt (never appended through a link)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from ..errors import ConfigError
from .checkpoint import RunDir
from .nofollow import append_text

log = logging.getLogger("segpcl")


def is_run_dir(root: Path) -> bool:
    """A segpcl run directory: config.yaml next to checkpoints/ (a user's own config.yaml is not one)."""
    return (root / "config.yaml").is_file() and (root / "checkpoints").is_dir()


def claim_out_dir(run: RunDir) -> Path | None:
    """Refuse a folder that is a file, busy, a finished run or someone else's non-empty folder; create it.
    Returns the topmost folder this call created (removed again if the start fails), or None."""
    root = run.root
    if root.exists() or root.is_symlink():
        if not root.is_dir():
            raise ConfigError(f"--out {root} exists and is not a folder; choose a new or empty folder")
        try:
            entries = [p.name for p in root.iterdir()]
        except OSError as exc:
            raise ConfigError(f"cannot read --out {root}: {exc.strerror or exc}") from None
        if entries:
            pid = run.lock_holder()
            if pid is not None:
                who = f"process {pid}" if pid > 0 else "another process"
                raise ConfigError(f"{root} is in use by {who} (a segpcl run holds {run.lock_path}); use another --out")
            if is_run_dir(root):
                raise ConfigError(f"{root} already holds a run; use --resume {root} or another --out")
            raise ConfigError(
                f"--out {root} is a folder that is not empty and not a segpcl run directory "
                f"({len(entries)} entries, e.g. {sorted(entries)[0]}); choose a new or empty folder"
            )
        return None
    top = root
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    try:
        root.mkdir(parents=True)
    except FileExistsError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot create the run directory {root}: {exc.strerror or exc}") from None
    return top


def remove_failed_start(run: RunDir, created: Path | None) -> None:
    """A start that failed before its first checkpoint leaves nothing behind (we held the lock, no task finished)."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
    elif run.root.is_dir():
        for p in run.root.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)


def remove_new_folders(root: Path, created: Path) -> None:
    """The folders claim_out_dir created, from `root` up to `created`, where they are still empty."""
    folder = root
    while True:
        try:
            folder.rmdir()
        except OSError:
            break
        if folder == created:
            break
        folder = folder.parent


class run_log:
    """log.txt of the run for the duration of a with block."""

    def __init__(self, run: RunDir):
        self.run = run

    def __enter__(self):
        self.handler = logging.StreamHandler(append_text(self.run.log_path))
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(self.handler)
        log.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        log.removeHandler(self.handler)
        self.handler.close()
        self.handler.stream.close()  # a StreamHandler leaves its stream open

"""Writing into a run directory without following a symbolic link: a run folder is something people copy and
share, and a link planted in it (`.lock -> ~/.bashrc`) must not make segpcl truncate or append to its target.

Files written whole go through a temporary file created with O_EXCL | O_NOFOLLOW, then renamed over the name;
files written in place (the lock, log.txt) are opened with O_NOFOLLOW and must be plain files with one name.
A link where segpcl writes is refused with one ConfigError naming it; nothing is written through it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from pathlib import Path

from ..errors import ConfigError


def link_refused(path: Path) -> ConfigError:
    try:
        target = f" (it points to {os.readlink(path)})"
    except OSError:
        target = ""
    return ConfigError(
        f"{path} is a symbolic link{target}; segpcl never writes through a link. Remove the link (`rm {path}`) "
        "and run the command again"
    )


def refuse_link(path: Path) -> None:
    if os.path.islink(path):
        raise link_refused(Path(path))


def open_no_link(path: Path, flags: int) -> int:
    """os.open(path) that never follows a link at `path` and only opens a plain file with a single name (a hard
    link would let an in-place write reach another file); the file descriptor."""
    path = Path(path)
    with contextlib.suppress(FileNotFoundError):
        _check_plain(path, os.lstat(path))  # before opening: a FIFO would block the open
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise link_refused(path) from None
        raise
    try:
        _check_plain(path, os.fstat(fd))
    except ConfigError:
        os.close(fd)
        raise
    return fd


def _check_plain(path: Path, st: os.stat_result) -> None:
    if stat.S_ISLNK(st.st_mode):
        raise link_refused(path)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        what = "is not a plain file" if not stat.S_ISREG(st.st_mode) else "has other names (a hard link)"
        raise ConfigError(f"{path} {what}; segpcl writes it in place: remove it and run the command again")


def append_text(path: Path):
    """`path` opened for appending text (created if absent), never through a link."""
    return os.fdopen(open_no_link(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "a", encoding="utf-8")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `path` whole: a new temporary file beside it (O_EXCL | O_NOFOLLOW: never an existing file or a link),
    then a rename over the name. A link at `path` itself is refused."""
    path = Path(path)
    refuse_link(path)
    for _ in range(8):
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.{secrets.token_hex(4)}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
            break
        except FileExistsError:
            continue
    else:
        raise ConfigError(f"cannot create a temporary file beside {path}: eight random names were all taken")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def make_dir(path: Path) -> Path:
    """`path` as a folder of its own (created if absent); a link there is refused."""
    path = Path(path)
    refuse_link(path)
    path.mkdir(parents=True, exist_ok=True)
    refuse_link(path)  # created by someone else between the check and mkdir
    return path


def first_link(root: Path, subfolders: tuple[str, ...]) -> Path | None:
    """The first symbolic link among `root`'s entries and anywhere under its `subfolders` (those segpcl
    writes), or None. Nothing is followed."""
    root = Path(root)
    try:
        entries = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError:
        return None
    for entry in entries:
        if entry.is_symlink():
            return Path(entry.path)
    for name in subfolders:
        for dirpath, dirnames, filenames in os.walk(root / name):  # followlinks=False
            for child in sorted(dirnames + filenames):
                if os.path.islink(os.path.join(dirpath, child)):
                    return Path(dirpath) / child
    return None

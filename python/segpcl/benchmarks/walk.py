"""Walking a data folder once per real folder and listing each real file once.

Links to folders are followed (data sets are often assembled from links), but a folder is walked only the first
time it is reached: a link back to a folder on its own real path (a loop) would otherwise be walked without end
(`os.walk(followlinks=True)` stops only at the OS's path limit: one class counted 41 times), and a second link
to a folder already walked would count its images twice. A file reached under a second name (a link, a hard
link) is listed once. What was left out is reported in one DataWarning per walk (LinkWarning, which
`segpcl data check` counts).

The order is os.walk's as segpcl has always used it (files of a folder sorted, then its sub-folders sorted,
hidden folders skipped), so the splits derived from it do not change.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ._files import DataWarning, is_image_file


class LinkWarning(DataWarning):
    """A folder walk met a link loop or reached a folder or file a second time through a link."""

    def __init__(self, message: str, loops: list[str], repeats: list[str]):
        super().__init__(message)
        self.loops, self.repeats = loops, repeats


@dataclass
class Walk:
    files: list[str] = field(default_factory=list)
    loops: list[str] = field(default_factory=list)
    """Links that lead back to a folder on their own path (not followed)."""
    repeats: list[str] = field(default_factory=list)
    """Folders and files reached a second time under another name (left out)."""


def walk_images(folder: str | os.PathLike) -> Walk:
    """The image files under `folder` (see the module docstring), with the loops and repeats met."""
    walk = Walk()
    folders_done: set[tuple[int, int]] = set()
    files_done: set[tuple[int, int]] = set()

    def visit(path: str, on_path: frozenset) -> None:
        try:
            st = os.stat(path)
        except OSError:
            return  # os.walk skips what it cannot read
        key = (st.st_dev, st.st_ino)
        if key in on_path:
            walk.loops.append(path)
            return
        if key in folders_done:
            walk.repeats.append(path)
            return
        folders_done.add(key)
        try:
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError:
            return
        subfolders = []
        for entry in entries:
            if _is_dir(entry):
                subfolders.append(entry)
            elif is_image_file(entry.name):
                file_key = _file_key(entry, st.st_dev)
                if file_key is not None and file_key in files_done:
                    walk.repeats.append(entry.path)
                    continue
                files_done.add(file_key)
                walk.files.append(entry.path)
        for entry in subfolders:
            if not entry.name.startswith("."):
                visit(entry.path, on_path | {key})

    visit(os.fspath(folder), _real_ancestors(folder))
    return walk


def _real_ancestors(folder: str | os.PathLike) -> frozenset:
    """(device, inode) of every folder above `folder`'s real path: a link up to one of them is a loop too (it
    would walk `folder` again, with the other classes beside it)."""
    keys = set()
    real = Path(os.path.realpath(folder))
    for parent in real.parents:
        try:
            st = os.stat(parent)
        except OSError:
            continue
        keys.add((st.st_dev, st.st_ino))
    return frozenset(keys)


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()  # follows links, as os.walk(followlinks=True) does
    except OSError:
        return False


def _file_key(entry: os.DirEntry, folder_dev: int) -> tuple[int, int] | None:
    """(device, inode) of the file an entry names: free from the directory listing unless it is a link."""
    try:
        if entry.is_symlink():
            st = entry.stat()
            return (st.st_dev, st.st_ino)
        return (folder_dev, entry.inode())
    except OSError:
        return None  # a broken link: listed, and reported unreadable when decoded


def warn_links(folder: str | os.PathLike, walk: Walk, stacklevel: int = 3) -> None:
    """One LinkWarning for a walk that left something out."""
    if not walk.loops and not walk.repeats:
        return
    parts = []
    if walk.loops:
        parts.append(f"{len(walk.loops)} folder link(s) loop back to a folder above them (e.g. {walk.loops[0]})")
    if walk.repeats:
        again = f"{len(walk.repeats)} folder(s) or file(s) are reached again through a link"
        parts.append(f"{again} (e.g. {walk.repeats[0]})")
    warnings.warn(
        LinkWarning(
            f"{Path(folder)}: {'; '.join(parts)}; each real folder and file is read once",
            walk.loops,
            walk.repeats,
        ),
        stacklevel=stacklevel,
    )

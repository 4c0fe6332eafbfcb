"""`--bench folder`: any image folder as a class-incremental stream.

Layouts of the folder given as --data-root:
- pre-split: `train/<class>/` and `test/<class>/` (or `val/<class>/`), read as is;
- one folder of class folders `<class>/<images>`: `data.test_fraction` (default 0.2) of each class's images
  are held out for test (at least one for a class of two or more), drawn per class from the fixed data-split
  seed, so every run seed sees the same split.
Classes are the sorted class folders (a class folder without a single image is left out, with a warning). Names
come from the folder names, cleaned (`001.red_fox`, `red-fox` -> `red fox`), or from --class-names FILE (lines
`<folder name> <name>`, `<id> <name>`, or one name per line); bare-id folders (`0/`, `17/`) need that file.
The tasks: --initial/--increment, else ten tasks as even as the number of classes allows (base.stream_task_sizes).
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._files import DataWarning, FileSplit, describe_folder, is_image_file, make_file_benchmark
from .base import DATA_DEFINED, Benchmark, DataConfig, holdout_mask, register_benchmark
from .imagefolder import class_folders, clean_class_name, images_in, is_split_imagefolder, read_split_imagefolder
from .templates import templates_for

PRESPLIT = "pre-split ImageFolder {train,test}/<class>/"
EXPECTED = "DIR/<class>/<images> (split into train and test by data.test_fraction) or DIR/{train,test}/<class>/<images>"


def folder_class_name(folder: str) -> str:
    """`001.red_fox`, `red-fox`, `Red_Fox` -> `red fox`, `red fox`, `Red Fox`: a numeric prefix goes, underscores
    and dashes become spaces."""
    return re.sub(r"\s+", " ", clean_class_name(folder).replace("-", " ")).strip() or folder


def _has_direct_images(folder: str, limit: int = 256) -> bool:
    try:
        with os.scandir(folder) as entries:
            for i, e in enumerate(entries):
                if i >= limit:
                    return False
                if is_image_file(e.name) and e.is_file():
                    return True
    except OSError:
        pass
    return False


def is_image_folder(root: Path | str | None) -> bool:
    """Whether `root` is a pre-split ImageFolder or holds two class folders with images in them (for `segpcl
    benches`; the builder reads nested images too). Never raises."""
    if root is None:
        return False
    root = Path(root).expanduser()
    if not root.is_dir():
        return False
    if is_split_imagefolder(root):
        return True
    try:
        with os.scandir(root) as entries:
            dirs = [e.path for e in entries if e.is_dir() and not e.name.startswith(".")]
    except OSError:
        return False
    return sum(_has_direct_images(d) for d in dirs[:64]) >= 2


def split_by_fraction(files: dict[str, list[str]], fraction: float, seed: int) -> FileSplit:
    """Class folder name -> its image files (in class-id order) as a train/test split: `fraction` of each class's
    files go to test (base.holdout_mask: a per-class draw of `seed`, at least one, never all)."""
    paths = [p for ps in files.values() for p in ps]
    labels = np.repeat(np.arange(len(files), dtype=np.int64), [len(ps) for ps in files.values()])
    return FileSplit.from_mask(paths, labels, ~holdout_mask(labels, fraction, seed))


def _root(cfg: DataConfig) -> Path:
    if cfg.data_root is None:
        raise DataError(f"benchmark folder reads an image folder: pass --data-root DIR, where DIR holds {EXPECTED}")
    root = Path(cfg.data_root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"image folder {root} does not exist (or is not a folder): pass --data-root DIR holding {EXPECTED}"
        )
    return root


def _read_unsplit(root: Path, cfg: DataConfig) -> tuple[list[str], FileSplit, str]:
    found = class_folders(root)
    if not found:
        raise DataError(f"folder: {root} holds no class folders; {describe_folder(root)}. Expected {EXPECTED}")
    files = {c: images_in(root / c) for c in found}
    empty = [c for c in found if not files[c]]
    if empty:
        warnings.warn(
            f"folder: {len(empty)} class folders under {root} hold no image files and are left out: "
            f"{', '.join(empty[:8])}{' ...' if len(empty) > 8 else ''}",
            DataWarning,
            stacklevel=3,
        )
    files = {c: paths for c, paths in files.items() if paths}
    if not files:
        raise DataError(f"folder: none of the class folders under {root} holds an image file; expected {EXPECTED}")
    layout = f"class folders, {round(100 * (1 - cfg.test_fraction))}/{round(100 * cfg.test_fraction)} split per class"
    return list(files), split_by_fraction(files, cfg.test_fraction, cfg.seed), f"{layout} (seed {cfg.seed})"


@register_benchmark(
    "folder",
    n_classes=DATA_DEFINED,
    initial=DATA_DEFINED,
    increment=DATA_DEFINED,
    description="any image folder: <class>/<images> (split by data.test_fraction) or {train,test}/<class>/",
    is_present=is_image_folder,
)
def build_folder(cfg: DataConfig) -> Benchmark:
    root = _root(cfg)
    if is_split_imagefolder(root):
        s = read_split_imagefolder(root)
        classes, layout = s.classes, PRESPLIT
        split = FileSplit(s.train_paths, s.train_labels, s.test_paths, s.test_labels)
    else:
        classes, split, layout = _read_unsplit(root, cfg)
    if len(classes) < 2:
        raise DataError(
            f"folder: {root} holds one class ({classes[0]!r}); a class-incremental stream needs at least two "
            f"class folders (if {root / classes[0]} holds the class folders, pass it as --data-root)"
        )
    names = [folder_class_name(c) for c in classes]
    bare = [c for c, n in zip(classes, names, strict=True) if n.isdigit()]
    if bare and cfg.class_names_file is None:
        raise DataError(
            f"folder: {len(bare)} of the {len(classes)} class folders under {root} are bare ids (e.g. {bare[0]!r}), "
            f"which would prompt CLIP with 'a photo of a {bare[0]}.'; pass --class-names FILE with one "
            f"`<folder name> <class name>` line per class folder"
        )
    return make_file_benchmark(
        "folder",
        cfg,
        split,
        class_names=names,
        class_keys=classes,
        templates=templates_for("folder"),
        expected_classes=len(classes),
        notes={"layout": layout, "root": str(root), "names_source": f"class folder names under {root}"},
    )

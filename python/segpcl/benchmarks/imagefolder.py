"""ImageFolder data: `<root>/<class>/*.jpg` for the zero-shot retention sets (`--zs-eval NAME=PATH`) and
the pre-split `<root>/{train,test}/<class>/` layout several benchmarks accept.

Classes are the sorted class-folder names (as torchvision's ImageFolder orders them); files are found
recursively inside each class folder, by image extension. Class names are cleaned from folder names:
a numeric prefix such as `001.` goes, underscores become spaces.
"""

from __future__ import annotations

import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._files import MAX_PIXELS, DataWarning, ImageFileDataset, child_ci, describe_folder
from .walk import walk_images, warn_links

TEST_FOLDER_NAMES = ("test", "val")
"""Accepted names of the held-out split of a pre-split folder, in order of preference."""

_PREFIX = re.compile(r"^\d+[._\-\s]+(?=\D)")


def clean_class_name(folder_name: str) -> str:
    """`001.Black_footed_Albatross` -> `Black footed Albatross`; `aquarium_fish` -> `aquarium fish`."""
    s = _PREFIX.sub("", folder_name)
    s = re.sub(r"\s+", " ", s.replace("_", " ")).strip()
    return s or folder_name


def class_folders(folder: Path) -> list[str]:
    """Sorted names of the visible sub-folders of `folder`."""
    try:
        with os.scandir(folder) as entries:
            return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))
    except OSError as err:
        raise DataError(f"cannot list folder {folder}: {err}") from err


def images_in(folder: Path) -> list[str]:
    """Image files under `folder` (recursively, each real folder and file once: walk.py), sorted, as full
    paths; a link loop or a repeat is reported in one LinkWarning."""
    walk = walk_images(folder)
    warn_links(folder, walk)
    return walk.files


def scan_imagefolder(folder: Path, classes: list[str] | None = None) -> tuple[list[str], list[str], np.ndarray]:
    """(class folder names, image paths, labels) of `folder/<class>/...`; with `classes`, labels index
    into that list (a class folder not in it is an error)."""
    found = class_folders(folder)
    if classes is None:
        classes = found
    index = {c: i for i, c in enumerate(classes)}
    extra = [c for c in found if c not in index]
    if extra:
        raise DataError(
            f"{folder} has class folders that the training split lacks: {', '.join(extra[:8])}"
            f"{' ...' if len(extra) > 8 else ''}; train and test must hold the same classes"
        )
    paths: list[str] = []
    labels: list[int] = []
    for c in found:
        files = images_in(folder / c)
        paths.extend(files)
        labels.extend([index[c]] * len(files))
    return classes, paths, np.asarray(labels, dtype=np.int64)


def test_folder(root: Path) -> Path | None:
    for name in TEST_FOLDER_NAMES:
        p = child_ci(root, name)
        if p is not None and p.is_dir():
            return p
    return None


def is_split_imagefolder(root: Path) -> bool:
    """True if root holds train/ and test/ (or val/) with class folders in train/. Never raises."""
    try:
        train = child_ci(root, "train")
        if train is None or not train.is_dir() or test_folder(root) is None:
            return False
        with os.scandir(train) as entries:
            return any(e.is_dir() and not e.name.startswith(".") for e in entries)
    except OSError:
        return False


@dataclass
class SplitImageFolder:
    classes: list[str]
    """Class folder names, sorted (class id = position)."""
    train_paths: list[str]
    train_labels: np.ndarray
    test_paths: list[str]
    test_labels: np.ndarray
    train_dir: Path
    test_dir: Path


def read_split_imagefolder(root: Path) -> SplitImageFolder:
    """Read `root/{train,test}/<class>/`; test/ may be named val/. Classes come from train/."""
    train_dir = child_ci(root, "train")
    test_dir = test_folder(root)
    if train_dir is None or test_dir is None or not train_dir.is_dir():
        raise DataError(
            f"expected a pre-split ImageFolder {root}/train/<class>/ and {root}/test/<class>/; {describe_folder(root)}"
        )
    classes, train_paths, train_labels = scan_imagefolder(train_dir)
    if not classes:
        raise DataError(f"{train_dir} holds no class folders; expected {train_dir}/<class>/<image files>")
    _, test_paths, test_labels = scan_imagefolder(test_dir, classes)
    for split, labels, where in (("train", train_labels, train_dir), ("test", test_labels, test_dir)):
        empty = sorted(set(range(len(classes))) - set(labels.tolist()))
        if empty:
            shown = ", ".join(classes[i] for i in empty[:8]) + (" ..." if len(empty) > 8 else "")
            warnings.warn(
                f"{len(empty)} classes have no {split} images under {where}: {shown}",
                DataWarning,
                stacklevel=2,
            )
    return SplitImageFolder(classes, train_paths, train_labels, test_paths, test_labels, train_dir, test_dir)


def load_imagefolder(
    path: str | Path, image_size: int, strict: bool = False, max_pixels: int | None = MAX_PIXELS
) -> tuple[ImageFileDataset, list[str]]:
    """A zero-shot evaluation set from `path/<class>/*.jpg` (or `path/test/<class>/`, `path/val/<class>/`
    when the folder is pre-split): the dataset (labels = sorted class-folder index, `.targets`) and the
    class names cleaned from folder names."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"zero-shot set folder {root} does not exist; --zs-eval NAME=PATH wants PATH/<class>/<images>")
    folder = root
    if is_split_imagefolder(root):
        folder = test_folder(root)  # type: ignore[assignment]
    classes, paths, labels = scan_imagefolder(folder)
    if not classes or not paths:
        raise DataError(
            f"zero-shot set folder {folder} holds no class folders with images; expected "
            f"{folder}/<class name>/<image files>; {describe_folder(folder)}"
        )
    names = [clean_class_name(c) for c in classes]
    hint = f"segpcl data check --folder {root}"
    return ImageFileDataset(paths, labels, image_size, strict=strict, check_hint=hint, max_pixels=max_pixels), names

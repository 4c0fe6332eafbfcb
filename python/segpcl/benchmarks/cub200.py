"""CUB-200-2011 (200 bird species, 10 tasks of 20).

Layouts:
- official `CUB_200_2011/`: images.txt (`<image id> <relative path>`), classes.txt (`<class id> <folder
  name>`, ids 1..200), image_class_labels.txt (`<image id> <class id>`), train_test_split.txt
  (`<image id> <1 = train, 0 = test>`), images/<class folder>/<file>.jpg;
- pre-split ImageFolder `{train,test}/<class folder>/` (the form PyCIL-style code reads).
Names are cleaned from the class folder names: `001.Black_footed_Albatross` -> `Black footed Albatross`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from ._files import FileSplit, Locator, make_file_benchmark, register_locator
from .base import Benchmark, DataConfig, register_benchmark
from .imagefolder import clean_class_name, is_split_imagefolder, read_split_imagefolder
from .templates import CUB200_TEMPLATES

N_CLASSES = 200
FOLDER = "CUB_200_2011"
_META = ("images.txt", "classes.txt", "image_class_labels.txt", "train_test_split.txt")
OFFICIAL = "official CUB_200_2011"
SPLIT = "pre-split ImageFolder"


def _detect(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    if all((folder / f).is_file() for f in _META) and (folder / "images").is_dir():
        return OFFICIAL
    if is_split_imagefolder(folder):
        return SPLIT
    return None


def _diagnose(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    wanted = [*_META, "images/"]
    present = [f for f in wanted if (folder / f.rstrip("/")).exists()]
    if present and len(present) < len(wanted):
        missing = [f for f in wanted if f not in present]
        return (
            f"{folder} looks like the official {FOLDER}/ layout but lacks {', '.join(missing)}; "
            f"re-extract CUB_200_2011.tgz so that {folder} holds {', '.join(wanted)}"
        )
    return None


LOCATOR = register_locator(
    Locator(
        bench="cub200",
        aliases=(FOLDER, "cub200", "cub", "CUB200", "cub_200_2011"),
        detect=_detect,
        expected=f"the official {FOLDER}/ folder ({', '.join(_META)}, images/) or a pre-split "
        "ImageFolder {train,test}/<class folder>/",
        diagnose=_diagnose,
    )
)


def _table(path: Path, n_fields: int = 2) -> list[list[str]]:
    """Lines of whitespace-separated fields (the last field keeps any spaces)."""
    rows = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"cub200: cannot read {path}: {err}") from err
    for i, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(None, n_fields - 1)
        if len(parts) != n_fields or not parts[0].isdigit():
            raise DataError(
                f"cub200: {path} line {i} reads {line!r}; expected `<id> <value>` as in the official "
                "CUB_200_2011 release"
            )
        rows.append([p.strip() for p in parts])
    return rows


def _read_official(folder: Path) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(class folder names, image paths, labels, is_train) from the official metadata files."""
    classes = _table(folder / "classes.txt")
    class_ids = [int(r[0]) for r in classes]
    if class_ids != list(range(1, len(classes) + 1)):
        raise DataError(f"cub200: {folder / 'classes.txt'} must list class ids 1..N in order")
    images = {int(r[0]): r[1] for r in _table(folder / "images.txt")}
    labels = {int(r[0]): int(r[1]) for r in _table(folder / "image_class_labels.txt")}
    split = {int(r[0]): r[1] for r in _table(folder / "train_test_split.txt")}
    ids = sorted(images)
    for name, table in (("image_class_labels.txt", labels), ("train_test_split.txt", split)):
        missing = [i for i in ids if i not in table]
        if missing:
            raise DataError(
                f"cub200: {folder / name} has no entry for image ids {missing[:8]}"
                f"{' ...' if len(missing) > 8 else ''} listed in images.txt"
            )
    bad = sorted({labels[i] for i in ids if not 1 <= labels[i] <= len(classes)})
    if bad:
        raise DataError(f"cub200: {folder / 'image_class_labels.txt'} uses class ids {bad[:8]} not in classes.txt")
    paths = [str(folder / "images" / images[i]) for i in ids]
    y = np.asarray([labels[i] - 1 for i in ids], dtype=np.int64)
    is_train = np.asarray([split[i] == "1" for i in ids], dtype=bool)
    return [r[1] for r in classes], paths, y, is_train


@register_benchmark(
    "cub200",
    n_classes=N_CLASSES,
    initial=20,
    increment=20,
    description="CUB-200-2011 birds, 200 classes in 10 tasks of 20 (CUB_200_2011/ or {train,test}/<class>/)",
    is_present=LOCATOR.is_present,
)
def build_cub200(cfg: DataConfig) -> Benchmark:
    folder, layout = LOCATOR.require(cfg)
    if layout == OFFICIAL:
        keys, paths, y, is_train = _read_official(folder)
        split = FileSplit.from_mask(paths, y, is_train)
        names_source = f"{folder / 'classes.txt'}"
    else:
        s = read_split_imagefolder(folder)
        keys = s.classes
        split = FileSplit(s.train_paths, s.train_labels, s.test_paths, s.test_labels)
        names_source = f"class folder names under {s.train_dir}"
    return make_file_benchmark(
        "cub200",
        cfg,
        split,
        class_names=[clean_class_name(k) for k in keys],
        class_keys=keys,
        templates=CUB200_TEMPLATES,
        expected_classes=N_CLASSES,
        notes={"layout": layout, "root": str(folder), "names_source": names_source},
    )

"""Stanford Cars (196 car models; 10 tasks: 9 of 20, then 16).

Layouts:
- torchvision's StanfordCars folder `stanford_cars/`: devkit/cars_meta.mat (`class_names`),
  devkit/cars_train_annos.mat and cars_test_annos_withlabels.mat (beside devkit/ as torchvision expects,
  or inside it), struct arrays `annotations` with fields bbox_x1..bbox_y2, `class` (1-based), `fname`;
  images in cars_train/ and cars_test/ (a doubled cars_train/cars_train/ from some mirrors is accepted);
- the original all-in-one release: `car_ims/` (all 16,185 images) and `cars_annos.mat` (struct array
  `annotations` with `relative_im_path` such as car_ims/000001.jpg, bbox_*, `class` 1-based, `test` 0/1, and
  the `class_names` cell array);
- pre-split ImageFolder `{train,test}/<class name>/` (Kaggle's stanford-car-dataset-by-classes-folder holds it at
  car_data/car_data/, found from the download's folder).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataError
from ._files import FileSplit, Locator, child_ci, make_file_benchmark, register_locator
from .base import Benchmark, DataConfig, register_benchmark
from .imagefolder import clean_class_name, is_split_imagefolder, read_split_imagefolder
from .templates import CARS196_TEMPLATES

N_CLASSES = 196
FOLDER = "stanford_cars"
TORCHVISION = "torchvision StanfordCars"
SPLIT = "pre-split ImageFolder"
ALL_IN_ONE = "car_ims + cars_annos.mat"
TEST_ANNOS = "cars_test_annos_withlabels.mat"


def _test_annos(folder: Path) -> Path | None:
    for where in (folder, folder / "devkit"):
        p = where / TEST_ANNOS
        if p.is_file():
            return p
    return None


def _detect(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    devkit = folder / "devkit"
    if (
        (devkit / "cars_meta.mat").is_file()
        and (devkit / "cars_train_annos.mat").is_file()
        and _test_annos(folder) is not None
        and (folder / "cars_train").is_dir()
        and (folder / "cars_test").is_dir()
    ):
        return TORCHVISION
    if (folder / "cars_annos.mat").is_file() and (folder / "car_ims").is_dir():
        return ALL_IN_ONE
    if is_split_imagefolder(folder):
        return SPLIT
    return None


def _diagnose(folder: Path) -> str | None:
    if not folder.is_dir() or not (folder / "devkit").is_dir():
        return None
    wanted = {
        "devkit/cars_meta.mat": (folder / "devkit" / "cars_meta.mat").is_file(),
        "devkit/cars_train_annos.mat": (folder / "devkit" / "cars_train_annos.mat").is_file(),
        f"{TEST_ANNOS} (beside devkit/ or in it)": _test_annos(folder) is not None,
        "cars_train/": (folder / "cars_train").is_dir(),
        "cars_test/": (folder / "cars_test").is_dir(),
    }
    missing = [k for k, ok in wanted.items() if not ok]
    if not missing:
        return None
    msg = f"{folder} looks like torchvision's {FOLDER}/ layout but lacks {', '.join(missing)}"
    if (folder / "devkit" / "cars_test_annos.mat").is_file() and _test_annos(folder) is None:
        msg += (
            f"; devkit/cars_test_annos.mat has no labels: get {TEST_ANNOS} (the labelled test "
            "annotations) and put it beside devkit/"
        )
    return msg


LOCATOR = register_locator(
    Locator(
        bench="cars196",
        aliases=(FOLDER, "cars196", "stanford-cars", "StanfordCars", "cars", "stanford-car-dataset-by-classes-folder"),
        detect=_detect,
        expected=f"torchvision's {FOLDER}/ folder (devkit/cars_meta.mat, devkit/cars_train_annos.mat, "
        f"{TEST_ANNOS}, cars_train/, cars_test/), the all-in-one car_ims/ + cars_annos.mat, "
        "or a pre-split ImageFolder {train,test}/<class name>/",
        diagnose=_diagnose,
        downloads=(("car_data/car_data", "Kaggle's stanford-car-dataset-by-classes-folder"),),
    )
)


def _loadmat(path: Path) -> dict:
    import scipy.io as sio

    try:
        return sio.loadmat(str(path), squeeze_me=True)
    except Exception as err:  # scipy raises ValueError, MatReadError, OSError...
        raise DataError(f"cars196: cannot read {path} as a MATLAB file ({type(err).__name__}: {err})") from err


def _annotations(path: Path, images: Path, n_classes: int) -> tuple[list[str], np.ndarray]:
    mat = _loadmat(path)
    if "annotations" not in mat:
        raise DataError(f"cars196: {path} has no `annotations` array as the Stanford Cars devkit files do")
    annos = np.atleast_1d(mat["annotations"])
    names = annos.dtype.names or ()
    if "fname" not in names or "class" not in names:
        raise DataError(
            f"cars196: {path} annotations have fields {list(names)}; expected `class` and `fname` "
            f"(is this the unlabelled test file? use {TEST_ANNOS})"
        )
    fnames = [str(a["fname"]) for a in annos]
    labels = np.asarray([int(a["class"]) - 1 for a in annos], dtype=np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= n_classes):
        raise DataError(f"cars196: {path} has classes outside 1..{n_classes}")
    base = images
    if fnames and not (images / fnames[0]).exists():
        nested = child_ci(images, images.name)
        if nested is not None and (nested / fnames[0]).exists():
            base = nested
    return [str(base / f) for f in fnames], labels


def _all_in_one(folder: Path) -> tuple[list[str], FileSplit]:
    """The original release: one annotation file for both splits (`test` marks the test images)."""
    path = folder / "cars_annos.mat"
    mat = _loadmat(path)
    if "annotations" not in mat or "class_names" not in mat:
        raise DataError(f"cars196: {path} lacks `annotations` or `class_names` (the all-in-one release has both)")
    names = [str(n).strip() for n in np.atleast_1d(mat["class_names"]).tolist()]
    annos = np.atleast_1d(mat["annotations"])
    fields = annos.dtype.names or ()
    missing = [f for f in ("relative_im_path", "class", "test") if f not in fields]
    if missing:
        raise DataError(f"cars196: {path} annotations lack {missing}; fields found: {list(fields)}")
    paths = [str(folder / str(a["relative_im_path"])) for a in annos]
    labels = np.asarray([int(a["class"]) - 1 for a in annos], dtype=np.int64)
    is_test = np.asarray([int(a["test"]) for a in annos], dtype=bool)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise DataError(f"cars196: {path} has classes outside 1..{len(names)}")
    train, test = np.nonzero(~is_test)[0], np.nonzero(is_test)[0]
    split = FileSplit([paths[i] for i in train], labels[train], [paths[i] for i in test], labels[test])
    return names, split


@register_benchmark(
    "cars196",
    n_classes=N_CLASSES,
    initial=20,
    increment=20,
    description="Stanford Cars, 196 classes in 10 tasks (9 x 20 + 16) (torchvision stanford_cars/ "
    "or {train,test}/<class>/)",
    is_present=LOCATOR.is_present,
)
def build_cars196(cfg: DataConfig) -> Benchmark:
    folder, layout = LOCATOR.require(cfg)
    if layout == TORCHVISION:
        meta_path = folder / "devkit" / "cars_meta.mat"
        meta = _loadmat(meta_path)
        if "class_names" not in meta:
            raise DataError(f"cars196: {meta_path} has no `class_names` cell array")
        names = [str(n).strip() for n in np.atleast_1d(meta["class_names"]).tolist()]
        keys = names
        train_paths, train_y = _annotations(
            folder / "devkit" / "cars_train_annos.mat", folder / "cars_train", len(names)
        )
        test_paths, test_y = _annotations(_test_annos(folder), folder / "cars_test", len(names))  # type: ignore[arg-type]
        split = FileSplit(train_paths, train_y, test_paths, test_y)
        names_source = str(meta_path)
    elif layout == ALL_IN_ONE:
        names, split = _all_in_one(folder)
        keys = names
        names_source = str(folder / "cars_annos.mat")
    else:
        s = read_split_imagefolder(folder)
        keys = s.classes
        split = FileSplit(s.train_paths, s.train_labels, s.test_paths, s.test_labels)
        names = [clean_class_name(k) for k in keys]
        names_source = f"class folder names under {s.train_dir}"
    return make_file_benchmark(
        "cars196",
        cfg,
        split,
        class_names=names,
        class_keys=keys,
        templates=CARS196_TEMPLATES,
        expected_classes=N_CLASSES,
        notes={"layout": layout, "root": str(folder), "names_source": names_source},
    )

"""ImageNet-Sub (ImageNet-100): 100 ILSVRC2012 classes, 10 tasks of 10, read from a local ImageNet folder.

The class list is the one the CLIP continual-learning line uses: the first 100 ILSVRC2012 classes in wnid
order (n01440764 tench ... n01855672 goose). Sources: Continual-CLIP's `dataset_reqs/imagenet100_splits/
train_100.txt` (labels 0..99 = these wnids in this order; the file RAPF, MG-CLIP and MoE-Adapters read through
continuum's `ImageNet100(data_subset=...)`), and the `imagenet100_classes.txt` name table those repositories
ship (MoE-Adapters4CL `cil/dataset_reqs/imagenet100_classes.txt`), which holds CLIP's cleaned ImageNet class
names for them. Class id = position in that list, so PyCIL's seed-1993 permutation is RAPF's
`class_orders/imagenet100.yaml` (68, 56, 78, 8, ...). This is not the UCIR/PODNet or CMC "ImageNet-100".

Layouts (ILSVRC2012 as extracted; a copy holding only the 100 class folders works the same):
- `train/<wnid>/*.JPEG` and `val/<wnid>/*.JPEG` (val sorted into class folders);
- `train/<wnid>/*.JPEG` and a flat `val/ILSVRC2012_val_00000001.JPEG ...` with the devkit's ground truth:
  `ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt` (one ILSVRC2012_ID per val image) and
  `ILSVRC2012_devkit_t12/data/meta.mat` (ILSVRC2012_ID -> wnid), beside train/ and val/ or one level up;
- the same flat val/ with Kaggle's `LOC_val_solution.csv` (`ImageId,PredictionString`, the wnid first).
Other ImageNet classes present under train/ or val/ are ignored. The data root may also be the folder a download
created: Kaggle's `imagenet-object-localization-challenge/` (ILSVRC/Data/CLS-LOC/ inside, LOC_val_solution.csv at
its top) or CoOp's `$DATA` / `$DATA/imagenet` (images/{train,val}/ inside).
"""

from __future__ import annotations

import csv
import os
import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._files import FileSplit, Locator, child_ci, describe_folder, is_image_file, make_file_benchmark, register_locator
from .base import Benchmark, DataConfig, register_benchmark
from .imagefolder import images_in
from .templates import IMAGENET_SUB_TEMPLATES

CLASSES: tuple[tuple[str, str], ...] = (
    ("n01440764", "tench"),
    ("n01443537", "goldfish"),
    ("n01484850", "great white shark"),
    ("n01491361", "tiger shark"),
    ("n01494475", "hammerhead shark"),
    ("n01496331", "electric ray"),
    ("n01498041", "stingray"),
    ("n01514668", "rooster"),
    ("n01514859", "hen"),
    ("n01518878", "ostrich"),
    ("n01530575", "brambling"),
    ("n01531178", "goldfinch"),
    ("n01532829", "house finch"),
    ("n01534433", "junco"),
    ("n01537544", "indigo bunting"),
    ("n01558993", "American robin"),
    ("n01560419", "bulbul"),
    ("n01580077", "jay"),
    ("n01582220", "magpie"),
    ("n01592084", "chickadee"),
    ("n01601694", "American dipper"),
    ("n01608432", "kite (bird of prey)"),
    ("n01614925", "bald eagle"),
    ("n01616318", "vulture"),
    ("n01622779", "great grey owl"),
    ("n01629819", "fire salamander"),
    ("n01630670", "smooth newt"),
    ("n01631663", "newt"),
    ("n01632458", "spotted salamander"),
    ("n01632777", "axolotl"),
    ("n01641577", "American bullfrog"),
    ("n01644373", "tree frog"),
    ("n01644900", "tailed frog"),
    ("n01664065", "loggerhead sea turtle"),
    ("n01665541", "leatherback sea turtle"),
    ("n01667114", "mud turtle"),
    ("n01667778", "terrapin"),
    ("n01669191", "box turtle"),
    ("n01675722", "banded gecko"),
    ("n01677366", "green iguana"),
    ("n01682714", "Carolina anole"),
    ("n01685808", "desert grassland whiptail lizard"),
    ("n01687978", "agama"),
    ("n01688243", "frilled-necked lizard"),
    ("n01689811", "alligator lizard"),
    ("n01692333", "Gila monster"),
    ("n01693334", "European green lizard"),
    ("n01694178", "chameleon"),
    ("n01695060", "Komodo dragon"),
    ("n01697457", "Nile crocodile"),
    ("n01698640", "American alligator"),
    ("n01704323", "triceratops"),
    ("n01728572", "worm snake"),
    ("n01728920", "ring-necked snake"),
    ("n01729322", "eastern hog-nosed snake"),
    ("n01729977", "smooth green snake"),
    ("n01734418", "kingsnake"),
    ("n01735189", "garter snake"),
    ("n01737021", "water snake"),
    ("n01739381", "vine snake"),
    ("n01740131", "night snake"),
    ("n01742172", "boa constrictor"),
    ("n01744401", "African rock python"),
    ("n01748264", "Indian cobra"),
    ("n01749939", "green mamba"),
    ("n01751748", "sea snake"),
    ("n01753488", "Saharan horned viper"),
    ("n01755581", "eastern diamondback rattlesnake"),
    ("n01756291", "sidewinder rattlesnake"),
    ("n01768244", "trilobite"),
    ("n01770081", "harvestman"),
    ("n01770393", "scorpion"),
    ("n01773157", "yellow garden spider"),
    ("n01773549", "barn spider"),
    ("n01773797", "European garden spider"),
    ("n01774384", "southern black widow"),
    ("n01774750", "tarantula"),
    ("n01775062", "wolf spider"),
    ("n01776313", "tick"),
    ("n01784675", "centipede"),
    ("n01795545", "black grouse"),
    ("n01796340", "ptarmigan"),
    ("n01797886", "ruffed grouse"),
    ("n01798484", "prairie grouse"),
    ("n01806143", "peafowl"),
    ("n01806567", "quail"),
    ("n01807496", "partridge"),
    ("n01817953", "african grey parrot"),
    ("n01818515", "macaw"),
    ("n01819313", "sulphur-crested cockatoo"),
    ("n01820546", "lorikeet"),
    ("n01824575", "coucal"),
    ("n01828970", "bee eater"),
    ("n01829413", "hornbill"),
    ("n01833805", "hummingbird"),
    ("n01843065", "jacamar"),
    ("n01843383", "toucan"),
    ("n01847000", "duck"),
    ("n01855032", "red-breasted merganser"),
    ("n01855672", "goose"),
)
"""(wnid, CLIP class name) of the 100 classes, in class-id order (sources in the module docstring)."""

WNIDS = [w for w, _ in CLASSES]
NAMES = [n for _, n in CLASSES]
N_CLASSES = len(CLASSES)
FOLDER = "imagenet"
DEVKIT = "ILSVRC2012_devkit_t12"
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
META = "meta.mat"
KAGGLE_CSV = "LOC_val_solution.csv"

SORTED = "ILSVRC2012 train/ + val/<wnid>/"
FLAT_DEVKIT = "ILSVRC2012 train/ + flat val/ with the devkit ground truth"
FLAT_CSV = "ILSVRC2012 train/ + flat val/ with LOC_val_solution.csv"

_VAL_INDEX = re.compile(r"_(\d{8})\.[A-Za-z]+$")


def _train_val(folder: Path) -> tuple[Path | None, Path | None]:
    if not folder.is_dir():
        return None, None
    train, val = child_ci(folder, "train"), child_ci(folder, "val")
    return (train if train is not None and train.is_dir() else None), (
        val if val is not None and val.is_dir() else None
    )


def _present_wnids(folder: Path) -> list[str]:
    return [w for w in WNIDS if (folder / w).is_dir()]


def _has_flat_images(folder: Path, limit: int = 64) -> bool:
    try:
        with os.scandir(folder) as entries:
            for i, e in enumerate(entries):
                if e.is_file() and is_image_file(e.name):
                    return True
                if i >= limit:
                    break
    except OSError:
        pass
    return False


def _near(folder: Path, levels: int = 2) -> list[Path]:
    out = [folder]
    for _ in range(levels):
        if out[-1].parent != out[-1]:
            out.append(out[-1].parent)
    return out


def find_devkit(folder: Path) -> tuple[Path, Path] | None:
    """(ground-truth file, meta.mat) of the ILSVRC2012 devkit near `folder`, or None."""
    for base in _near(folder):
        for cand in (base / DEVKIT / "data", base / DEVKIT, base / "devkit" / "data", base / "devkit", base):
            gt, meta = cand / GROUND_TRUTH, cand / META
            if gt.is_file() and meta.is_file():
                return gt, meta
    return None


def find_kaggle_csv(folder: Path) -> Path | None:
    for base in _near(folder, 3):
        p = child_ci(base, KAGGLE_CSV) if base.is_dir() else None
        if p is not None and p.is_file():
            return p
    return None


def _detect(folder: Path) -> str | None:
    train, val = _train_val(folder)
    if train is None or val is None or not _present_wnids(train):
        return None
    if _present_wnids(val):
        return SORTED
    if _has_flat_images(val):
        if find_devkit(folder) is not None:
            return FLAT_DEVKIT
        if find_kaggle_csv(folder) is not None:
            return FLAT_CSV
    return None


def _diagnose(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    train, val = _train_val(folder)
    if train is None and val is None:
        return None
    if train is None:
        return f"{folder} has val/ but no train/; ImageNet-Sub needs train/<wnid>/*.JPEG (ILSVRC2012_img_train.tar)"
    if not _present_wnids(train):
        return (
            f"{train} holds none of the 100 ImageNet-Sub class folders (n01440764 ... n01855672); "
            f"{describe_folder(train)}. Extract ILSVRC2012_img_train.tar and its per-class tars into train/<wnid>/"
        )
    if val is None:
        return f"{folder} has train/ but no val/; extract ILSVRC2012_img_val.tar into {folder}/val/"
    if _has_flat_images(val):
        return (
            f"{val} holds the validation images unsorted (ILSVRC2012_val_*.JPEG) but no ground truth was found: "
            f"put {DEVKIT}/ (from ILSVRC2012_devkit_t12.tar.gz: data/{GROUND_TRUTH} and data/{META}) beside "
            f"train/ and val/, or Kaggle's {KAGGLE_CSV} there, or sort val/ into val/<wnid>/ folders"
        )
    return f"{val} holds neither val/<wnid>/ class folders nor ILSVRC2012_val_*.JPEG images; {describe_folder(val)}"


LOCATOR = register_locator(
    Locator(
        bench="imagenet_sub",
        aliases=(
            FOLDER,
            "ILSVRC2012",
            "ILSVRC",
            "imagenet1k",
            "imagenet-1k",
            "imagenet100",
            "imagenet-100",
            "imagenet_sub",
            "imagenet-sub",
            "imagenet-object-localization-challenge",
        ),
        detect=_detect,
        expected="an ILSVRC2012 folder with train/<wnid>/ and val/ (val/<wnid>/, or flat ILSVRC2012_val_*.JPEG "
        f"with {DEVKIT}/data/{GROUND_TRUTH} + {META}, or with {KAGGLE_CSV})",
        diagnose=_diagnose,
        downloads=(
            ("ILSVRC/Data/CLS-LOC", "Kaggle's imagenet-object-localization-challenge"),
            ("images", "CoOp's $DATA/imagenet"),
        ),
    )
)


# ------------------------------------------------------------------------------------------ readers


def _read_class_folders(split_dir: Path, what: str) -> tuple[list[str], np.ndarray]:
    missing = [w for w in WNIDS if not (split_dir / w).is_dir()]
    if missing:
        raise DataError(
            f"imagenet_sub: {split_dir} lacks {len(missing)} of the 100 ImageNet-Sub class folders: "
            f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}; {what} needs {split_dir}/<wnid>/ "
            "for every class (see docs/DATASETS.md)"
        )
    paths: list[str] = []
    labels: list[int] = []
    for i, w in enumerate(WNIDS):
        files = images_in(split_dir / w)
        paths += files
        labels += [i] * len(files)
    return paths, np.asarray(labels, dtype=np.int64)


def read_devkit_labels(ground_truth: Path, meta: Path) -> dict[int, str]:
    """val image index (1-based, as in ILSVRC2012_val_00000001.JPEG) -> wnid, from the devkit files."""
    import scipy.io as sio

    try:
        synsets = sio.loadmat(str(meta), squeeze_me=True)["synsets"]
        ids = np.atleast_1d(synsets["ILSVRC2012_ID"]).astype(np.int64)
        wnids = [str(w) for w in np.atleast_1d(synsets["WNID"])]
    except Exception as err:  # noqa: BLE001  (a wrong or corrupt .mat file)
        raise DataError(f"imagenet_sub: cannot read the synsets table of {meta}: {type(err).__name__}: {err}") from err
    id_to_wnid = dict(zip(ids.tolist(), wnids, strict=True))
    out: dict[int, str] = {}
    for i, line in enumerate(ground_truth.read_text(encoding="utf-8").split(), 1):
        if not line.isdigit() or int(line) not in id_to_wnid:
            raise DataError(f"imagenet_sub: {ground_truth} entry {i} is {line!r}, not an ILSVRC2012_ID of {meta}")
        out[i] = id_to_wnid[int(line)]
    return out


def read_kaggle_labels(path: Path) -> dict[str, str]:
    """ImageId (file stem) -> wnid from Kaggle's LOC_val_solution.csv."""
    out: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            pred = (row.get("PredictionString") or "").split()
            if row.get("ImageId") and pred:
                out[row["ImageId"]] = pred[0]
    if not out:
        raise DataError(f"imagenet_sub: {path} has no `ImageId,PredictionString` rows")
    return out


def _read_flat_val(val: Path, labels_of) -> tuple[list[str], np.ndarray]:
    index = {w: i for i, w in enumerate(WNIDS)}
    paths: list[str] = []
    labels: list[int] = []
    with os.scandir(val) as entries:
        files = sorted(e.name for e in entries if e.is_file() and is_image_file(e.name))
    for name in files:
        wnid = labels_of(name)
        if wnid in index:
            paths.append(str(val / name))
            labels.append(index[wnid])
    return paths, np.asarray(labels, dtype=np.int64)


@register_benchmark(
    "imagenet_sub",
    n_classes=N_CLASSES,
    initial=10,
    increment=10,
    description="ImageNet-Sub (ImageNet-100 of Continual-CLIP/RAPF), 100 classes in 10 tasks of 10 "
    "(ILSVRC2012 train/ + val/)",
    is_present=LOCATOR.is_present,
)
def build_imagenet_sub(cfg: DataConfig) -> Benchmark:
    folder, layout = LOCATOR.require(cfg)
    train_dir, val_dir = _train_val(folder)
    assert train_dir is not None and val_dir is not None
    train_paths, train_labels = _read_class_folders(train_dir, "the training split")
    notes = {"layout": layout, "root": str(folder), "names_source": "CLIP's ImageNet class names (shipped)"}
    if layout == SORTED:
        test_paths, test_labels = _read_class_folders(val_dir, "a sorted val/")
    elif layout == FLAT_DEVKIT:
        gt, meta = find_devkit(folder)  # type: ignore[misc]
        table = read_devkit_labels(gt, meta)
        notes["ground_truth"] = str(gt)

        def labels_of(name: str) -> str | None:
            m = _VAL_INDEX.search(name)
            return table.get(int(m.group(1))) if m else None

        test_paths, test_labels = _read_flat_val(val_dir, labels_of)
    else:
        path = find_kaggle_csv(folder)
        table_csv = read_kaggle_labels(path)  # type: ignore[arg-type]
        notes["ground_truth"] = str(path)
        test_paths, test_labels = _read_flat_val(val_dir, lambda name: table_csv.get(Path(name).stem))
    if not len(test_labels):
        raise DataError(
            f"imagenet_sub: no validation image of the 100 classes found in {val_dir} with "
            f"{notes.get('ground_truth', 'its class folders')}"
        )
    return make_file_benchmark(
        "imagenet_sub",
        cfg,
        FileSplit(train_paths, train_labels, test_paths, test_labels),
        class_names=list(NAMES),
        class_keys=list(WNIDS),
        templates=IMAGENET_SUB_TEMPLATES,
        expected_classes=N_CLASSES,
        notes=notes,
    )

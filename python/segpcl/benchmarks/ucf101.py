"""UCF101 as CLIP papers use it: one middle frame per video, 101 action classes, 10 tasks (11 + 9 x 10).

Layouts, tried in this order:
1. CoOp's distribution: `ucf101/UCF-101-midframes/<Class_Name>/<video>.jpg` + `ucf101/split_zhou_UCF101.json`
   (`{"train": [[path, label, classname], ...], "val": [...], "test": [...]}`, paths relative to
   UCF-101-midframes/). Training = CoOp's train + val (our reading: class-incremental papers keep no
   validation split), test = its test (the videos of UCF101's official test list 1). With data.val_fraction > 0
   training is CoOp's train alone and its val is the validation set (the fraction is not used).
2. Pre-split ImageFolder `{train,test}/<class>/*.jpg` (test/ may be val/).
3. An ImageFolder of frames `<class>/v_<Action>_gNN_cMM*.jpg` (e.g. UCF-101-midframes/ without the json, or
   frames extracted by any tool that keeps the video name): UCF101's official split 1 by group, videos of
   groups 1-7 test, 8-25 train (the groups of testlist01.txt / trainlist01.txt).
Class ids: the json's labels, or the class folders sorted case-insensitively with underscores ignored (the
order of UCF101's classInd.txt, which is CoOp's label order). Names: underscores become spaces and camel case
is split (`ApplyEyeMakeup` and `Apply_Eye_Makeup` -> `Apply Eye Makeup`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from ._files import (
    FileSplit,
    ImageFileDataset,
    Locator,
    check_hint,
    child_ci,
    describe_folder,
    make_file_benchmark,
    register_locator,
)
from .base import Benchmark, DataConfig, register_benchmark
from .imagefolder import class_folders, images_in, is_split_imagefolder, scan_imagefolder, test_folder
from .templates import UCF101_TEMPLATES

N_CLASSES = 101
FOLDER = "ucf101"
FRAMES_DIR = "UCF-101-midframes"
SPLIT_JSON = "split_zhou_UCF101.json"
TEST_GROUPS = range(1, 8)
"""UCF101's official split 1: the videos of groups 1-7 are the test set."""

COOP = "CoOp UCF-101-midframes + split_zhou_UCF101.json"
PRESPLIT = "pre-split ImageFolder"
FRAMES = "ImageFolder of frames (official split 1 by group)"

_GROUP = re.compile(r"_g(\d{2})_c\d{2}", re.IGNORECASE)
_CAMEL = re.compile(r"(?<=[a-z])(?=[A-Z])")


def ucf_class_name(key: str) -> str:
    """`ApplyEyeMakeup` / `Apply_Eye_Makeup` -> `Apply Eye Makeup`; `YoYo` -> `Yo Yo`."""
    s = _CAMEL.sub(" ", key.replace("_", " "))
    return re.sub(r"\s+", " ", s).strip() or key


def class_sort_key(key: str) -> str:
    """classInd.txt's order: case-insensitive, underscores ignored (HammerThrow after Hammering)."""
    return key.replace("_", "").replace(" ", "").lower()


def _coop_files(folder: Path) -> tuple[Path, Path] | None:
    if not folder.is_dir():
        return None
    js, frames = child_ci(folder, SPLIT_JSON), child_ci(folder, FRAMES_DIR)
    if js is not None and js.is_file() and frames is not None and frames.is_dir():
        return js, frames
    return None


_VIDEO = re.compile(r"^v_(.+?)_g(\d{2})_c\d{2}", re.IGNORECASE)


def _frame_folders(folder: Path) -> bool:
    """True if the first class folders of `folder` hold frames named after their videos, the action matching
    the folder (`ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.jpg`, or `Apply_Eye_Makeup/...`)."""
    try:
        classes = class_folders(folder)[:3]
        for c in classes:
            files = images_in(folder / c)
            m = _VIDEO.match(Path(files[0]).name) if files else None
            if m is None or class_sort_key(m.group(1)) != class_sort_key(c):
                return False
    except (DataError, OSError):
        return False
    return bool(classes)


def _detect(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    if _coop_files(folder):
        return COOP
    if is_split_imagefolder(folder):
        return PRESPLIT
    if _frame_folders(folder):
        return FRAMES
    return None


def _diagnose(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    js, frames = child_ci(folder, SPLIT_JSON), child_ci(folder, FRAMES_DIR)
    if js is not None and frames is None:
        return (
            f"{folder} has {SPLIT_JSON} but no {FRAMES_DIR}/ folder; extract CoOp's UCF-101-midframes.zip "
            f"into {folder}/"
        )
    if frames is not None and js is None and not _frame_folders(frames):
        return (
            f"{folder} has {FRAMES_DIR}/ but no {SPLIT_JSON}; put CoOp's split file beside it (or keep the "
            "video names v_<Action>_gNN_cMM in the frame files, so the official split by group applies)"
        )
    return None


LOCATOR = register_locator(
    Locator(
        bench="ucf101",
        aliases=(FOLDER, "UCF-101", "ucf-101", "ucf_101", FRAMES_DIR, "ucf"),
        detect=_detect,
        expected=f"CoOp's layout ({FRAMES_DIR}/<class>/*.jpg + {SPLIT_JSON}), a pre-split ImageFolder "
        "{train,test}/<class>/, or an ImageFolder of frames <class>/v_<Action>_gNN_cMM.jpg",
        diagnose=_diagnose,
    )
)


def _read_coop(js: Path, frames: Path, keep_val: bool) -> tuple[list[str], FileSplit, tuple[list[str], np.ndarray]]:
    """(class names, split, val): training is train + val, or train alone with `keep_val` (val validates)."""
    try:
        data = json.loads(js.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise DataError(f"ucf101: cannot read {js}: {err}") from err
    if not isinstance(data, dict) or "train" not in data or "test" not in data:
        raise DataError(f"ucf101: {js} must be a mapping with `train`, `val` and `test` lists (CoOp's format)")
    names: dict[int, str] = {}
    parts: dict[str, tuple[list[str], list[int]]] = {}
    for split in ("train", "val", "test"):
        paths, labels = [], []
        for i, item in enumerate(data.get(split, [])):
            if not isinstance(item, list | tuple) or len(item) < 3 or not isinstance(item[1], int):
                raise DataError(f"ucf101: {js} {split}[{i}] is {item!r}; expected [path, label, classname]")
            rel, label, cname = str(item[0]), int(item[1]), str(item[2])
            paths.append(str(frames / rel))
            labels.append(label)
            names.setdefault(label, cname)
        parts[split] = (paths, labels)
    if sorted(names) != list(range(len(names))):
        raise DataError(f"ucf101: {js} uses labels {sorted(names)[:5]}...; expected 0..N-1")
    val = (parts["val"][0], np.asarray(parts["val"][1], dtype=np.int64))
    train_paths = parts["train"][0] + ([] if keep_val else val[0])
    train_labels = np.asarray(parts["train"][1] + ([] if keep_val else parts["val"][1]), dtype=np.int64)
    split = FileSplit(train_paths, train_labels, parts["test"][0], np.asarray(parts["test"][1], dtype=np.int64))
    return [names[i] for i in range(len(names))], split, val


def _sorted_classes(folder: Path) -> list[str]:
    return sorted(class_folders(folder), key=class_sort_key)


def _read_presplit(folder: Path) -> tuple[list[str], FileSplit, Path]:
    train_dir, test_dir = child_ci(folder, "train"), test_folder(folder)
    assert train_dir is not None and test_dir is not None
    classes = _sorted_classes(train_dir)
    _, train_paths, train_labels = scan_imagefolder(train_dir, classes)
    _, test_paths, test_labels = scan_imagefolder(test_dir, classes)
    return classes, FileSplit(train_paths, train_labels, test_paths, test_labels), train_dir


def _read_frames(folder: Path) -> tuple[list[str], FileSplit]:
    classes = _sorted_classes(folder)
    _, paths, labels = scan_imagefolder(folder, classes)
    groups = []
    for p in paths:
        m = _GROUP.search(Path(p).name)
        if m is None:
            raise DataError(
                f"ucf101: frame file {p} does not carry its video's group (`_gNN_cMM`, as in "
                "v_ApplyEyeMakeup_g08_c01.jpg), so the official split cannot be applied; use CoOp's "
                f"{SPLIT_JSON} or a pre-split {{train,test}}/<class>/ folder"
            )
        groups.append(int(m.group(1)))
    is_train = ~np.isin(np.asarray(groups), list(TEST_GROUPS))
    return classes, FileSplit.from_mask(paths, labels, is_train)


@register_benchmark(
    "ucf101",
    n_classes=N_CLASSES,
    initial=11,
    increment=10,
    description="UCF101 middle frames, 101 actions in 10 tasks: 11 + 9 x 10 (CoOp's UCF-101-midframes + split "
    "json, {train,test}/<class>/, or <class>/ frames); with CoOp's json, its train + val lists train (with "
    "data.val_fraction > 0: train alone, val validates)",
    is_present=LOCATOR.is_present,
)
def build_ucf101(cfg: DataConfig) -> Benchmark:
    folder, layout = LOCATOR.require(cfg)
    notes: dict = {"layout": layout, "root": str(folder)}
    val = None
    if layout == COOP:
        js, frames = _coop_files(folder)  # type: ignore[misc]
        keys, split, val = _read_coop(js, frames, keep_val=cfg.val_fraction > 0)
        notes["split_file"] = str(js)
        notes["train_source"] = (
            f"CoOp's train list ({len(split.train_paths)}); its val list ({len(val[0])}) is the validation set"
            if cfg.val_fraction > 0
            else f"CoOp's train + val lists ({len(split.train_paths)}; with data.val_fraction > 0 the "
            f"{len(val[0])} of val are the validation set instead)"
        )
        notes["val_source"] = f"CoOp's val list of {js.name}"
        notes["names_source"] = f"class names of {js.name}, camel case split"
    elif layout == PRESPLIT:
        keys, split, train_dir = _read_presplit(folder)
        notes["names_source"] = f"class folder names under {train_dir}, camel case split"
    else:
        keys, split = _read_frames(folder)
        notes["names_source"] = f"class folder names under {folder}, camel case split"
    if not split.train_paths or not split.test_paths:
        raise DataError(
            f"ucf101: {folder} ({layout}) gave {len(split.train_paths)} training and {len(split.test_paths)} "
            f"test images; both splits need images. {describe_folder(folder)}"
        )
    bench = make_file_benchmark(
        "ucf101",
        cfg,
        split,
        class_names=[ucf_class_name(k) for k in keys],
        class_keys=keys,
        templates=UCF101_TEMPLATES,
        expected_classes=N_CLASSES,
        notes=notes,
    )
    if val is not None and cfg.val_fraction > 0 and len(val[0]):
        hint = check_hint("ucf101", cfg.data_root)
        bench.val, bench.val_targets = ImageFileDataset(*val, cfg.image_size, cfg.strict, hint), val[1]
    return bench

"""Fake copies of the revision's two extra data sets in their real on-disk layouts (8x8 images, real class
lists): ILSVRC2012 for ImageNet-Sub (val sorted, or flat with the devkit or Kaggle's csv) and UCF101
(CoOp's UCF-101-midframes + split json, or a frames ImageFolder named by video)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from fakedata import write_image

from segpcl.benchmarks.imagenet_sub import WNIDS

EXTRA_WNIDS = ["n09999991", "n09999992"]
"""ImageNet classes outside the subset (ignored by the reader)."""


def make_imagenet(root: Path, val: str = "sorted", per_class: tuple[int, int] = (1, 1)) -> Path:
    """root/imagenet/{train,val}: train/<wnid>/<wnid>_<k>.JPEG for the 100 classes and two others; val sorted
    into val/<wnid>/, or flat ILSVRC2012_val_XXXXXXXX.JPEG with `devkit` (ILSVRC2012_devkit_t12/data/
    meta.mat + ground truth, the ILSVRC2012_IDs deliberately not in wnid order) or `csv` (LOC_val_solution.csv)."""
    folder = root / "imagenet"
    wnids = WNIDS + EXTRA_WNIDS
    for w in wnids:
        for k in range(per_class[0]):
            write_image(folder / "train" / w / f"{w}_{k}.JPEG")
    if val == "sorted":
        for w in wnids:
            for k in range(per_class[1]):
                write_image(folder / "val" / w / f"ILSVRC2012_val_{wnids.index(w) * 10 + k + 1:08d}.JPEG")
        return folder
    order = [(w, k) for k in range(per_class[1]) for w in reversed(wnids)]  # val images not grouped by class
    for i, _ in enumerate(order, 1):
        write_image(folder / "val" / f"ILSVRC2012_val_{i:08d}.JPEG")
    if val == "devkit":
        import scipy.io as sio

        rng = np.random.RandomState(3)
        ids = rng.permutation(len(wnids)) + 1  # ILSVRC2012_ID of each wnid
        fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height"]
        synsets = np.zeros((len(wnids) + 1, 1), dtype=[(f, "O") for f in fields])
        for j, w in enumerate(wnids):
            synsets[j, 0] = (
                np.array([[ids[j]]]),
                np.array([w]),
                np.array(["x"]),
                np.array(["y"]),
                np.array([[0]]),
                np.zeros((1, 0)),
                np.array([[0]]),
            )
        synsets[len(wnids), 0] = (
            np.array([[len(wnids) + 1]]),
            np.array(["n00001740"]),
            np.array(["entity"]),
            np.array(["y"]),
            np.array([[3]]),
            np.array([[1, 2, 3]]),
            np.array([[18]]),
        )
        data = folder / "ILSVRC2012_devkit_t12" / "data"
        data.mkdir(parents=True)
        sio.savemat(str(data / "meta.mat"), {"synsets": synsets})
        gt = [str(ids[wnids.index(w)]) for w, _ in order]
        (data / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(gt) + "\n")
    elif val == "csv":
        rows = ["ImageId,PredictionString"]
        rows += [f"ILSVRC2012_val_{i:08d},{w} 1 2 3 4" for i, (w, _) in enumerate(order, 1)]
        (folder.parent / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    else:
        raise ValueError(val)
    return folder


UCF_CAMEL = ["ApplyEyeMakeup", "ApplyLipstick", "Archery", "HammerThrow", "Hammering", "JumpRope", "JumpingJack"]
UCF_CAMEL += [f"Move{chr(65 + i // 26)}{chr(97 + i % 26)}" for i in range(101 - len(UCF_CAMEL) - 1)] + ["YoYo"]


def _underscored(camel: str) -> str:
    import re

    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", camel)


def make_ucf_coop(root: Path, per_split: tuple[int, int, int] = (1, 1, 1)) -> Path:
    """root/ucf101/UCF-101-midframes/<Class_Name>/v_<Action>_gNN_c01.jpg + split_zhou_UCF101.json (CoOp)."""
    folder = root / "ucf101"
    classes = sorted(UCF_CAMEL, key=str.lower)
    split: dict[str, list] = {"train": [], "val": [], "test": []}
    for label, camel in enumerate(classes):
        cname = _underscored(camel)
        for name, n, group in (("train", per_split[0], 8), ("val", per_split[1], 20), ("test", per_split[2], 1)):
            for k in range(n):
                rel = f"{cname}/v_{camel}_g{group + k:02d}_c01.jpg"
                write_image(folder / "UCF-101-midframes" / rel)
                split[name].append([rel, label, cname])
    (folder / "split_zhou_UCF101.json").write_text(json.dumps(split))
    return folder


def make_ucf_frames(root: Path) -> Path:
    """root/ucf101/<Action>/v_<Action>_gNN_c01.jpg: groups 1 and 2 (test), 8 and 9 (train)."""
    folder = root / "ucf101"
    for camel in UCF_CAMEL:
        for g in (1, 2, 8, 9):
            write_image(folder / camel / f"v_{camel}_g{g:02d}_c01.jpg")
    return folder

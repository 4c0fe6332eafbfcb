"""Tiny fake copies of the paper's data sets in their real on-disk formats (real class counts, 8x8
images, the published metadata file formats), written fast: every image file gets the same bytes."""

from __future__ import annotations

import io
import pickle
from functools import cache
from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 8


@cache
def image_bytes(fmt: str = "PNG") -> bytes:
    rng = np.random.RandomState(0)
    im = Image.fromarray(rng.randint(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def write_image(path: Path, fmt: str = "JPEG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(image_bytes(fmt))
    return path


def corrupt(path: Path) -> Path:
    """Overwrite an image with bytes PIL cannot identify."""
    path.write_bytes(b"this is not an image file\x00\x01\x02")
    return path


def truncate(path: Path) -> Path:
    """Cut a JPEG in half (PIL raises 'image file is truncated' on load)."""
    data = image_bytes("JPEG")
    path.write_bytes(data[: len(data) // 2])
    return path


# --------------------------------------------------------------------------------------- CIFAR-100

CIFAR_NAMES = ["apple", "aquarium_fish", "baby", "bear", "beaver"] + [f"thing_{i}" for i in range(5, 100)]


def make_cifar100(root: Path, per_class: tuple[int, int] = (2, 1)) -> Path:
    """root/cifar-100-python/{train,test,meta} as torchvision's CIFAR100 reads them."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.RandomState(1)
    for split, k in (("train", per_class[0]), ("test", per_class[1])):
        labels = np.repeat(np.arange(100), k)
        rng.shuffle(labels)
        entry = {
            "filenames": [f"img_{i}.png" for i in range(len(labels))],
            "batch_label": f"{split} batch 1 of 1",
            "fine_labels": labels.tolist(),
            "coarse_labels": (labels // 5).tolist(),
            "data": rng.randint(0, 256, (len(labels), 3072), dtype=np.uint8),
        }
        with open(folder / split, "wb") as f:
            pickle.dump(entry, f, protocol=2)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": CIFAR_NAMES, "coarse_label_names": [f"c{i}" for i in range(20)]}, f)
    return folder


# ------------------------------------------------------------------------------------------ CUB-200

CUB_FOLDERS = ["001.Black_footed_Albatross", "002.Laysan_Albatross"] + [
    f"{i + 1:03d}.Bird_species_{i + 1}" for i in range(2, 200)
]


def make_cub_official(root: Path, per_class: int = 2) -> Path:
    """root/CUB_200_2011 with images.txt, classes.txt, image_class_labels.txt, train_test_split.txt
    and images/<class>/<file>.jpg; the first image of each class is for training, the rest for test."""
    folder = root / "CUB_200_2011"
    images, labels, split = [], [], []
    img_id = 0
    for c, cls in enumerate(CUB_FOLDERS, 1):
        for k in range(per_class):
            img_id += 1
            rel = f"{cls}/{cls.split('.', 1)[1]}_{k:04d}_{img_id}.jpg"
            write_image(folder / "images" / rel)
            images.append(f"{img_id} {rel}")
            labels.append(f"{img_id} {c}")
            split.append(f"{img_id} {1 if k == 0 else 0}")
    (folder / "classes.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(CUB_FOLDERS, 1)))
    (folder / "images.txt").write_text("\n".join(images) + "\n")
    (folder / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (folder / "train_test_split.txt").write_text("\n".join(split) + "\n")
    return folder


def make_split_imagefolder(folder: Path, classes: list[str], per_split: tuple[int, int] = (1, 1)) -> Path:
    """folder/{train,test}/<class>/<n>.jpg."""
    for split, k in (("train", per_split[0]), ("test", per_split[1])):
        for cls in classes:
            for j in range(k):
                write_image(folder / split / cls / f"{split}_{j}.jpg")
    return folder


# ---------------------------------------------------------------------------------------- ImageNet-R

IMR_WNIDS = [f"n{1443537 + 1000 * i:08d}" for i in range(200)]
IMR_NAMES = ["goldfish", "great_white_shark"] + [f"object_{i}" for i in range(2, 200)]


def imr_readme() -> str:
    """README.txt in the release's form: prose, then one `wnid name` line per class."""
    head = (
        "ImageNet-R(endition) contains art, cartoons, deviantart, graffiti, embroidery, graphics, origami,\n"
        "paintings, patterns, plastic objects, plush objects, sculptures, sketches, tattoos, toys, and\n"
        "video game renditions of ImageNet classes.\n\n"
        "The 200 ImageNet classes and their WordNet IDs:\n"
    )
    return head + "".join(f"{w} {n}\n" for w, n in zip(IMR_WNIDS, IMR_NAMES, strict=True))


def make_imagenet_r_release(
    root: Path, per_class: int = 2, big_classes: int = 3, readme: bool = True, n_classes: int = 200
) -> Path:
    """root/imagenet-r/<wnid>/<style>_<k>.jpg (+ README.txt) for the first `n_classes` wnids; the first
    `big_classes` classes get 10 images."""
    folder = root / "imagenet-r"
    for c, w in enumerate(IMR_WNIDS[:n_classes]):
        n = 10 if c < big_classes else per_class
        for k in range(n):
            write_image(folder / w / f"{('art', 'cartoon', 'sketch')[k % 3]}_{k}.jpg")
    if readme:
        (folder / "README.txt").write_text(imr_readme())
    return folder


# --------------------------------------------------------------------------------------- Stanford Cars

CARS_NAMES = ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"] + [
    f"Make{i} Model{i} Sedan {2000 + i % 13}" for i in range(2, 196)
]


def _annotations_mat(path: Path, entries: list[tuple[int, str]]) -> None:
    import scipy.io as sio

    fields = ["bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "fname"]
    arr = np.zeros((1, len(entries)), dtype=[(f, "O") for f in fields])
    for j, (cls, fname) in enumerate(entries):
        arr[0, j] = (
            np.array([[1]], dtype=np.uint16),
            np.array([[1]], dtype=np.uint16),
            np.array([[SIZE]], dtype=np.uint16),
            np.array([[SIZE]], dtype=np.uint16),
            np.array([[cls]], dtype=np.uint8),
            np.array([fname]),
        )
    sio.savemat(str(path), {"annotations": arr})


def make_cars_torchvision(root: Path, test_annos_in_devkit: bool = False) -> Path:
    """root/stanford_cars as torchvision's StanfordCars reads it: devkit/cars_meta.mat (class_names cell
    array), devkit/cars_train_annos.mat, cars_test_annos_withlabels.mat (struct arrays `annotations`
    with bbox_*, class 1..196, fname), cars_train/*.jpg, cars_test/*.jpg; one image per class and split."""
    import scipy.io as sio

    folder = root / "stanford_cars"
    devkit = folder / "devkit"
    devkit.mkdir(parents=True, exist_ok=True)
    names = np.empty((1, len(CARS_NAMES)), dtype=object)
    names[0, :] = CARS_NAMES
    sio.savemat(str(devkit / "cars_meta.mat"), {"class_names": names})
    for split in ("train", "test"):
        entries = []
        for c in range(len(CARS_NAMES)):
            fname = f"{c + 1:05d}.jpg"
            write_image(folder / f"cars_{split}" / fname)
            entries.append((c + 1, fname))
        if split == "train":
            _annotations_mat(devkit / "cars_train_annos.mat", entries)
        else:
            where = devkit if test_annos_in_devkit else folder
            _annotations_mat(where / "cars_test_annos_withlabels.mat", entries)
    return folder


def cars_folder_name(name: str) -> str:
    return name.replace("/", "-")


# ------------------------------------------------------------------------------------ OmniBenchmark

OMNI_FOLDERS = [f"{i}.{n}" for i, n in enumerate(["aircraft_carrier", "red_fox", "sea_anemone"], 1)] + [
    f"{i}.category_{i}" for i in range(4, 301)
]


def make_omnibenchmark(root: Path) -> Path:
    return make_split_imagefolder(root / "omnibenchmark", OMNI_FOLDERS)

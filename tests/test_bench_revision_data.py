"""imagenet_sub and ucf101: every accepted layout, names, splits, what a wrong folder says, data check."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from fakedata import make_split_imagefolder, write_image
from fakedata_revision import UCF_CAMEL, make_imagenet, make_ucf_coop, make_ucf_frames

from segpcl.benchmarks import imagenet_sub, ucf101
from segpcl.benchmarks.base import DataConfig, get_benchmark_info, pycil_class_order, task_sizes_from
from segpcl.benchmarks.check import check_benchmark
from segpcl.errors import DataError


def _build(bench, root):
    return get_benchmark_info(bench).builder(DataConfig(data_root=root, image_size=8))


# ------------------------------------------------------------------------------------------ ImageNet-Sub


def test_imagenet_sub_class_list_is_the_clip_cl_one():
    assert len(imagenet_sub.WNIDS) == 100 == len(set(imagenet_sub.WNIDS))
    assert imagenet_sub.WNIDS == sorted(imagenet_sub.WNIDS)
    assert imagenet_sub.CLASSES[0] == ("n01440764", "tench") and imagenet_sub.CLASSES[-1] == ("n01855672", "goose")
    # PyCIL's seed-1993 order over these ids is RAPF's class_orders/imagenet100.yaml
    assert pycil_class_order(100)[:10] == [68, 56, 78, 8, 23, 84, 90, 65, 74, 76]
    info = get_benchmark_info("imagenet_sub")
    assert task_sizes_from(info.n_classes, info.initial, info.increment) == [10] * 10


@pytest.mark.parametrize("val", ["sorted", "devkit", "csv"])
def test_imagenet_sub_layouts(tmp_path, val):
    folder = make_imagenet(tmp_path, val=val, per_class=(2, 1))
    b = _build("imagenet_sub", tmp_path)
    assert b.notes["root"] == str(folder)
    assert (
        b.notes["layout"]
        == {
            "sorted": imagenet_sub.SORTED,
            "devkit": imagenet_sub.FLAT_DEVKIT,
            "csv": imagenet_sub.FLAT_CSV,
        }[val]
    )
    assert b.n_classes == 100 and b.class_names[:3] == ["tench", "goldfish", "great white shark"]
    assert np.bincount(b.train_targets).tolist() == [2] * 100  # the two extra ImageNet classes are ignored
    assert np.bincount(b.test_targets, minlength=100).tolist() == [1] * 100
    for path, label in zip(b.test.all_paths(), b.test_targets, strict=True):
        if val == "sorted":
            assert f"/{imagenet_sub.WNIDS[label]}/" in path
    if val != "sorted":  # flat val: each image's label comes from the ground truth, not the file order
        assert b.test_targets.tolist() == list(range(99, -1, -1))
    x, y = b.train[0]
    assert x.shape == (3, 8, 8) and y == 0


def test_imagenet_sub_flat_val_without_ground_truth_says_what_is_missing(tmp_path):
    make_imagenet(tmp_path, val="csv")
    (tmp_path / "LOC_val_solution.csv").unlink()
    with pytest.raises(DataError, match="ILSVRC2012_devkit_t12.*ILSVRC2012_validation_ground_truth.txt.*meta.mat"):
        _build("imagenet_sub", tmp_path)


def test_imagenet_sub_wrong_folders(tmp_path):
    (tmp_path / "photos").mkdir()
    with pytest.raises(DataError) as err:
        _build("imagenet_sub", tmp_path)
    for word in ("train/<wnid>", "val/", "ILSVRC2012_devkit_t12", "photos/"):
        assert word in str(err.value)
    bad = tmp_path / "imagenet"
    write_image(bad / "train" / "n09999991" / "a.JPEG")
    (bad / "val").mkdir()
    with pytest.raises(DataError, match="none of the 100 ImageNet-Sub class folders"):
        _build("imagenet_sub", tmp_path)
    folder = make_imagenet(tmp_path / "partial")
    for w in imagenet_sub.WNIDS[5:8]:
        for f in (folder / "train" / w).iterdir():
            f.unlink()
        (folder / "train" / w).rmdir()
    with pytest.raises(DataError, match="lacks 3 of the 100 ImageNet-Sub class folders: n01496331"):
        _build("imagenet_sub", tmp_path / "partial")


def test_imagenet_sub_data_check(tmp_path):
    make_imagenet(tmp_path, val="devkit")
    rep = check_benchmark("imagenet_sub", DataConfig(data_root=tmp_path, image_size=8), progress=False)
    assert rep.ok and rep.n_classes == 100 and rep.train_images == 100 and rep.test_images == 100
    assert "ground truth" in rep.layout and "CLIP" in rep.names_source


# ------------------------------------------------------------------------------------------------ UCF101


def test_ucf_names_and_order():
    assert ucf101.ucf_class_name("ApplyEyeMakeup") == "Apply Eye Makeup"
    assert ucf101.ucf_class_name("Apply_Eye_Makeup") == "Apply Eye Makeup"
    assert ucf101.ucf_class_name("YoYo") == "Yo Yo"
    keys = sorted(["HammerThrow", "Hammering", "JumpRope", "JumpingJack", "Haircut"], key=ucf101.class_sort_key)
    assert keys == ["Haircut", "Hammering", "HammerThrow", "JumpingJack", "JumpRope"]  # classInd.txt's order
    info = get_benchmark_info("ucf101")
    sizes = task_sizes_from(info.n_classes, info.initial, info.increment)
    assert sizes == [11] + [10] * 9 and len(sizes) == 10


def test_ucf_coop_layout(tmp_path):
    folder = make_ucf_coop(tmp_path, per_split=(2, 1, 1))
    for where in (tmp_path, folder):
        b = _build("ucf101", where)
        assert b.notes["layout"] == ucf101.COOP
    assert b.n_classes == 101 and b.class_names[:3] == ["Apply Eye Makeup", "Apply Lipstick", "Archery"]
    assert np.bincount(b.train_targets).tolist() == [3] * 101  # CoOp's train + val
    assert np.bincount(b.test_targets).tolist() == [1] * 101
    assert "UCF-101-midframes/Apply_Eye_Makeup/" in b.train.path(0)
    assert b.templates[0] == "a photo of a person doing {}."


def test_ucf_frames_and_presplit_give_the_coop_ids(tmp_path):
    coop = _build("ucf101", make_ucf_coop(tmp_path / "a"))
    frames = _build("ucf101", make_ucf_frames(tmp_path / "b"))
    assert frames.notes["layout"] == ucf101.FRAMES
    assert frames.class_names == coop.class_names
    assert np.bincount(frames.train_targets).tolist() == [2] * 101  # groups 8, 9
    assert all("_g01_" in p or "_g02_" in p for p in frames.test.all_paths())  # groups 1-7 are test
    pre = make_split_imagefolder(tmp_path / "c" / "ucf101", UCF_CAMEL)
    presplit = _build("ucf101", pre.parent)
    assert presplit.notes["layout"] == ucf101.PRESPLIT and presplit.class_names == coop.class_names


def test_ucf_wrong_and_incomplete_folders(tmp_path):
    (tmp_path / "videos").mkdir()
    with pytest.raises(DataError) as err:
        _build("ucf101", tmp_path)
    for word in ("UCF-101-midframes", "split_zhou_UCF101.json", "{train,test}", "videos/"):
        assert word in str(err.value)
    folder = make_ucf_coop(tmp_path / "x")
    (folder / "split_zhou_UCF101.json").rename(folder / "other.json")
    for f in (folder / "UCF-101-midframes").rglob("*.jpg"):
        f.rename(f.with_name("frame.jpg"))  # no video name: no official split either
    with pytest.raises(DataError, match="no split_zhou_UCF101.json"):
        _build("ucf101", tmp_path / "x")
    (folder / "other.json").rename(folder / "split_zhou_UCF101.json")
    import shutil

    shutil.rmtree(folder / "UCF-101-midframes")
    with pytest.raises(DataError, match="no UCF-101-midframes/ folder"):
        _build("ucf101", tmp_path / "x")


def test_ucf_data_check(tmp_path):
    make_ucf_coop(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rep = check_benchmark("ucf101", DataConfig(data_root=tmp_path, image_size=8), progress=False)
    assert rep.ok and rep.n_classes == 101 and rep.test_images == 101 and "split_zhou" in rep.layout

"""cars196: torchvision's StanfordCars layout (.mat devkit files) and a pre-split ImageFolder."""

from __future__ import annotations

import numpy as np
import pytest
from fakedata import CARS_NAMES, cars_folder_name, corrupt, make_cars_torchvision, make_split_imagefolder

from segpcl.benchmarks import cars196
from segpcl.benchmarks._files import UnreadableImageWarning
from segpcl.benchmarks.base import BAD_LABEL, DataConfig, TaskStream, pycil_class_order, task_sizes_from
from segpcl.errors import DataError


@pytest.fixture(scope="module")
def tv_root(tmp_path_factory):
    d = tmp_path_factory.mktemp("cars")
    make_cars_torchvision(d)
    return d


def test_fake_is_what_torchvision_reads(tv_root):
    from torchvision.datasets import StanfordCars

    tv = StanfordCars(str(tv_root), split="test")
    b = cars196.build_cars196(DataConfig(data_root=tv_root))
    assert tv.classes == b.class_names
    assert [t for _, t in tv._samples] == b.test_targets.tolist()
    assert [p for p, _ in tv._samples] == b.test.all_paths()


def test_torchvision_layout(tv_root):
    for where in (tv_root, tv_root / "stanford_cars"):
        b = cars196.build_cars196(DataConfig(data_root=where, image_size=8))
        assert b.notes["layout"] == cars196.TORCHVISION
    assert b.n_classes == 196 and b.class_names[0] == "AM General Hummer SUV 2000"
    assert b.train_targets.tolist() == list(range(196)) and len(b.test) == 196
    x, y = b.train[7]
    assert x.shape == (3, 8, 8) and y == 7
    assert any("type of car" in t for t in b.templates)
    stream = TaskStream(b, pycil_class_order(196), task_sizes_from(196, 20, 20))
    assert stream.task_sizes == [20] * 9 + [16]


def test_test_annotations_inside_devkit(tmp_path):
    make_cars_torchvision(tmp_path, test_annos_in_devkit=True)
    b = cars196.build_cars196(DataConfig(data_root=tmp_path))
    assert len(b.test) == 196


def test_imagefolder_layout_and_determinism(tmp_path):
    folder = make_split_imagefolder(tmp_path / "cars196", [cars_folder_name(n) for n in CARS_NAMES])
    a = cars196.build_cars196(DataConfig(data_root=tmp_path))
    b = cars196.build_cars196(DataConfig(data_root=folder))
    assert a.notes["layout"] == cars196.SPLIT and set(a.class_names) == set(CARS_NAMES)
    assert a.train.all_paths() == b.train.all_paths() and (a.test_targets == b.test_targets).all()
    assert np.bincount(a.train_targets).tolist() == [1] * 196


def test_wrong_and_incomplete_layouts(tmp_path):
    (tmp_path / "cars_photos").mkdir()
    with pytest.raises(DataError) as err:
        cars196.build_cars196(DataConfig(data_root=tmp_path))
    msg = str(err.value)
    for word in (
        "stanford_cars",
        "cars_meta.mat",
        "cars_test_annos_withlabels.mat",
        "{train,test}",
        "cars_photos/",
    ):
        assert word in msg
    folder = make_cars_torchvision(tmp_path)
    (folder / "cars_test_annos_withlabels.mat").rename(folder / "devkit" / "cars_test_annos.mat")
    with pytest.raises(DataError, match="cars_test_annos.mat has no labels"):
        cars196.build_cars196(DataConfig(data_root=tmp_path))


def test_corrupt_image(tmp_path):
    folder = make_cars_torchvision(tmp_path)
    corrupt(folder / "cars_train" / "00010.jpg")
    b = cars196.build_cars196(DataConfig(data_root=tmp_path, image_size=8))
    with pytest.warns(UnreadableImageWarning, match="00010.jpg"):
        assert b.train[9][1] == BAD_LABEL
    s = cars196.build_cars196(DataConfig(data_root=tmp_path, image_size=8, strict=True))
    with pytest.raises(DataError, match="00010.jpg"):
        s.train[9]

"""omnibenchmark: the LAMDA 300-class pre-split ImageFolder; names cleaned; duplicate names warned."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from fakedata import OMNI_FOLDERS, corrupt, make_omnibenchmark, make_split_imagefolder

from segpcl.benchmarks import omnibenchmark
from segpcl.benchmarks._files import DataWarning, UnreadableImageWarning
from segpcl.benchmarks.base import BAD_LABEL, DataConfig
from segpcl.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    d = tmp_path_factory.mktemp("omni")
    make_omnibenchmark(d)
    return d


def test_layout_and_names(root):
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        b = omnibenchmark.build_omnibenchmark(DataConfig(data_root=root, image_size=8))
    assert b.notes["layout"] == omnibenchmark.SPLIT and b.n_classes == 300
    assert b.class_names[0] == "aircraft carrier"  # `1.aircraft_carrier`
    assert "red fox" in b.class_names and "sea anemone" in b.class_names
    assert np.bincount(b.train_targets).tolist() == [1] * 300
    assert sorted(OMNI_FOLDERS) == [p.split("/")[-2] for p in b.train.all_paths()]
    x, y = b.test[0]
    assert x.shape == (3, 8, 8) and y == 0


def test_deterministic(root):
    a = omnibenchmark.build_omnibenchmark(DataConfig(data_root=root / "omnibenchmark"))
    b = omnibenchmark.build_omnibenchmark(DataConfig(data_root=root))
    assert a.train.all_paths() == b.train.all_paths() and (a.test_targets == b.test_targets).all()


@pytest.mark.filterwarnings("ignore:.*the benchmark has 300")
def test_duplicate_names_are_warned(tmp_path):
    make_split_imagefolder(tmp_path / "omnibenchmark", ["1.crane", "2.crane", "3.heron"])
    with pytest.warns(DataWarning, match="'crane'"):
        b = omnibenchmark.build_omnibenchmark(DataConfig(data_root=tmp_path))
    assert b.class_names == ["crane", "crane", "heron"]


def test_wrong_layout(tmp_path):
    (tmp_path / "omnibenchmark").mkdir()
    (tmp_path / "omnibenchmark" / "train").mkdir()
    with pytest.raises(DataError) as err:
        omnibenchmark.build_omnibenchmark(DataConfig(data_root=tmp_path))
    assert "{train,test}/<class folder>" in str(err.value) and "omnibenchmark/" in str(err.value)


def test_test_class_unknown_to_train_is_an_error(tmp_path):
    folder = make_split_imagefolder(tmp_path / "omnibenchmark", ["1.a", "2.b"])
    (folder / "test" / "3.c").mkdir()
    with pytest.raises(DataError, match="3.c"):
        omnibenchmark.build_omnibenchmark(DataConfig(data_root=tmp_path))


def test_corrupt_image(tmp_path):
    folder = make_split_imagefolder(tmp_path / "omnibenchmark", ["1.a", "2.b"], per_split=(2, 1))
    bad = corrupt(folder / "train" / "2.b" / "train_1.jpg")
    with pytest.warns(DataWarning, match="found 2 classes"):
        b = omnibenchmark.build_omnibenchmark(DataConfig(data_root=tmp_path, image_size=8))
    i = b.train.all_paths().index(str(bad))
    with pytest.warns(UnreadableImageWarning):
        assert b.train[i][1] == BAD_LABEL
    assert b.train[i - 1][1] == 1
    with pytest.warns(DataWarning):
        s = omnibenchmark.build_omnibenchmark(DataConfig(data_root=tmp_path, strict=True))
    with pytest.raises(DataError, match="train_1.jpg"):
        s.train[i]

"""cub200: the official CUB_200_2011/ metadata layout and a pre-split {train,test}/<class>/ folder."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from fakedata import CUB_FOLDERS, corrupt, make_cub_official, make_split_imagefolder

from segpcl.benchmarks import cub200
from segpcl.benchmarks._files import UnreadableImageWarning
from segpcl.benchmarks.base import BAD_LABEL, DataConfig
from segpcl.benchmarks.check import check_benchmark
from segpcl.errors import DataError


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    d = tmp_path_factory.mktemp("cubo")
    make_cub_official(d)
    return d


@pytest.fixture(scope="module")
def presplit(tmp_path_factory):
    d = tmp_path_factory.mktemp("cubs")
    return make_split_imagefolder(d / "cub", CUB_FOLDERS)


def test_official_layout(official):
    for where in (official, official / "CUB_200_2011"):
        b = cub200.build_cub200(DataConfig(data_root=where, image_size=8))
        assert b.notes["layout"] == cub200.OFFICIAL
    assert b.n_classes == 200
    assert b.class_names[:2] == ["Black footed Albatross", "Laysan Albatross"]
    assert len(b.train) == 200 and len(b.test) == 200  # train_test_split.txt: first image of a class trains
    assert b.train_targets.tolist() == list(range(200)) and b.test_targets.tolist() == list(range(200))
    assert "001.Black_footed_Albatross" in b.train.path(0)
    x, y = b.train[1]
    assert x.shape == (3, 8, 8) and y == 1
    assert any("type of bird" in t for t in b.templates)


def test_presplit_layout_matches_official_names(presplit, official):
    b = cub200.build_cub200(DataConfig(data_root=presplit.parent, image_size=8))
    o = cub200.build_cub200(DataConfig(data_root=official, image_size=8))
    assert b.notes["layout"] == cub200.SPLIT and b.class_names == o.class_names
    assert np.bincount(b.test_targets).tolist() == [1] * 200


def test_deterministic(official):
    a = cub200.build_cub200(DataConfig(data_root=official))
    b = cub200.build_cub200(DataConfig(data_root=official))
    assert a.train.all_paths() == b.train.all_paths() and (a.test_targets == b.test_targets).all()


def test_wrong_and_incomplete_layouts(tmp_path, official):
    (tmp_path / "birds").mkdir()
    with pytest.raises(DataError) as err:
        cub200.build_cub200(DataConfig(data_root=tmp_path))
    msg = str(err.value)
    for word in (
        "CUB_200_2011",
        "images.txt",
        "classes.txt",
        "train_test_split.txt",
        "{train,test}",
        "birds/",
    ):
        assert word in msg
    part = tmp_path / "CUB_200_2011"
    part.mkdir()
    (part / "classes.txt").write_text((official / "CUB_200_2011" / "classes.txt").read_text())
    with pytest.raises(DataError, match="lacks images.txt, image_class_labels.txt, train_test_split.txt, images/"):
        cub200.build_cub200(DataConfig(data_root=tmp_path))


def test_bad_metadata_line(tmp_path):
    folder = make_cub_official(tmp_path, per_class=1)
    (folder / "image_class_labels.txt").write_text("1 1\nnonsense\n")
    with pytest.raises(DataError, match=r"image_class_labels.txt line 2 reads 'nonsense'"):
        cub200.build_cub200(DataConfig(data_root=tmp_path))


def test_corrupt_image_skipped_counted_or_strict(tmp_path):
    folder = make_cub_official(tmp_path, per_class=1)
    bad = sorted((folder / "images" / CUB_FOLDERS[3]).iterdir())[0]
    corrupt(bad)
    b = cub200.build_cub200(DataConfig(data_root=tmp_path, image_size=8))
    with pytest.warns(UnreadableImageWarning, match="segpcl data check --bench cub200"):
        x, y = b.train[3]
    assert y == BAD_LABEL and float(x.abs().sum()) == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rep = check_benchmark("cub200", DataConfig(data_root=tmp_path, image_size=8), progress=False)
    assert [p for p, _ in rep.unreadable] == [str(bad)] and not rep.ok
    strict = cub200.build_cub200(DataConfig(data_root=tmp_path, image_size=8, strict=True))
    with pytest.raises(DataError, match=str(bad)):
        strict.train[3]

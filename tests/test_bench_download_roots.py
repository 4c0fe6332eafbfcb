"""Data roots as downloads leave them: pointed at the folder a download created, segpcl finds the data inside it
(Kaggle's ImageNet, CoOp's $DATA, Kaggle's Stanford Cars), and says where it looked when it finds nothing."""

from __future__ import annotations

import shutil

import pytest
from fakedata import make_imagenet_r_release, make_split_imagefolder
from fakedata_revision import make_imagenet

from segpcl.benchmarks import cars196, imagenet_r, imagenet_sub
from segpcl.benchmarks.base import DataConfig
from segpcl.errors import DataError

KAGGLE = "imagenet-object-localization-challenge"


@pytest.fixture(scope="module")
def kaggle(tmp_path_factory):
    """<d>/imagenet-object-localization-challenge/: ILSVRC/Data/CLS-LOC/{train,val (flat)} and
    LOC_val_solution.csv + LOC_synset_mapping.txt at its top, as the Kaggle download unpacks."""
    d = tmp_path_factory.mktemp("kaggle")
    made = make_imagenet(d / "made", val="csv")
    top = d / KAGGLE
    (top / "ILSVRC" / "Data").mkdir(parents=True)
    shutil.move(str(made), str(top / "ILSVRC" / "Data" / "CLS-LOC"))
    shutil.move(str(d / "made" / "LOC_val_solution.csv"), str(top / "LOC_val_solution.csv"))
    (top / "LOC_synset_mapping.txt").write_text("n01440764 tench, Tinca tinca\n")
    return d


@pytest.mark.parametrize("where", ["top", "parent"])
def test_kaggle_imagenet_from_its_download_folder(kaggle, where):
    root = kaggle / KAGGLE if where == "top" else kaggle
    folder, layout = imagenet_sub.LOCATOR.require(DataConfig(data_root=root))
    assert folder == kaggle / KAGGLE / "ILSVRC" / "Data" / "CLS-LOC" and layout == imagenet_sub.FLAT_CSV
    b = imagenet_sub.build_imagenet_sub(DataConfig(data_root=root, image_size=8))
    assert (
        b.n_classes == 100 and len(b.test_targets) == 100 and b.notes["ground_truth"].endswith("LOC_val_solution.csv")
    )


@pytest.mark.parametrize("where", ["DATA", "DATA/imagenet"])
def test_coop_imagenet_from_data_or_imagenet(tmp_path, where):
    made = make_imagenet(tmp_path / "made")  # train/ + sorted val/
    data = tmp_path / "DATA"
    (data / "imagenet").mkdir(parents=True)
    shutil.move(str(made), str(data / "imagenet" / "images"))
    (data / "imagenet" / "classnames.txt").write_text("n01440764 tench\n")
    root = data if where == "DATA" else data / "imagenet"
    folder, layout = imagenet_sub.LOCATOR.require(DataConfig(data_root=root))
    assert folder == data / "imagenet" / "images" and layout == imagenet_sub.SORTED


def test_coop_imagenet_r_from_data(tmp_path):
    release = make_imagenet_r_release(tmp_path / "made", n_classes=3)
    (tmp_path / "DATA" / "imagenet-rendition").mkdir(parents=True)
    shutil.move(str(release), str(tmp_path / "DATA" / "imagenet-rendition" / "imagenet-r"))
    folder, layout = imagenet_r.LOCATOR.require(DataConfig(data_root=tmp_path / "DATA"))
    assert folder == tmp_path / "DATA" / "imagenet-rendition" / "imagenet-r" and layout == imagenet_r.RELEASE


def test_kaggle_cars_by_classes_folder(tmp_path):
    top = tmp_path / "stanford-car-dataset-by-classes-folder"
    make_split_imagefolder(top / "car_data" / "car_data", ["AM General Hummer SUV 2000", "Acura RL Sedan 2012"])
    for root in (top, tmp_path):
        folder, layout = cars196.LOCATOR.require(DataConfig(data_root=root))
        assert folder == top / "car_data" / "car_data" and layout == cars196.SPLIT


def test_nothing_found_says_where_it_looked(tmp_path):
    (tmp_path / KAGGLE / "ILSVRC").mkdir(parents=True)  # an unfinished download
    with pytest.raises(DataError) as err:
        imagenet_sub.build_imagenet_sub(DataConfig(data_root=tmp_path))
    msg = str(err.value)
    assert "ILSVRC/Data/CLS-LOC/ (Kaggle's imagenet-object-localization-challenge)" in msg
    assert "images/ (CoOp's $DATA/imagenet)" in msg and "imagenet, ILSVRC2012" in msg and "\n" not in msg

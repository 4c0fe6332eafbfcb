"""cifar100: torchvision's cifar-100-python/ pickles, names from `meta`, --download through torchvision."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from fakedata import CIFAR_NAMES, make_cifar100

from segpcl.benchmarks import cifar100
from segpcl.benchmarks.base import DataConfig, TaskStream, pycil_class_order, task_sizes_from
from segpcl.errors import DataError


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    d = tmp_path_factory.mktemp("cifar")
    make_cifar100(d)
    return d


def test_layout_names_and_targets(root):
    for where in (root, root / "cifar-100-python"):  # a parent or the folder itself
        b = cifar100.build_cifar100(DataConfig(data_root=where, image_size=16))
        assert b.notes["layout"] == "torchvision cifar-100-python"
        assert b.n_classes == 100 and b.class_names[:2] == ["apple", "aquarium fish"]
        assert len(b.train) == 200 and len(b.test) == 100
        assert np.bincount(b.train_targets, minlength=100).tolist() == [2] * 100
    x, y = b.test[3]
    assert x.shape == (3, 16, 16) and 0 <= x.min() and x.max() <= 1 and y == b.test_targets[3]
    assert cifar100.LOCATOR.is_present(root) and not cifar100.LOCATOR.is_present(root / "cifar-100-python" / "meta")


def test_deterministic_and_streams(root):
    a = cifar100.build_cifar100(DataConfig(data_root=root, image_size=8))
    b = cifar100.build_cifar100(DataConfig(data_root=root, image_size=8))
    assert (a.train_targets == b.train_targets).all() and (a.test[5][0] == b.test[5][0]).all()
    stream = TaskStream(a, pycil_class_order(100), task_sizes_from(100, 10, 10))
    assert stream.n_tasks == 10 and len(stream.train_set(0)) == 20


def test_names_and_templates_overrides(root, tmp_path):
    f = tmp_path / "names.txt"
    f.write_text("".join(f"{i} class number {i}\n" for i in range(100)))
    t = tmp_path / "templates.txt"
    t.write_text("a tiny photo of a {}.\n")
    b = cifar100.build_cifar100(DataConfig(data_root=root, class_names_file=f, templates_file=t))
    assert b.class_names[7] == "class number 7" and "--class-names" in b.notes["names_source"]
    assert b.templates == ["a tiny photo of a {}."]


def test_in_memory_dataset_pickles_for_workers(root):
    b = cifar100.build_cifar100(DataConfig(data_root=root, image_size=8))
    clone = pickle.loads(pickle.dumps(b.train))
    assert (clone[3][0] == b.train[3][0]).all() and clone[3][1] == b.train[3][1]


def test_wrong_layout_says_what_is_expected(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(DataError) as err:
        cifar100.build_cifar100(DataConfig(data_root=tmp_path))
    msg = str(err.value)
    assert "cifar-100-python" in msg and "train, test and meta" in msg and "--download" in msg
    assert "stuff/" in msg  # what was found instead
    half = tmp_path / "cifar-100-python"
    half.mkdir()
    (half / "train").write_bytes(b"x")
    with pytest.raises(DataError, match="lacks test, meta"):
        cifar100.build_cifar100(DataConfig(data_root=tmp_path))


def test_corrupt_pickle_is_a_data_error(tmp_path):
    folder = make_cifar100(tmp_path)
    (folder / "test").write_bytes((folder / "test").read_bytes()[:500])  # truncated download
    with pytest.raises(DataError, match="not a readable CIFAR-100 pickle.*--download"):
        cifar100.build_cifar100(DataConfig(data_root=tmp_path))


def test_download_goes_through_torchvision(tmp_path, monkeypatch):
    calls = []

    class FakeCIFAR100:
        def __init__(self, root, train=True, download=False):
            calls.append((root, download))
            make_cifar100(tmp_path / "dl")

    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR100", FakeCIFAR100)
    b = cifar100.build_cifar100(DataConfig(data_root=tmp_path / "dl", download=True, image_size=8))
    assert calls == [(str(tmp_path / "dl"), True)] and b.n_classes == 100
    cifar100.build_cifar100(DataConfig(data_root=tmp_path / "dl", download=True))
    assert len(calls) == 1  # present now: no second download
    assert len(CIFAR_NAMES) == 100

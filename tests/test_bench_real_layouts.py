"""Data-set checks found wrong on real layouts: OmniBenchmark's bare-id class folders, a pre-split folder with
more classes than its benchmark, and Stanford Cars' all-in-one release (car_ims/ + cars_annos.mat)."""

from __future__ import annotations

import numpy as np
import pytest
from fakedata import CARS_NAMES, SIZE, make_split_imagefolder, write_image

from segpcl.benchmarks import cars196, cub200, omnibenchmark
from segpcl.benchmarks.base import DataConfig
from segpcl.errors import DataError

BARE = [str(i) for i in range(300)]


@pytest.fixture(scope="module")
def bare_root(tmp_path_factory):
    d = tmp_path_factory.mktemp("omni_bare")
    make_split_imagefolder(d / "omnibenchmark", BARE)
    return d


def test_omnibenchmark_bare_ids_need_class_names(bare_root):
    with pytest.raises(DataError, match="bare ids") as err:
        omnibenchmark.build_omnibenchmark(DataConfig(data_root=bare_root))
    assert "--class-names" in str(err.value) and "a photo of a" in str(err.value)


def test_omnibenchmark_bare_ids_with_class_names_file(bare_root, tmp_path):
    names = tmp_path / "omni_names.txt"
    # `id name` with the id = the folder name; folders sort as strings ("0", "1", "10", "100", ...)
    names.write_text("".join(f"{i} thing number {i}\n" for i in range(300)))
    b = omnibenchmark.build_omnibenchmark(DataConfig(data_root=bare_root, class_names_file=names))
    assert b.n_classes == 300
    folder_of = [p.split("/")[-2] for p in b.train.all_paths()]
    for path_folder, label in zip(folder_of, b.train_targets.tolist(), strict=True):
        assert b.class_names[label] == f"thing number {path_folder}"


def test_more_classes_than_the_benchmark_is_an_error(tmp_path):
    make_split_imagefolder(tmp_path / "cub200", [f"{i:03d}.bird_{i}" for i in range(1, 301)])
    with pytest.raises(DataError, match="found 300 classes .* the benchmark has 200"):
        cub200.build_cub200(DataConfig(data_root=tmp_path))


def _cars_all_in_one(root):
    import scipy.io as sio

    folder = root / "stanford_cars"
    fields = ["relative_im_path", "bbox_x1", "bbox_y1", "bbox_x2", "bbox_y2", "class", "test"]
    entries = []
    for c in range(len(CARS_NAMES)):
        for test in (0, 1):
            entries.append((f"car_ims/{len(entries) + 1:06d}.jpg", c + 1, test))
    arr = np.zeros((1, len(entries)), dtype=[(f, "O") for f in fields])
    for j, (rel, cls, test) in enumerate(entries):
        write_image(folder / rel)
        one = np.array([[1]], dtype=np.uint16)
        arr[0, j] = (
            np.array([rel]),
            one,
            one,
            np.array([[SIZE]]),
            np.array([[SIZE]]),
            np.array([[cls]]),
            np.array([[test]]),
        )
    names = np.empty((1, len(CARS_NAMES)), dtype=object)
    names[0, :] = CARS_NAMES
    sio.savemat(str(folder / "cars_annos.mat"), {"annotations": arr, "class_names": names})
    return folder, entries


def test_cars_all_in_one_release(tmp_path):
    folder, entries = _cars_all_in_one(tmp_path)
    b = cars196.build_cars196(DataConfig(data_root=tmp_path, image_size=8))
    assert b.notes["layout"] == cars196.ALL_IN_ONE and b.class_names == CARS_NAMES
    assert len(b.train) == len(b.test) == 196
    assert b.train.all_paths()[0] == str(folder / entries[0][0]) and b.train_targets[0] == 0
    assert b.test.all_paths()[-1] == str(folder / entries[-1][0]) and b.test_targets[-1] == 195
    x, y = b.train[5]
    assert x.shape == (3, 8, 8) and y == 5
    assert cars196.build_cars196(DataConfig(data_root=folder)).notes["layout"] == cars196.ALL_IN_ONE

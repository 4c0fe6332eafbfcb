"""`segpcl data check` / `segpcl benches --data-root` machinery: layout, counts, unreadable files,
throughput through DataLoader workers, and the status of every benchmark under a data root."""

from __future__ import annotations

import pytest
from fakedata import (
    corrupt,
    make_cars_torchvision,
    make_cifar100,
    make_cub_official,
    make_imagenet_r_release,
    make_omnibenchmark,
    make_split_imagefolder,
    truncate,
    write_image,
)

from segpcl.benchmarks.base import DataConfig
from segpcl.benchmarks.check import benchmark_status, check_benchmark, check_folder
from segpcl.errors import DataError


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """One data root holding every data set under its conventional folder name."""
    d = tmp_path_factory.mktemp("all")
    make_cifar100(d)
    make_cub_official(d, per_class=2)
    make_imagenet_r_release(d)
    make_cars_torchvision(d)
    make_omnibenchmark(d)
    return d


def test_status_finds_every_data_set_under_one_root(data_root):
    rows = {info.name: (present, detail) for info, present, detail in benchmark_status(data_root)}
    expected = {
        "cifar100": "cifar-100-python",
        "cub200": "CUB_200_2011",
        "imagenet_r": "imagenet-r",
        "cars196": "stanford_cars",
        "omnibenchmark": "omnibenchmark",
    }
    for name, folder in expected.items():
        present, detail = rows[name]
        assert present and str(data_root / folder) in detail, (name, detail)
    assert rows["toy"][0]


def test_status_of_an_empty_root_and_no_root(tmp_path):
    rows = benchmark_status(tmp_path)
    assert all(present == (not info.needs_data) for info, present, _ in rows)
    cub = next(d for i, _, d in rows if i.name == "cub200")
    assert "CUB_200_2011" in cub
    rows = benchmark_status(None)
    assert all("--data-root" in d for i, _, d in rows if i.needs_data)


@pytest.mark.parametrize("bench", ["cifar100", "cub200", "imagenet_r", "cars196", "omnibenchmark"])
def test_check_counts_classes_and_images(data_root, bench):
    rep = check_benchmark(bench, DataConfig(data_root=data_root, image_size=8), progress=False)
    assert rep.ok and not rep.unreadable and rep.n_classes == rep.expected_classes
    assert rep.train_images > 0 and rep.test_images > 0
    if bench == "cifar100":
        assert rep.decoded_images == 0
    else:
        assert rep.decoded_images == rep.train_images + rep.test_images
    table = rep.format_table()
    assert bench in table and "OK" in table and rep.layout in table


def test_check_lists_unreadable_files_and_measures_speed(tmp_path):
    folder = make_split_imagefolder(tmp_path / "cub", ["001.A_bird", "002.B_bird"], per_split=(3, 1))
    bad = corrupt(folder / "train" / "001.A_bird" / "train_1.jpg")
    cut = truncate(folder / "test" / "002.B_bird" / "test_0.jpg")
    rep = check_benchmark(
        "cub200",
        DataConfig(data_root=tmp_path, image_size=8),
        speed=True,
        workers=1,
        speed_images=6,
        progress=False,
    )
    assert not rep.ok
    assert sorted(p for p, _ in rep.unreadable) == sorted([str(bad), str(cut)])
    assert rep.test_empty_classes == []
    assert rep.workers == 1 and rep.images_per_s > 0 and rep.speed_images >= 1
    table = rep.format_table()
    assert str(bad) in table and "images/s with 1 DataLoader workers" in table and "PROBLEMS" in table
    assert any("found 2 classes" in w for w in rep.warnings)


def test_check_wrong_layout_raises_precise_error(tmp_path):
    (tmp_path / "CUB_200_2011").mkdir()
    (tmp_path / "CUB_200_2011" / "images").mkdir()
    with pytest.raises(DataError, match="lacks images.txt, classes.txt"):
        check_benchmark("cub200", DataConfig(data_root=tmp_path), progress=False)


def test_check_folder_for_zero_shot_sets(tmp_path):
    for cls in ("apple_pie", "waffles"):
        write_image(tmp_path / "food" / cls / "0.jpg")
    corrupt(write_image(tmp_path / "food" / "waffles" / "1.jpg"))
    rep = check_folder(tmp_path / "food", image_size=8, progress=False)
    assert rep.class_names == ["apple pie", "waffles"] and rep.test_images == 3
    assert len(rep.unreadable) == 1 and not rep.ok


def test_cli_data_check_and_benches(data_root, tmp_path):
    from click.testing import CliRunner

    from segpcl.cli import main

    ok = CliRunner().invoke(main, ["data", "check", "--bench", "cub200", "--data-root", str(data_root)])
    assert ok.exit_code == 0, ok.output
    assert "cub200" in ok.output
    wrong = CliRunner().invoke(main, ["data", "check", "--bench", "cars196", "--data-root", str(tmp_path)])
    assert wrong.exit_code == 2 and "error:" in wrong.output and "Traceback" not in wrong.output
    neither = CliRunner().invoke(main, ["data", "check"])
    assert neither.exit_code == 2 and "--folder" in neither.output
    listing = CliRunner().invoke(main, ["benches", "--data-root", str(data_root)])
    assert listing.exit_code == 0
    rows = [line.split() for line in listing.output.splitlines()[1:] if line[:1].isalpha()]
    not_here = ("imagenet_sub", "ucf101", "folder")  # not faked here; a root of named data sets is no ImageFolder
    assert all(r[3] in ("ready", "built-in") for r in rows if r[0] not in not_here)
    assert {r[0]: r[3] for r in rows}["folder"] == "missing"
    assert {r[0]: r[3] for r in rows}["ucf101"] == "missing"

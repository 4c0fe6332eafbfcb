"""End to end: `segpcl train --bench imagenet_r --data-root FAKE` with a tiny model, through the CLI:
the layout is read, the derived split lands in the run directory, a corrupt image is skipped and counted.
(40 of the 200 classes keep it quick; the builder accepts that with a warning.)"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from fakedata import IMR_WNIDS, corrupt, make_imagenet_r_release

from segpcl.benchmarks._files import UnreadableImageWarning
from segpcl.benchmarks.imagenet_r import SPLIT_FILE, split_release


def _tiny_sets(extra: dict) -> list[str]:
    """`--set` options for a quick CPU run with the tiny model, whatever the benchmark's preset says."""
    sets = {
        "model.arch": "tiny",
        "model.pretrained": "null",
        "model.precision": "fp32",
        "train.device": "cpu",
        "train.epochs": 1,
        "data.num_workers": 0,
        **extra,
    }
    return [arg for k, v in sets.items() for arg in ("--set", f"{k}={v}")]


@pytest.mark.filterwarnings("ignore:.*found 40 classes")
def test_train_on_a_fake_imagenet_r(tmp_path):
    from segpcl.cli import main

    folder = make_imagenet_r_release(tmp_path / "data", per_class=2, big_classes=1, n_classes=40)
    _, entries = split_release(folder, seed=0)  # the split the run will derive (train.seed 0)
    first = {split: next(p for s, p in entries if s == split) for split in ("train", "test")}
    for rel in first.values():  # one train and one test image of class 0 (10 images)
        corrupt(folder / rel)
    out = tmp_path / "run"
    args = [
        "train",
        "--bench",
        "imagenet_r",
        "--data-root",
        str(tmp_path / "data"),
        "--out",
        str(out),
        "--quiet",
    ]
    args += _tiny_sets({"data.initial": 20, "data.increment": 20, "method.k_seed": 16, "method.pgd_steps": 2})
    with pytest.warns(UnreadableImageWarning):
        result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bench"] == "imagenet_r" and metrics["task_sizes"] == [20, 20]
    assert metrics["tasks_completed"] == 2
    assert metrics["skipped_images"] == {"train": 1, "test": 1}
    split = (out / SPLIT_FILE).read_text()
    assert first["train"] in split and "# root:" in split and IMR_WNIDS[0] in first["test"]


@pytest.mark.parametrize("bench", ["cifar100", "cub200", "cars196", "omnibenchmark"])
def test_train_two_tasks_on_each_fake_layout(tmp_path, bench):
    """`segpcl train --bench NAME --data-root FAKE` runs two tasks end to end on every other benchmark."""
    import fakedata

    from segpcl.benchmarks.base import get_benchmark_info
    from segpcl.cli import main

    make = {
        "cifar100": fakedata.make_cifar100,
        "cub200": fakedata.make_cub_official,
        "cars196": fakedata.make_cars_torchvision,
        "omnibenchmark": fakedata.make_omnibenchmark,
    }[bench]
    make(tmp_path / "data")
    n = get_benchmark_info(bench).n_classes
    sizes = [n // 2, n - n // 2]
    out = tmp_path / "run"
    args = ["train", "--bench", bench, "--data-root", str(tmp_path / "data"), "--out", str(out), "--quiet"]
    args += _tiny_sets(
        {
            "data.task_sizes": f"[{sizes[0]},{sizes[1]}]",
            "method.k_seed": 8,
            "method.seed_mode": "global",
            "method.pgd_steps": 1,
        }
    )
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bench"] == bench and metrics["task_sizes"] == sizes
    assert metrics["tasks_completed"] == 2 and len(metrics["accuracy_matrix"][1]) == 2
    assert metrics["task_info"][1]["anchors"] == 8

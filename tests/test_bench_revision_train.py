"""`segpcl train --bench imagenet_sub|ucf101` runs two tasks with the tiny model on a fake copy of every accepted
layout, through the CLI (the benchmarks' own presets hold the revision protocol; the tiny-model --set options
override the model and the costs, and the assertions do not depend on the method's keys)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from fakedata import make_split_imagefolder
from fakedata_revision import UCF_CAMEL, make_imagenet, make_ucf_coop, make_ucf_frames
from test_bench_train import _tiny_sets

LAYOUTS = {
    "imagenet_sub/sorted": lambda root: make_imagenet(root, "sorted"),
    "imagenet_sub/devkit": lambda root: make_imagenet(root, "devkit"),
    "imagenet_sub/csv": lambda root: make_imagenet(root, "csv"),
    "ucf101/coop": make_ucf_coop,
    "ucf101/frames": make_ucf_frames,
    "ucf101/presplit": lambda root: make_split_imagefolder(root / "ucf101", UCF_CAMEL),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_train_two_tasks_on_each_fake_layout(tmp_path, layout):
    from segpcl.cli import main

    bench = layout.split("/")[0]
    LAYOUTS[layout](tmp_path / "data")
    n = {"imagenet_sub": 100, "ucf101": 101}[bench]
    sizes = [n // 2, n - n // 2]
    out = tmp_path / "run"
    args = ["train", "--bench", bench, "--data-root", str(tmp_path / "data"), "--out", str(out), "--quiet"]
    args += _tiny_sets(
        {
            "data.task_sizes": f"[{sizes[0]},{sizes[1]}]",
            "train.batch_size": 32,
            "method.k_seed": 1,
            "method.pgd_steps": 1,
        }
    )
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["bench"] == bench and metrics["task_sizes"] == sizes
    assert metrics["tasks_completed"] == 2 and len(metrics["accuracy_matrix"][1]) == 2
    assert "fwt" in metrics and len(metrics["zero_shot_task_accuracy"]) == 2


def test_wrong_folder_data_check_says_what_is_missing(tmp_path):
    from segpcl.cli import main

    (tmp_path / "imagenet" / "train").mkdir(parents=True)
    (tmp_path / "imagenet" / "val").mkdir()
    result = CliRunner().invoke(main, ["data", "check", "--bench", "imagenet_sub", "--data-root", str(tmp_path)])
    assert result.exit_code == 2 and "none of the 100 ImageNet-Sub class folders" in result.output
    (tmp_path / "ucf101").mkdir()
    (tmp_path / "ucf101" / "split_zhou_UCF101.json").write_text("{}")
    result = CliRunner().invoke(main, ["data", "check", "--bench", "ucf101", "--data-root", str(tmp_path)])
    assert result.exit_code == 2 and "no UCF-101-midframes/ folder" in result.output

"""data.val_fraction (a validation split on every benchmark, evaluation never reads test) and data.seed (the toy's
data sample follows the run seed)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from fakedata_revision import make_ucf_coop
from torch.utils.data import TensorDataset

from segpcl.benchmarks import toy
from segpcl.benchmarks.base import Benchmark, DataConfig, build_benchmark, holdout_mask, with_validation
from segpcl.benchmarks.check import check_benchmark
from segpcl.cli import main
from segpcl.config import resolve_config
from segpcl.engine.build import build_stream

REDUCED = ["--model", "tiny", "--epochs", "1", "--set", "data.max_train_per_class=3", "--set",
           "data.max_test_per_class=2", "--set", "data.task_sizes=[32,32]", "--set", "method.k_seed=1",
           "--set", "method.pgd_steps=2", "--set", "train.batch_size=16", "--quiet"]  # fmt: skip


def _bench(per_class: list[int]) -> Benchmark:
    targets = np.repeat(np.arange(len(per_class)), per_class)
    train = TensorDataset(torch.arange(len(targets)), torch.from_numpy(targets))
    test = TensorDataset(torch.arange(3), torch.zeros(3, dtype=torch.long))
    return Benchmark("fake", [f"c{i}" for i in range(len(per_class))], ["{}"], train, test, targets, np.zeros(3))


def test_holdout_is_per_class_fixed_and_never_takes_a_whole_class():
    targets = np.repeat(np.arange(4), [10, 20, 1, 2])
    held = holdout_mask(targets, 0.1, seed=0)
    assert [int(held[targets == c].sum()) for c in range(4)] == [1, 2, 0, 1]
    assert np.array_equal(held, holdout_mask(targets, 0.1, seed=0))
    assert not np.array_equal(holdout_mask(targets, 0.5, 0), holdout_mask(targets, 0.5, 1))
    # a class's draw does not depend on the other classes (or their order)
    only_1 = targets[targets == 1]
    assert np.array_equal(holdout_mask(only_1, 0.1, 0), held[targets == 1])


def test_with_validation_trains_on_the_rest_and_drops_the_test_split():
    bench = _bench([10, 10, 10])
    assert with_validation(bench, 0.0, 0) is bench and bench.split == "test"
    val = with_validation(bench, 0.2, 0)
    assert val.split == "validation" and "0.2 of each class" in val.notes["validation"]
    train_ids = {int(val.train[i][0]) for i in range(len(val.train))}
    val_ids = {int(val.test[i][0]) for i in range(len(val.test))}
    assert len(val_ids) == 6 and len(train_ids) == 24 and not train_ids & val_ids
    assert train_ids | val_ids == set(range(30))
    assert np.bincount(val.test_targets).tolist() == [2, 2, 2]
    assert [int(val.test[i][1]) for i in range(len(val.test))] == val.test_targets.tolist()


def test_toy_renders_its_own_validation_images_and_each_data_seed_is_another_sample():
    assert toy.render_seed(0, "train") == toy.TOY_DATA_SEED and toy.render_seed(0, "test") == toy.TOY_DATA_SEED + 7919
    seeds = {toy.render_seed(d, s) for d in range(50) for s in toy.SPLITS}
    assert len(seeds) == 150
    plain = build_benchmark("toy", DataConfig(image_size=32))
    val = build_benchmark("toy", DataConfig(image_size=32, val_fraction=0.1))
    assert val.split == "validation" and len(val.test) == 64 * toy.VAL_PER_CLASS
    assert len(val.train) == len(plain.train)  # the toy keeps all its training images
    assert not torch.equal(val.test[0][0], plain.test[0][0]) and torch.equal(val.train[0][0], plain.train[0][0])
    other = build_benchmark("toy", DataConfig(image_size=32, sample_seed=1))
    assert not torch.equal(other.train[0][0], plain.train[0][0]) and not torch.equal(other.test[0][0], plain.test[0][0])


def test_data_seed_follows_the_run_seed_unless_given():
    def first_image(**over):
        return build_stream(resolve_config("toy", overrides=over), 32, None).bench.train[0][0]

    run1 = first_image(train={"seed": 1})
    assert torch.equal(run1, first_image(data={"seed": 1}))
    assert torch.equal(first_image(train={"seed": 1}, data={"seed": 0}), first_image())
    assert not torch.equal(run1, first_image())


def test_ucf101_coop_val_list_is_the_validation_set(tmp_path):
    folder = make_ucf_coop(tmp_path, per_split=(2, 1, 1))
    plain = build_benchmark("ucf101", DataConfig(data_root=tmp_path, image_size=8))
    assert np.bincount(plain.train_targets).tolist() == [3] * 101 and "train + val" in plain.notes["train_source"]
    val = build_benchmark("ucf101", DataConfig(data_root=tmp_path, image_size=8, val_fraction=0.3))
    assert val.split == "validation" and np.bincount(val.train_targets).tolist() == [2] * 101
    assert np.bincount(val.test_targets).tolist() == [1] * 101
    assert all("_g20_" in p for p in val.test.all_paths())  # the json's val videos, no test video
    assert all("_g01_" not in p for p in val.train.all_paths())
    report = check_benchmark("ucf101", DataConfig(data_root=folder, image_size=8), progress=False)
    assert "training" in report.format_table() and "CoOp's train + val lists" in report.format_table()


def test_a_run_on_validation_says_so_and_reads_validation_images(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--out", str(out), "--val-fraction", "0.1", *REDUCED])
    assert result.exit_code == 0, result.output
    assert "validation images" in result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["split"] == "validation" and metrics["data_seed"] == 0
    assert "val_fraction: 0.1" in (out / "config.yaml").read_text()
    again = CliRunner().invoke(main, ["train", "--resume", str(out), "--val-fraction", "0.2"])
    assert again.exit_code == 2 and "--val-fraction" in again.output


@pytest.mark.parametrize(
    ("sets", "needle"),
    [(["--set", "data.val_fraction=1"], "data.val_fraction"), (["--set", "data.seed=-1"], "data.seed")],
)
def test_bad_values_are_one_line_errors(sets, needle):
    result = CliRunner().invoke(main, ["train", "--model", "tiny", *sets])
    assert result.exit_code == 2 and needle in result.output and len(result.output.strip().splitlines()) == 1

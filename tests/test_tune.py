"""`segpcl tune`: every grid combination on the validation split, the winner by mean validation Last, and no test
image read (the toy's test split replaced by one that raises gives identical results)."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from click.testing import CliRunner
from torch.utils.data import Dataset

from segpcl.analysis.tune import combinations, parse_grid, set_text
from segpcl.benchmarks import base
from segpcl.cli import main
from segpcl.config import resolve_config
from segpcl.engine.build import build_stream
from segpcl.errors import ConfigError

REDUCED = ["--epochs", "1", "--max-tasks", "1", "--set", "data.max_train_per_class=2", "--set",
           "data.max_test_per_class=2", "--set", "data.task_sizes=[32,32]", "--set", "train.batch_size=16",
           "--quiet"]  # fmt: skip
GRID = ["--grid", "train.lr=0.01,5", "--method", "lora"]
"""On the toy CLIP (reduced data, first task): lr 5 wrecks what lr 0.01 keeps, so the choice is known."""


class _NoTestImages(Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int):
        raise AssertionError("a test image was read")


@pytest.fixture
def raising_test_split(monkeypatch):
    """The toy benchmark with its test split replaced by a dataset that raises when read."""
    info = base.get_benchmark_info("toy")

    def build(cfg):
        bench = info.builder(cfg)
        return dataclasses.replace(bench, test=_NoTestImages(len(bench.test_targets)))

    monkeypatch.setitem(base._REGISTRY, "toy", dataclasses.replace(info, builder=build))


def _tune(out, *extra):
    result = CliRunner().invoke(main, ["tune", *GRID, "--out", str(out), *REDUCED, *extra])
    assert result.exit_code == 0, result.output
    return result, json.loads((out / "tune.json").read_text())


def test_grid_parsing():
    grid = parse_grid(["train.lr=0.01,1e-3", "data.task_sizes=[32,32],[16,48]", "method.name=lora,segpcl"])
    assert grid["train.lr"] == [0.01, "1e-3"] and grid["method.name"] == ["lora", "segpcl"]
    assert grid["data.task_sizes"] == [[32, 32], [16, 48]]
    assert len(combinations(grid)) == 8 and combinations(grid)[1] == {
        "train.lr": 0.01, "data.task_sizes": [32, 32], "method.name": "segpcl"}  # fmt: skip
    assert set_text("data.task_sizes", [32, 32]) == "data.task_sizes=[32,32]" and set_text("a.b", 0.5) == "a.b=0.5"
    for bad in (["train.lr"], ["train.lr="], ["train.lr=1", "train.lr=2"], ["train.seed=1,2"], ["train.lr=1,1"]):
        with pytest.raises(ConfigError):
            parse_grid(bad)


def test_tune_picks_the_best_validation_last_and_never_reads_a_test_image(tmp_path, monkeypatch, raising_test_split):
    # the patch bites: a stream evaluated on the test split reads the raising set
    with pytest.raises(AssertionError, match="a test image was read"):
        build_stream(resolve_config("toy"), 32, None).test_set(0)[0]
    result, table = _tune(tmp_path / "tune")
    assert table["split"] == "validation" and table["val_fraction"] == 0.1 and table["seeds"] == [0]
    rows = table["combinations"]
    assert [r["values"] for r in rows] == [{"train.lr": 0.01}, {"train.lr": 5}]
    assert rows[0]["last_mean"] > rows[1]["last_mean"] and table["chosen"] == "c01"
    assert result.output.strip().splitlines()[-1] == table["set_line"] == "--set train.lr=0.01"
    for r in rows:
        metrics = json.loads((tmp_path / "tune" / f"{r['name']}-seed0" / "metrics.json").read_text())
        assert metrics["split"] == "validation" and r["last"] == [metrics["last"]] and r["avg"] == [metrics["avg"]]
    assert "| c01 (chosen) | 0.01 |" in (tmp_path / "tune" / "tune.md").read_text()
    # the same grid with the real test split in place: identical results (nothing came from test images)
    monkeypatch.undo()
    _, again = _tune(tmp_path / "tune-real")
    assert [(r["last"], r["avg"]) for r in again["combinations"]] == [(r["last"], r["avg"]) for r in rows]


def test_tune_reuses_finished_runs_and_keeps_an_explicit_val_fraction(tmp_path, monkeypatch):
    args = ("--seeds", "0,1", "--set", "data.val_fraction=0.2", "--set", "data.seed=0")  # one data sample
    _, first = _tune(tmp_path / "t", *args, "--model", "tiny")
    assert first["val_fraction"] == 0.2 and first["seeds"] == [0, 1]
    for r in first["combinations"]:
        assert len(r["last"]) == 2 and r["last_mean"] == pytest.approx(np.mean(r["last"]))
    import segpcl.analysis.ablation as ablation

    monkeypatch.setattr(ablation, "run_training", lambda *a, **k: pytest.fail("a finished run was trained again"))
    _, second = _tune(tmp_path / "t", *args, "--model", "tiny")
    assert second["combinations"] == first["combinations"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--grid", "train.seed=1,2"], "--seeds"),
        (["--grid", "train.nope=1,2"], "'nope'"),
        (["--grid", "train.lr"], "KEY=V1,V2"),
        (["--grid", "train.lr=0.1,0.2", "--set", "train.lr=0.3"], "both --grid and --set"),
        (["--grid", "train.lr=0.1", "--seeds", "x"], "--seeds"),
        (["--grid", "train.lr=0.1", "--set", "data.val_fraction=1.5"], "data.val_fraction"),
    ],
)
def test_bad_tune_options_are_one_line_errors(tmp_path, args, needle):
    result = CliRunner().invoke(main, ["tune", *args, "--model", "tiny", "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and needle in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()

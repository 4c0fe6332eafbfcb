"""Run-time options (--model without --pretrained, --max-tasks) and the logs (metrics.csv, TensorBoard)."""

import csv
import json
import sys

import pytest
from click.testing import CliRunner

from segpcl.cli import main
from segpcl.config import resolve_config
from segpcl.engine.logs import metrics_csv

REDUCED = [
    "--model", "tiny", "--epochs", "1", "--device", "cpu", "--quiet",
    "--set", "data.max_train_per_class=2", "--set", "data.max_test_per_class=1",
    "--set", "data.task_sizes=[32,16,16]", "--set", "method.k_seed=1", "--set", "method.pgd_steps=1",
    "--set", "train.batch_size=16",
]  # fmt: skip


def test_model_without_pretrained_does_not_inherit_the_presets_weights():
    assert resolve_config("cub200").model.pretrained == "openai"
    assert resolve_config("cub200", overrides={"model": {"arch": "tiny"}}).model.pretrained is None
    cfg = resolve_config("cub200", overrides={"model": {"arch": "tiny", "pretrained": "/w.pt"}})
    assert cfg.model.pretrained == "/w.pt"
    same = resolve_config("cub200").model.arch
    assert resolve_config("cub200", overrides={"model": {"arch": same}}).model.pretrained == "openai"
    assert resolve_config("cub200", overrides={"model": {"pretrained": "/w.pt"}}).model.pretrained == "/w.pt"


def test_model_option_in_a_config_file_drops_the_presets_weights(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model:\n  arch: ViT-B-16\n")
    assert resolve_config("cub200", config_file=path).model.pretrained is None
    # a later --pretrained wins over the file's architecture change
    cfg = resolve_config("cub200", config_file=path, overrides={"model": {"pretrained": "/b16.bin"}})
    assert cfg.model.pretrained == "/b16.bin"


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_max_tasks_then_resume_further_and_metrics_csv(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--out", str(out), "--max-tasks", "1", *REDUCED])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks_completed"] == 1 and metrics["n_tasks"] == 3
    rows = _rows(out / "metrics.csv")
    assert len(rows) == 1 and float(rows[0]["seen_accuracy"]) == pytest.approx(metrics["seen_accuracy"][0], abs=1e-4)
    assert rows[0]["classes_seen"] == "32" and rows[0]["acc_task2"] == ""
    # --max-tasks may be raised when resuming
    result = CliRunner().invoke(main, ["train", "--resume", str(out), "--max-tasks", "2", "--quiet"])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["tasks_completed"] == 2
    rows = _rows(out / "metrics.csv")
    assert [r["task"] for r in rows] == ["1", "2"]
    assert float(rows[1]["acc_task1"]) == pytest.approx(metrics["accuracy_matrix"][1][0], abs=1e-4)
    assert rows[1]["steps"] and float(rows[1]["mean_ce"]) > 0


def test_metrics_csv_columns():
    metrics = {
        "n_tasks": 2,
        "task_sizes": [3, 2],
        "accuracy_matrix": [[50.0], [40.0, 60.0]],
        "seen_accuracy": [50.0, 48.0],
        "pre_task_accuracy": [None, 10.0],
        "zero_shot_task_accuracy": [20.0, 30.0],
        "timings": [{"train": 1.0, "eval": 0.5}, {"train": 2.0}],
        "task_info": [{"steps": 3, "mean_ce": 1.5}, {"steps": 4, "mean_ce": 1.0, "mean_acgd": 0.2, "anchors": 7}],
    }
    rows = list(csv.DictReader(metrics_csv(metrics).splitlines()))
    assert rows[0]["acc_task1"] == "50.0000" and rows[0]["acc_task2"] == "" and rows[0]["mean_acgd"] == ""
    assert rows[1]["classes_seen"] == "5" and rows[1]["pre_task_accuracy"] == "10.0000"
    assert rows[0]["seconds"] == "1.50" and rows[1]["anchors"] == "7" and rows[1]["zero_shot_accuracy"] == "30.0000"


def test_log_tensorboard_missing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--out", str(out), "--log", "tensorboard", *REDUCED])
    assert result.exit_code == 2, result.output
    assert "pip install 'segpcl[tensorboard]'" in result.output and "Traceback" not in result.output
    assert not out.exists()  # a failed start leaves nothing behind


def test_unknown_log_kind_is_refused():
    from segpcl.config import validate
    from segpcl.errors import ConfigError

    cfg = resolve_config("toy", overrides={"train": {"log": ["mlflow"]}})
    with pytest.raises(ConfigError, match="train.log"):
        validate(cfg)


def test_log_tensorboard_writes_events(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    result = CliRunner().invoke(
        main, ["train", "--out", str(out), "--log", "tensorboard", "--max-tasks", "2", *REDUCED]
    )
    assert result.exit_code == 0, result.output
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()
    assert {"loss/total", "loss/ce", "loss/acgd", "accuracy/seen", "accuracy/task1", "accuracy/task2"} <= set(
        tags["scalars"]
    )
    assert [e.step for e in events.Scalars("accuracy/seen")] == [1, 2]
    metrics = json.loads((out / "metrics.json").read_text())
    assert events.Scalars("accuracy/seen")[-1].value == pytest.approx(metrics["seen_accuracy"][-1], abs=1e-4)
    steps = sum(i["steps"] for i in metrics["task_info"])
    assert events.Scalars("loss/total")[-1].step == steps

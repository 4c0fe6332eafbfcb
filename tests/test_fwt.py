"""Forward transfer (FWT): the metric by hand, the trainer's pre-task and zero-shot evaluations, the text table,
and `segpcl report` over several runs (table, CSV, one SVG)."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from segpcl.metrics import AccuracyMatrix, forward_transfer, summarize
from segpcl.report import accuracy_table, curves_svg, run_summary, summary_csv

ACC = [[90.0], [70.0, 80.0], [50.0, 60.0, 85.0]]
ZERO_SHOT = [60.0, 40.0, 30.0]  # the untrained model on each task's classes (among the classes seen up to it)
PRE_TASK = [None, 45.0, 20.0]  # the model after task t - 1 on task t's classes, before learning task t


def test_fwt_by_hand():
    # t = 2: 45 - 40 = 5; t = 3: 20 - 30 = -10 -> mean -2.5 (task 1 has no "before" and is left out)
    assert forward_transfer(PRE_TASK, ZERO_SHOT) == pytest.approx(-2.5)
    r = summarize(ACC, [90.0, 75.0, 65.0], PRE_TASK, ZERO_SHOT)
    assert r["fwt"] == pytest.approx(-2.5) and r["pre_task_accuracy_mean"] == pytest.approx(32.5)
    assert r["bwt"] == pytest.approx(-30.0) and r["forgetting"] == pytest.approx(30.0)  # unchanged
    assert forward_transfer([None, 50.0], None) is None  # no zero-shot reference: not measured
    assert forward_transfer([None], [70.0]) == 0.0  # one task
    assert forward_transfer([None, None, 20.0], ZERO_SHOT) == pytest.approx(-10.0)  # only measured tasks count


def test_matrix_records_counts_and_round_trips():
    m = AccuracyMatrix(3)
    m.set_zero_shot([6, 4, 3], [10, 10, 10])
    m.update(0, [9], [10])
    m.record_pre_task(1, 9, 20)
    m.update(1, [7, 16], [10, 20])
    m.record_pre_task(2, 2, 10)
    m.update(2, [5, 12, 8], [10, 20, 10])
    r = m.result()
    assert r["zero_shot_task_accuracy"] == [60.0, 40.0, 30.0] and r["pre_task_accuracy"] == [None, 45.0, 20.0]
    assert r["fwt"] == pytest.approx(-2.5)
    again = AccuracyMatrix(3)
    again.load_state(json.loads(json.dumps(m.state())))
    assert again.result() == r
    old = AccuracyMatrix(3)
    old.load_state({"acc": m.acc, "task_accuracy": m.seen_accuracy})  # a checkpoint from before FWT
    assert old.result()["fwt"] is None


def test_table_shows_fwt_and_the_rows_it_comes_from():
    text = accuracy_table(summarize(ACC, [90.0, 75.0, 65.0], PRE_TASK, ZERO_SHOT))
    assert "FWT -2.50" in text
    assert "zero-shot |   60.0   40.0   30.0" in text and "pre-task |      -   45.0   20.0" in text
    assert "FWT" not in accuracy_table(summarize(ACC, [90.0, 75.0, 65.0]))


def _cfg(method):
    from segpcl.config import resolve_config

    return resolve_config(
        "toy",
        overrides={
            "model": {"arch": "tiny"},
            "data": {"max_train_per_class": 3, "max_test_per_class": 2, "task_sizes": [32, 16, 16]},
            "train": {"epochs": 1, "batch_size": 16},
            "method": {"name": method, "k_seed": 1, "pgd_steps": 1},
        },
    )


def test_trainer_measures_zero_shot_and_pre_task_accuracy(tmp_path):
    from segpcl.engine.trainer import run_training

    zs = run_training(_cfg("zeroshot"), out_dir=tmp_path / "zs", progress=False).metrics
    lora = run_training(_cfg("lora"), out_dir=tmp_path / "lora", progress=False).metrics
    # the zero-shot model on task t's classes among those seen up to t is the diagonal of a zero-shot run
    diag = [zs["accuracy_matrix"][t][t] for t in range(3)]
    assert zs["zero_shot_task_accuracy"] == pytest.approx(diag)
    assert lora["zero_shot_task_accuracy"] == pytest.approx(diag)  # same untrained model, same seed
    assert zs["fwt"] == 0.0 and zs["pre_task_accuracy"][1:] == zs["zero_shot_task_accuracy"][1:]
    pre = lora["pre_task_accuracy"]
    assert pre[0] is None and all(0.0 <= p <= 100.0 for p in pre[1:])
    expected = sum(pre[t] - diag[t] for t in (1, 2)) / 2
    assert lora["fwt"] == pytest.approx(expected)
    assert all("transfer_eval" in t for t in lora["timings"])


def test_curves_svg_and_csv_for_runs_of_different_lengths():
    short = {"accuracy_matrix": ACC, "seen_accuracy": [90.0, 75.0, 65.0], "last": 65.0, "method": "a"}
    long = {"accuracy_matrix": [[1.0]] * 5, "seen_accuracy": [80.0, 70.0, 60.0, 55.0, 50.0], "fwt": 1.5}
    svg = curves_svg([("a <10 steps>", short), ("b", long)])
    root = ET.fromstring(svg)  # well-formed, labels escaped
    ns = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{ns}polyline")) == 2 and len(root.findall(f"{ns}circle")) == 8
    assert "a &lt;10 steps&gt; (65.0)" in svg
    rows = list(csv.DictReader(io.StringIO(summary_csv([run_summary("a", short), run_summary("b", long)]))))
    assert rows[0]["last"] == "65.0000" and rows[0]["fwt"] == "" and rows[1]["fwt"] == "1.5000"
    assert rows[1]["tasks"] == "5"


def test_cli_report_over_run_dirs(tmp_path):
    from segpcl.cli import main

    for name, seen in (("r10", [90.0, 70.0]), ("r20", [80.0, 60.0, 50.0])):
        (tmp_path / name).mkdir()
        m = {"accuracy_matrix": [[0.0]] * len(seen), "seen_accuracy": seen, "last": seen[-1], "fwt": 2.0}
        (tmp_path / name / "metrics.json").write_text(json.dumps(m))
    out = tmp_path / "rep"
    result = CliRunner().invoke(main, ["report", str(tmp_path / "r10"), str(tmp_path / "r20"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "r10" in result.output and "r20" in result.output and "2.00" in result.output
    assert (out / "accuracy_curves.svg").read_text().startswith("<svg")
    assert (out / "summary.csv").read_text().splitlines()[0].startswith("run,bench,method")
    bad = CliRunner().invoke(main, ["report", str(tmp_path / "nope")])
    assert bad.exit_code == 2 and "no metrics.json" in bad.output

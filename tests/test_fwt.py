"""Forward transfer (FWT): the metric by hand, the trainer's pre-task and zero-shot evaluations, the text table,
and `segpcl report` over several runs (table, CSV, one SVG)."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from segpcl.method.prototypes import dual_path_probs
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


# ------------------------------------------------------------------ classes without a prototype, the CLIP branch


def _mixed_case():
    """4 classes; prototypes for classes 0 and 1 only (rows 2 and 3 are zero: not learned yet). CLIP prefers
    class 2, the prototype branch class 0."""
    f = torch.tensor([[0.6, 0.8, 0.0]])
    text = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.8, 0.0, 0.6]])
    v = torch.tensor([[3.0, 1.0, 0.0]])  # raw features, normalised by dual_path_probs
    protos = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    return f, text, v, protos


def test_a_class_without_prototype_is_scored_by_clip_alone():
    f, text, v, protos = _mixed_case()
    s, s_v, beta = 10.0, 10.0, 0.5
    clip = s * f @ text.T
    q = s_v * F.normalize(v, dim=1) @ protos.T  # prototype scores; 0 for the zero rows
    filled = q.clone()
    filled[:, 2:] = q[:, :2].mean(dim=1, keepdim=True)  # the image's mean over the classes with a prototype
    got = dual_path_probs(f, text, v, protos, s, s_v, beta, fusion="logits")
    torch.testing.assert_close(got, torch.softmax(clip + beta * filled, dim=1))
    assert got.argmax(dim=1).item() == 2  # CLIP's choice among all, not beaten by class 0's prototype
    assert torch.softmax(clip + beta * q, dim=1).argmax(dim=1).item() == 0  # what the zero row did
    # among the classes without a prototype the ranking is CLIP's: classes 2 and 3 differ by CLIP's logits only
    ratio = (got[0, 2] / got[0, 3]).log()
    torch.testing.assert_close(ratio, clip[0, 2] - clip[0, 3])
    mix = dual_path_probs(f, text, v, protos, s, s_v, 0.3, fusion="probs")
    want = 0.7 * torch.softmax(clip, dim=1) + 0.3 * torch.softmax(filled, dim=1)
    torch.testing.assert_close(mix, want)
    for fusion in ("logits", "probs"):  # no prototype at all: the CLIP path alone
        none = dual_path_probs(f, text, v, torch.zeros(4, 3), s, s_v, 0.3, fusion=fusion)
        torch.testing.assert_close(none, torch.softmax(clip, dim=1))


def test_clip_branch_matrix_round_trips_and_summarises():
    m = AccuracyMatrix(2)
    m.set_zero_shot([6, 4], [10, 10])
    m.update(0, [9], [10])
    m.update_clip_branch(0, [8], [10])
    m.record_pre_task(1, 5, 10)
    m.update(1, [7, 8], [10, 10])
    m.update_clip_branch(1, [6, 9], [10, 10])
    r = m.result()
    clip = r["clip_branch"]
    assert clip["accuracy_matrix"] == [[80.0], [60.0, 90.0]] and clip["last"] == pytest.approx(75.0)
    assert clip["forgetting"] == pytest.approx(20.0) and clip["bwt"] == pytest.approx(-20.0)
    assert clip["fwt"] == pytest.approx(10.0) == r["fwt"] and clip["pre_task_accuracy_mean"] == pytest.approx(50.0)
    again = AccuracyMatrix(2)
    again.load_state(json.loads(json.dumps(m.state())))
    assert again.result() == r
    with pytest.raises(ValueError, match="task 2"):
        again.update_clip_branch(1, [1, 1], [2, 2])  # already recorded
    old = AccuracyMatrix(2)
    old.load_state({"acc": m.acc, "seen_accuracy": m.seen_accuracy})  # a checkpoint without the CLIP branch
    assert "clip_branch" not in old.result()
    text = accuracy_table(r)
    assert "CLIP branch only: Last 75.00" in text and "pre-task mean 50.00" in text


def _toy_cfg(method):
    from segpcl.config import resolve_config

    return resolve_config(  # the pretrained toy CLIP: zero-shot gets some of every task right
        "toy",
        overrides={
            "data": {"max_train_per_class": 4, "max_test_per_class": 4, "task_sizes": [16, 16, 32]},
            "train": {"epochs": 1},
            "method": {"name": method, "k_seed": 1, "pgd_steps": 1},
        },
    )


def test_fwt_of_segpcl_on_the_toy_is_measured_by_the_clip_branch(tmp_path):
    from segpcl.engine.trainer import run_training

    seg = run_training(_toy_cfg("segpcl"), out_dir=tmp_path / "seg", progress=False).metrics
    # segpcl-cliponly trains exactly as segpcl and predicts by CLIP alone
    clip = run_training(_toy_cfg("segpcl-cliponly"), out_dir=tmp_path / "clip", progress=False).metrics
    zero_shot, pre = seg["zero_shot_task_accuracy"], seg["pre_task_accuracy"]
    assert all(z > 0 for z in zero_shot)  # CLIP gets some of every task right
    assert pre[0] is None and all(p > 0 for p in pre[1:])  # no 0.0 from the new classes' missing prototypes
    assert pre == clip["pre_task_accuracy"] and seg["fwt"] == pytest.approx(clip["fwt"])
    assert seg["fwt"] == pytest.approx(sum(pre[t] - zero_shot[t] for t in (1, 2)) / 2)
    assert seg["clip_branch"]["accuracy_matrix"] == clip["accuracy_matrix"]  # one more pass, the CLIP branch
    assert clip["clip_branch"]["accuracy_matrix"] == clip["accuracy_matrix"]  # CLIP already: no extra pass
    assert all(t["eval_clip"] > 0 for t in seg["timings"])
    assert all(t["eval_clip"] < 0.05 * t["eval"] for t in clip["timings"])

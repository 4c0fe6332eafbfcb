"""The boundary-vs-core drift diagnostic (issue 12): JSD, the boundary split, the bootstrap, the toy world's
ground-truth class order, and `segpcl train --diagnose` end to end on two tiny-model toy tasks."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from segpcl import toyworld as tw
from segpcl.analysis.drift import (
    bootstrap_mean,
    bootstrap_ratio,
    boundary_core_split,
    boundary_scores,
    capped_indices,
    drift_summary,
    drift_svg,
    drift_table,
    images_at,
    js_divergence,
    summary_markdown,
    toy_sharing,
)
from segpcl.benchmarks.toy import boundary_class_order
from segpcl.errors import ConfigError


def test_jsd_identical_disjoint_and_by_hand():
    p = torch.tensor([[0.2, 0.3, 0.5], [1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    q = torch.tensor([[0.2, 0.3, 0.5], [0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    d = js_divergence(p, q)
    assert d[0].item() == pytest.approx(0.0, abs=1e-7)
    assert d[1].item() == pytest.approx(math.log(2), rel=1e-6)
    # p = (1/2, 1/2), q = (1, 0): m = (3/4, 1/4); KL(p||m) = 1/2 ln(4/3), KL(q||m) = ln(4/3); JSD = 3/4 ln(4/3)
    assert d[2].item() == pytest.approx(0.75 * math.log(4 / 3), rel=1e-6)
    assert torch.allclose(js_divergence(q, p), d)  # symmetric


def _features():
    """Two old classes (text e0, e1) and one new class (e2); sample i of each class leans toward the new class
    by a_i, so its boundary score rises with a_i."""
    text = torch.eye(3)
    a = torch.tensor([0.5, 0.0, 0.9, 0.3, 0.1, 0.8, 0.2, 0.7, 0.4, 0.6])
    f0 = F.normalize(torch.stack([torch.ones(10), torch.zeros(10), a], dim=1), dim=1)
    f1 = F.normalize(torch.stack([torch.zeros(10), torch.ones(10), a.flip(0)], dim=1), dim=1)
    labels = torch.tensor([0] * 10 + [1] * 10)
    return torch.cat([f0, f1]), text, labels, a


def test_boundary_scores_and_split_on_a_constructed_feature_set():
    f, text, labels, a = _features()
    b = boundary_scores(f, text, labels, n_old=2)
    expected = (a - 1) / torch.sqrt(1 + a * a)  # cos(f, T_new) - cos(f, T_own)
    assert torch.allclose(b[:10], expected, atol=1e-6)
    assert torch.allclose(b[10:], expected.flip(0), atol=1e-6)
    boundary, core = boundary_core_split(b, labels, 0.2)
    # class 0: a = 0.9 (index 2) and 0.8 (index 5) are the boundary, a = 0.0 (1) and 0.1 (4) the core
    assert torch.nonzero(boundary[:10]).flatten().tolist() == [2, 5]
    assert torch.nonzero(core[:10]).flatten().tolist() == [1, 4]
    # class 1 holds the same values in reverse order
    assert torch.nonzero(boundary[10:]).flatten().tolist() == [4, 7]
    assert torch.nonzero(core[10:]).flatten().tolist() == [5, 8]
    assert not (boundary & core).any()


def test_split_small_classes_and_ties():
    scores = torch.tensor([1.0, 1.0, 1.0, 5.0, 0.0])
    labels = torch.tensor([0, 0, 0, 1, 2])
    boundary, core = boundary_core_split(scores, labels, 0.2)
    # class 0 (3 equal scores): k = 1, ties by index: core index 0, boundary the last; classes 1, 2: one sample
    assert boundary.tolist() == [False, False, True, False, False]
    assert core.tolist() == [True, False, False, False, False]


def test_bootstrap_is_deterministic_and_contains_the_estimate():
    rng = np.random.RandomState(3)
    a, b = rng.gamma(2.0, 3.0, 40), rng.gamma(2.0, 1.0, 40)
    r1, r2 = bootstrap_ratio(a, b, seed=0), bootstrap_ratio(a, b, seed=0)
    assert r1 == r2
    assert r1["value"] == pytest.approx(a.mean() / b.mean())
    assert r1["low"] < r1["value"] < r1["high"]
    assert bootstrap_ratio(a, b, seed=1) != r1
    m = bootstrap_mean(a)
    assert m["value"] == pytest.approx(a.mean()) and m["low"] < m["value"] < m["high"]
    assert bootstrap_ratio([], b) is None and bootstrap_ratio(a, [0.0, 0.0]) is None and bootstrap_mean([]) is None


def test_images_at_picks_positions_across_batches_with_repeats():
    x = torch.arange(10.0).view(10, 1)
    batches = [(x[:3], None), (x[3:4], None), (x[4:], None)]
    assert images_at(batches, torch.tensor([7, 0, 3, 7, 9])).flatten().tolist() == [7.0, 0.0, 3.0, 7.0, 9.0]
    assert images_at(iter(batches), torch.tensor([2, 10])) is None  # 10 is past the end
    assert images_at([], torch.tensor([0])) is None


def test_capped_indices_keeps_the_first_per_class():
    assert capped_indices(np.array([0, 1, 0, 0, 1, 2]), 2).tolist() == [0, 1, 2, 4, 5]


@pytest.mark.parametrize("size", [2, 4, 8])
def test_boundary_order_shares_with_exactly_half_of_the_previous_task(size):
    for seed in (0, 1, 1993):
        order = boundary_class_order(size, seed)
        assert sorted(order) == list(range(64))
        assert order == boundary_class_order(size, seed)  # deterministic
        colour, shape = tw.split_class(np.asarray(order))
        tasks = [range(i, i + size) for i in range(0, 64, size)]
        for prev, new in zip(tasks, tasks[1:], strict=False):
            new_c, new_s = set(colour[list(new)]), set(shape[list(new)])
            shares = [colour[i] in new_c or shape[i] in new_s for i in prev]
            assert sum(shares) == size // 2
        stream = SimpleNamespace(
            bench=SimpleNamespace(name="toy"), class_order=order, task_range=tasks.__getitem__
        )  # the diagnostic's class kinds agree with the construction on the previous task's classes
        kinds = toy_sharing(stream, 1)
        assert kinds.tolist() == [colour[i] in set(colour[list(tasks[1])]) for i in tasks[0]]
    assert boundary_class_order(8, 0) != boundary_class_order(8, 1)
    with pytest.raises(ConfigError):
        boundary_class_order(16)


def _entry(task, jsd):
    groups = {
        name: {"n": 4, "jsd": v, "jsd_low": v * 0.9, "jsd_high": v * 1.1, "jsd_seen": v, "visual": 0.0}
        for name, v in zip(("boundary", "core", "anchors", "new"), jsd, strict=True)
    }
    r = {"value": jsd[0] / jsd[1], "low": 1.0, "high": 3.0}
    return {"task": task, "groups": groups, "ratio": r, "anchors_vs_new": r, "ratio_kind": None}


def test_table_svg_and_summary_render():
    entries = [_entry(2, [0.02, 0.01, 0.03, 0.01]), _entry(3, [0.04, 0.01, 0.02, 0.02])]
    assert "2.00 [1.00, 3.00]" in drift_table(entries)
    svg = drift_svg(entries, "lora <toy>")
    assert svg.count('class="bar"') == 8 and "&lt;toy&gt;" in svg
    summary = drift_summary([{"method": "lora", "drift": entries}, {"method": "lora", "drift": entries[:1]}])
    # per run: the mean over tasks (3.0 and 2.0), then the mean over runs
    assert summary["lora"]["ratio"]["value"] == pytest.approx(2.5) and summary["lora"]["ratio"]["runs"] == 2
    assert summary["lora"]["ratio_kind"] is None
    assert "| lora | 2 |" in summary_markdown(summary)


def test_summary_pairs_by_seed_and_rebuilds_ratios_from_group_means():
    def run(method, seed, jsd):
        e = _entry(2, jsd)
        for name, g in e["groups"].items():
            g["visual"] = {"anchors": 0.3, "new": 0.1}.get(name, 0.0)
        return {"method": method, "seed": seed, "drift": [e]}

    runs = [run("lora", 1, [0.02, 0.01, 0.03, 0.01]), run("lora", 2, [0.04, 0.01, 0.03, 0.01])]
    runs += [run("segpcl", 2, [0.05, 0.01, 0.03, 0.01]), run("segpcl", 1, [0.04, 0.01, 0.03, 0.01])]
    summary = drift_summary(runs)
    assert list(summary) == ["lora", "segpcl"]  # the baseline first
    d = summary["segpcl"]["ratio_vs_lora"]  # seed 1: 4 - 2, seed 2: 5 - 4 (paired by seed, not by order)
    assert d["n"] == 2 and d["mean"] == pytest.approx(1.5) and d["low"] < 1.5 < d["high"]
    assert "ratio_vs_lora" not in summary["lora"]
    # not recorded in these entries: rebuilt from the group means (0.3 / 0.1)
    assert summary["lora"]["anchors_vs_new_visual"]["value"] == pytest.approx(3.0)
    assert summary["lora"]["anchors_vs_new_seen"]["value"] == pytest.approx(3.0)  # jsd_seen = jsd here
    text = summary_markdown(summary)
    assert "| segpcl | +1.50 [" in text and "seen-class JSD" in text


TINY = ["--model", "tiny", "--epochs", "1", "--quiet", "--method", "lora"]
SMALL = [
    "--set",
    "data.max_train_per_class=3",
    "--set",
    "data.max_test_per_class=4",
    "--set",
    "data.task_sizes=[48,16]",
]


def test_train_diagnose_two_toy_tasks(tmp_path):
    from segpcl.cli import main

    out = tmp_path / "diag"
    result = CliRunner().invoke(main, ["train", *TINY, *SMALL, "--diagnose", "--out", str(out)])
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "metrics.json").read_text())
    (entry,) = metrics["drift"]  # one entry: task 2
    assert entry["task"] == 2 and entry["n_old_classes"] == 48 and entry["n_new_classes"] == 16
    g = entry["groups"]
    assert g["old"]["n"] == 48 * 4  # 4 test images per old class (max_test_per_class)
    assert g["boundary"]["n"] == g["core"]["n"] == 48  # k = max(1, floor(0.2 * 4)) per class
    assert g["boundary"]["n"] + g["core"]["n"] <= g["old"]["n"]
    assert g["sharing"]["n"] + g["not_sharing"]["n"] == g["old"]["n"]
    # lora builds no anchors: the diagnostic's own, from the same teacher; all 48 new images
    assert entry["anchors_source"] == "probe" and g["anchors"]["n"] > 0 and g["new"]["n"] == 16 * 3
    for key in ("anchors_vs_new", "anchors_vs_new_seen", "anchors_vs_new_visual", "seeds_vs_new"):
        assert entry[key]["value"] > 0
    assert g["seeds"]["n"] == g["anchors"]["n"]  # each anchor's image before PGD
    for key in ("ratio", "ratio_seen", "ratio_visual"):
        r = entry[key]
        assert r["value"] > 0 and r["low"] <= r["value"] <= r["high"]
    for name in ("boundary", "core", "old", "anchors", "new"):
        assert 0 <= g[name]["jsd"] <= math.log(2) and g[name]["jsd_low"] <= g[name]["jsd"] <= g[name]["jsd_high"]
    assert "diagnose" not in metrics["timings"][0] and metrics["timings"][1]["diagnose"] > 0
    svg = (out / "plots" / "drift.svg").read_text()
    assert svg.count('data-task="2"') == 4  # boundary, core, anchors, new
    assert "drift diagnostic" in (out / "log.txt").read_text()
    state = json.loads((out / "checkpoints" / "task_01" / "state.json").read_text())
    assert state["drift"] == metrics["drift"]  # kept for --resume

    # without --diagnose: nothing runs, and the run is the same
    plain = tmp_path / "plain"
    result = CliRunner().invoke(main, ["train", *TINY, *SMALL, "--out", str(plain)])
    assert result.exit_code == 0, result.output
    plain_metrics = json.loads((plain / "metrics.json").read_text())
    assert "drift" not in plain_metrics and not (plain / "plots" / "drift.svg").exists()
    assert all("diagnose" not in t for t in plain_metrics["timings"])
    assert plain_metrics["accuracy_matrix"] == metrics["accuracy_matrix"]  # the probe leaves the random state be


def test_summary_command_over_run_folders(tmp_path, capsys):
    from segpcl.analysis.drift import main

    for seed, jsd in ((1, [0.02, 0.01, 0.03, 0.01]), (2, [0.04, 0.01, 0.02, 0.02])):
        run = tmp_path / f"lora-seed{seed}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"method": "lora", "drift": [_entry(2, jsd)]}))
    assert main([str(tmp_path)]) == 0
    assert "| lora | 2 | 3.00 [" in capsys.readouterr().out  # R of the two runs: 2 and 4
    assert main([str(tmp_path / "lora-seed1" / "missing")]) == 1
    # an ablation's setting row (method lora with --set) in a <row>-seed<N>-<hash> folder is its own group
    run = tmp_path / "lora-tsgr-from2-seed1-0a1b2c"
    run.mkdir()
    (run / "metrics.json").write_text(json.dumps({"method": "lora", "drift": [_entry(2, [0.06, 0.01, 0.03, 0.01])]}))
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| lora | 2 | 3.00 [" in out and "| lora-tsgr-from2 | 1 | 6.00 " in out


def test_diagnose_survives_resume(tmp_path):
    from segpcl.cli import main

    out = tmp_path / "r"
    three = [a if a != "data.task_sizes=[48,16]" else "data.task_sizes=[32,16,16]" for a in SMALL]
    result = CliRunner().invoke(main, ["train", *TINY, *three, "--diagnose", "--max-tasks", "2", "--out", str(out)])
    assert result.exit_code == 0, result.output
    first = json.loads((out / "metrics.json").read_text())["drift"]
    assert [e["task"] for e in first] == [2]
    result = CliRunner().invoke(main, ["train", "--resume", str(out), "--max-tasks", "3", "--quiet"])
    assert result.exit_code == 0, result.output
    drift = json.loads((out / "metrics.json").read_text())["drift"]
    assert [e["task"] for e in drift] == [2, 3] and drift[0] == first[0]
    assert drift[1]["n_old_classes"] == 48 and drift[1]["groups"]["old"]["n"] == 48 * 4

"""Paired statistics of the ablation table against hand computations."""

import math
import xml.etree.ElementTree as ET

import pytest

from segpcl.analysis.ablation_table import ablation_markdown, ablation_rows, ablation_svg, paired_interval


def _run(method, seed, last, avg=50.0, forgetting=10.0, bwt=-10.0):
    return {"method": method, "seed": seed, "last": last, "avg": avg, "forgetting": forgetting, "bwt": bwt}


def test_paired_interval_by_hand():
    # differences 1, 2, 3: mean 2, sd 1, n 3; t(0.975, 2) = 4.302652729911275
    d = paired_interval([11.0, 12.0, 13.0], [10.0, 10.0, 10.0])
    half = 4.302652729911275 * 1.0 / math.sqrt(3)
    assert d["mean"] == pytest.approx(2.0)
    assert d["low"] == pytest.approx(2.0 - half) and d["high"] == pytest.approx(2.0 + half)
    assert d["n"] == 3 and d["shown"] is False  # the interval [-0.48, 4.48] holds 0


def test_paired_interval_shows_a_consistent_effect_and_pairs_by_seed():
    d = paired_interval([11.0, 12.1, 12.9, 11.5], [10.0, 11.0, 12.0, 10.5])
    assert d["low"] > 0 and d["shown"] is True
    one = paired_interval([3.0], [1.0])
    assert one["mean"] == 2.0 and one["low"] is None and one["shown"] is None


def test_rows_pair_seeds_with_the_baseline_and_keep_every_metric():
    results = {
        "lora": [_run("lora", 1, 40.0), _run("lora", 2, 44.0), _run("lora", 3, 42.0)],
        # seed order differs: pairing is by seed, not by position
        "segpcl": [_run("segpcl", 3, 47.0), _run("segpcl", 1, 45.0), _run("segpcl", 2, 49.0)],
    }
    rows = {r["method"]: r for r in ablation_rows(results)}
    assert "vs_lora" not in rows["lora"]
    vs = rows["segpcl"]["vs_lora"]["last"]
    assert vs["mean"] == pytest.approx(5.0) and vs["high"] - vs["low"] == pytest.approx(0.0, abs=1e-9)
    assert rows["segpcl"]["last_mean"] == pytest.approx(47.0) and rows["segpcl"]["last_std"] == pytest.approx(2.0)
    assert set(rows["segpcl"]["vs_lora"]) == {"last", "avg", "forgetting", "bwt"}
    md = ablation_markdown(list(rows.values()), "toy")
    assert "| segpcl | 47.00 ± 2.00 |" in md and "+5.00 [+5.00, +5.00]" in md
    assert "no effect shown" in md  # avg, forgetting and bwt do not differ


def test_bar_plot_has_one_bar_and_whisker_per_method():
    results = {
        "lora": [_run("lora", s, 40.0 + s) for s in (1, 2, 3)],
        "a": [_run("a", s, 42.0 + 2 * s) for s in (1, 2, 3)],
        "b": [_run("b", s, 39.0 + s * 0.5) for s in (1, 2, 3)],
    }
    svg = ET.fromstring(ablation_svg(ablation_rows(results), "toy"))
    rects = [e for e in svg.iter() if e.tag.endswith("rect")]
    lines = [e for e in svg.iter() if e.tag.endswith("line")]
    assert len(rects) == 1 + 2  # background + one bar per non-baseline method
    assert len(lines) == 1 + 2 * 3  # zero line + whisker and two caps per bar

"""The ablation table: per method mean ± std over seeds, and the paired difference to a baseline method
(naive LoRA) with a 95% t-interval over the seeds both ran. An interval that contains 0 is "no effect shown".

Paired: seed s of a method is compared with seed s of the baseline (same data order, same anchors' random
draws up to the method's own changes), so seed-to-seed variation that both share cancels.
"""

from __future__ import annotations

import math

import numpy as np

METRICS = ("last", "avg", "forgetting", "bwt")
"""Reported per method; all in percentage points."""
BASELINE = "lora"

SETTING_ROWS: dict[str, tuple[str, tuple[str, ...]]] = {
    # row -> (method, --set overrides): rows that differ from a method by a setting, not by a part
    "segpcl-tsgr-from2": ("segpcl", ("method.tsgr_from_task=2",)),
}
"""Rows `segpcl ablate --methods` takes besides the methods: a method run with overrides (after the user's)."""


def ablation_row(name: str) -> tuple[str, tuple[str, ...]]:
    """(method, extra --set overrides) of an ablation row: a setting row, or a method as it is."""
    return SETTING_ROWS.get(name, (name, ()))


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def t_half_width(values: np.ndarray, level: float = 0.95) -> float:
    """Half-width of the two-sided t-interval of the mean of `values` (at least 2)."""
    from scipy import stats

    n = len(values)
    return float(stats.t.ppf(0.5 + level / 2, n - 1) * np.std(values, ddof=1) / math.sqrt(n))


def paired_interval(values: list[float], baseline: list[float], level: float = 0.95) -> dict:
    """Mean of values[i] - baseline[i] with its two-sided t-interval (None bounds with fewer than 2 pairs)."""
    d = np.asarray(values, dtype=float) - np.asarray(baseline, dtype=float)
    n = len(d)
    mean = float(d.mean())
    if n < 2:
        return {"mean": mean, "low": None, "high": None, "n": n, "shown": None}
    half = t_half_width(d, level)
    low, high = mean - half, mean + half
    return {"mean": mean, "low": low, "high": high, "n": n, "shown": bool(low > 0 or high < 0)}


def ablation_rows(results: dict[str, list[dict]], baseline: str = BASELINE) -> list[dict]:
    """results: method -> metrics of its runs (one per seed) -> one row per method (see the module docs)."""
    base = {r["seed"]: r for r in results.get(baseline, [])}
    rows = []
    for method, runs in results.items():
        row: dict = {"method": method, "seeds": [r["seed"] for r in runs]}
        for key in METRICS:
            values = [float(r[key]) for r in runs]
            row[key] = values
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std(values)
        paired = [r for r in runs if r["seed"] in base]
        if method != baseline and len(paired) >= 1:
            row["vs_" + baseline] = {
                key: paired_interval([r[key] for r in paired], [base[r["seed"]][key] for r in paired])
                for key in METRICS
            }
        rows.append(row)
    return rows


def diff_cell(d: dict | None) -> str:
    if d is None:
        return "–"
    if d["low"] is None:
        return f"{d['mean']:+.2f}"
    mark = "" if d["shown"] else " (no effect shown)"
    return f"{d['mean']:+.2f} [{d['low']:+.2f}, {d['high']:+.2f}]{mark}"


def ablation_markdown(rows: list[dict], bench: str, baseline: str = BASELINE) -> str:
    n = max((len(r["seeds"]) for r in rows), default=0)
    lines = [
        f"| method ({bench}, mean ± std over {n} seeds) | Last | Avg | Forgetting | BWT "
        f"| Last − {baseline} (95% CI) | Avg − {baseline} (95% CI) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = [f"{r[f'{k}_mean']:.2f} ± {r[f'{k}_std']:.2f}" for k in METRICS]
        vs = r.get("vs_" + baseline, {})
        lines.append(f"| {r['method']} | " + " | ".join(cells) + f" | {diff_cell(vs.get('last'))} | "
                     f"{diff_cell(vs.get('avg'))} |")  # fmt: skip
    return "\n".join(lines)


def ablation_svg(rows: list[dict], bench: str, baseline: str = BASELINE, metric: str = "last") -> str:
    """Bars: each method's paired difference of `metric` to the baseline, with its 95% interval as whiskers."""
    from ..report import _escape, _hex_colour

    items = [(r["method"], r["vs_" + baseline][metric]) for r in rows if "vs_" + baseline in r]
    width, bar, gap, left, top, bottom = 760, 34, 14, 70, 40, 150
    height = top + bottom + 260
    span = [0.0]
    for _, d in items:
        span += [d["mean"]] + [v for v in (d["low"], d["high"]) if v is not None]
    lo, hi = min(span), max(span)
    pad = 0.1 * (hi - lo or 1.0)
    lo, hi = lo - pad, hi + pad

    def y(v: float) -> float:
        return top + (hi - v) / (hi - lo) * 260

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{_escape(bench)}: {metric} minus '
        f"{_escape(baseline)}, paired over seeds, mean and 95% interval (percentage points)</text>",
        f'<line x1="{left}" y1="{y(0):.1f}" x2="{width - 10}" y2="{y(0):.1f}" stroke="#333333"/>',
        f'<text x="{left - 6}" y="{y(0) + 4:.1f}" text-anchor="end">0</text>',
        f'<text x="{left - 6}" y="{y(hi) + 10:.1f}" text-anchor="end">{hi:+.1f}</text>',
        f'<text x="{left - 6}" y="{y(lo):.1f}" text-anchor="end">{lo:+.1f}</text>',
        f'<text x="16" y="{top + 130}" transform="rotate(-90 16 {top + 130})" text-anchor="middle">'
        f"difference in {metric} (points)</text>",
    ]
    for i, (method, d) in enumerate(items):
        x = left + gap + i * (bar + gap)
        y0, y1 = sorted((y(0), y(d["mean"])))
        colour = _hex_colour(i, len(items))
        out.append(f'<rect x="{x}" y="{y0:.1f}" width="{bar}" height="{max(y1 - y0, 0.5):.1f}" fill="{colour}"/>')
        if d["low"] is not None:
            cx = x + bar / 2
            out.append(
                f'<line x1="{cx}" y1="{y(d["low"]):.1f}" x2="{cx}" y2="{y(d["high"]):.1f}" stroke="#000000"/>'
                f'<line x1="{cx - 6}" y1="{y(d["low"]):.1f}" x2="{cx + 6}" y2="{y(d["low"]):.1f}" stroke="#000000"/>'
                f'<line x1="{cx - 6}" y1="{y(d["high"]):.1f}" x2="{cx + 6}" y2="{y(d["high"]):.1f}" stroke="#000000"/>'
            )
        ty = top + 260 + 12
        out.append(
            f'<text x="{x + bar / 2}" y="{ty}" transform="rotate(45 {x + bar / 2} {ty})">{_escape(method)}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)

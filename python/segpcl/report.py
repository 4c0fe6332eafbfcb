"""Plain-text and markdown tables of results: the accuracy matrix of a run and the ablation table."""

from __future__ import annotations

import numpy as np


def accuracy_table(metrics: dict) -> str:
    from .metrics import seen_accuracy_of

    acc, seen = metrics["accuracy_matrix"], seen_accuracy_of(metrics)
    n = len(acc)
    head = "after task | " + " ".join(f"T{j + 1:>5}" for j in range(n)) + " |   all"
    lines = [head, "-" * len(head)]
    for t, row in enumerate(acc):
        cells = " ".join(f"{v:6.1f}" for v in row) + " " * 7 * (n - len(row))
        lines.append(f"{t + 1:>10} | {cells} | {seen[t]:5.1f}")
    lines.append(
        f"Last {metrics['last']:.2f}  Avg {metrics['avg']:.2f}  "
        f"Forgetting {metrics['forgetting']:.2f}  BWT {metrics['bwt']:.2f}"
    )
    return "\n".join(lines)


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def ablation_rows(results: dict[str, list[dict]]) -> list[dict]:
    """results: method -> list of metrics (one per seed) -> rows with mean and std of Last and Avg."""
    rows = []
    for method, runs in results.items():
        last_m, last_s = mean_std([r["last"] for r in runs])
        avg_m, avg_s = mean_std([r["avg"] for r in runs])
        fgt_m, fgt_s = mean_std([r["forgetting"] for r in runs])
        rows.append(
            {
                "method": method,
                "seeds": [r["seed"] for r in runs],
                "last_mean": last_m,
                "last_std": last_s,
                "avg_mean": avg_m,
                "avg_std": avg_s,
                "forgetting_mean": fgt_m,
                "forgetting_std": fgt_s,
                "last": [r["last"] for r in runs],
                "avg": [r["avg"] for r in runs],
            }
        )
    return rows


def ablation_markdown(rows: list[dict], bench: str) -> str:
    lines = [
        f"| method ({bench}) | Last | Avg | Forgetting |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['last_mean']:.2f} ± {r['last_std']:.2f} | {r['avg_mean']:.2f} ± {r['avg_std']:.2f} "
            f"| {r['forgetting_mean']:.2f} ± {r['forgetting_std']:.2f} |"
        )
    return "\n".join(lines)


def _hex_colour(j: int, n: int) -> str:
    """A plain #rrggbb colour (every SVG renderer reads it; hsl() is not in SVG 1.1)."""
    import colorsys

    r, g, b = colorsys.hls_to_rgb(j / max(n, 1), 0.45, 0.65)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def accuracy_svg(metrics: dict, width: int = 720, height: int = 380) -> str:
    """A dependency-free SVG plot: accuracy (percent) on each task's classes (thin lines, one colour per task)
    and over all seen classes (thick black line) after each training task, with a legend; every point is
    marked, so a task seen only once (the last) shows too."""
    from .metrics import seen_accuracy_of

    acc, total = metrics["accuracy_matrix"], seen_accuracy_of(metrics)
    n = max(len(acc), 2)
    left, right, top, bottom = 56, 150, 28, 40
    x = lambda t: left + (width - left - right) * t / (n - 1)  # noqa: E731
    y = lambda v: top + (height - top - bottom) * (1 - v / 100)  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
    ]
    for v in range(0, 101, 20):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#dddddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>')
    for t in range(len(acc)):
        parts.append(f'<text x="{x(t):.1f}" y="{height - 22}" text-anchor="middle">{t + 1}</text>')
    parts.append(
        f'<text x="{(left + width - right) / 2:.1f}" y="{height - 6}" text-anchor="middle">after training task</text>'
    )
    mid = (top + height - bottom) / 2
    parts.append(
        f'<text x="14" y="{mid:.1f}" text-anchor="middle" transform="rotate(-90 14 {mid:.1f})">'
        "top-1 accuracy (%)</text>"
    )
    legend_x, legend_y = width - right + 16, top + 4
    step = min(14.0, (height - top - bottom - 20) / max(len(acc), 1))
    for j in range(len(acc)):
        colour = _hex_colour(j, len(acc))
        pts = [(x(t), y(acc[t][j])) for t in range(j, len(acc))]
        if len(pts) > 1:
            points = " ".join(f"{px:.1f},{py:.1f}" for px, py in pts)
            parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.2"/>')
        for px, py in pts:
            parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.2" fill="{colour}"/>')
        ly = legend_y + 20 + step * j
        parts.append(
            f'<line x1="{legend_x}" x2="{legend_x + 18}" y1="{ly:.1f}" y2="{ly:.1f}" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        parts.append(f'<text x="{legend_x + 24}" y="{ly + 4:.1f}">task {j + 1} classes</text>')
    if total:
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in enumerate(total))
        if len(total) > 1:
            parts.append(f'<polyline points="{points}" fill="none" stroke="#000000" stroke-width="3"/>')
        for t, v in enumerate(total):
            parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="3.5" fill="#000000"/>')
    parts.append(
        f'<line x1="{legend_x}" x2="{legend_x + 18}" y1="{legend_y + 4}" y2="{legend_y + 4}" stroke="#000000" '
        'stroke-width="3"/>'
    )
    parts.append(f'<text x="{legend_x + 24}" y="{legend_y + 8}">all seen classes</text>')
    title = f"{metrics.get('method', '')} on {metrics.get('bench', '')}: Last {total[-1]:.1f} %" if total else ""
    parts.append(f'<text x="{left}" y="{top - 10}" font-size="13">{title}</text>')
    parts.append("</svg>")
    return "\n".join(parts)

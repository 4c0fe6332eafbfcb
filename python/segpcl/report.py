"""Plain-text and markdown tables of results: the accuracy matrix of a run and the ablation table."""

from __future__ import annotations

import numpy as np


def accuracy_table(metrics: dict) -> str:
    acc = metrics["accuracy_matrix"]
    n = len(acc)
    head = "after task | " + " ".join(f"T{j + 1:>5}" for j in range(n)) + " |   all"
    lines = [head, "-" * len(head)]
    for t, row in enumerate(acc):
        cells = " ".join(f"{v:6.1f}" for v in row) + " " * 7 * (n - len(row))
        lines.append(f"{t + 1:>10} | {cells} | {metrics['task_accuracy'][t]:5.1f}")
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


def accuracy_svg(metrics: dict, width: int = 640, height: int = 360) -> str:
    """A dependency-free SVG plot: accuracy on each task's classes (thin lines) and over all seen classes
    (thick line) after each training task."""
    acc, total = metrics["accuracy_matrix"], metrics["task_accuracy"]
    n = max(len(acc), 2)
    left, right, top, bottom = 48, 16, 16, 36
    x = lambda t: left + (width - left - right) * t / (n - 1)  # noqa: E731
    y = lambda v: top + (height - top - bottom) * (1 - v / 100)  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
    ]
    for v in range(0, 101, 20):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>')
    for t in range(len(acc)):
        parts.append(f'<text x="{x(t):.1f}" y="{height - 18}" text-anchor="middle">{t + 1}</text>')
    parts.append(f'<text x="{width / 2}" y="{height - 4}" text-anchor="middle">after task</text>')
    for j in range(len(acc)):
        points = " ".join(f"{x(t):.1f},{y(acc[t][j]):.1f}" for t in range(j, len(acc)))
        hue = int(360 * j / max(len(acc), 1))
        parts.append(f'<polyline points="{points}" fill="none" stroke="hsl({hue},60%,55%)" stroke-width="1.2"/>')
    points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in enumerate(total))
    parts.append(f'<polyline points="{points}" fill="none" stroke="black" stroke-width="3"/>')
    title = f"{metrics.get('method', '')} on {metrics.get('bench', '')}: Last {total[-1]:.1f}" if total else ""
    parts.append(f'<text x="{left + 6}" y="{top + 12}">{title} (thick: all seen classes; thin: each task)</text>')
    parts.append("</svg>")
    return "\n".join(parts)

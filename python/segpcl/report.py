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

"""Plain-text and CSV tables of results: the accuracy matrix of a run, and one summary row per run over several
runs (`segpcl report`)."""

from __future__ import annotations


def accuracy_table(metrics: dict) -> str:
    from ..metrics import seen_accuracy_of

    acc, seen = metrics["accuracy_matrix"], seen_accuracy_of(metrics)
    n = len(acc)
    head = "after task | " + " ".join(f"T{j + 1:>5}" for j in range(n)) + " |   all"
    lines = [head, "-" * len(head)]
    for t, row in enumerate(acc):
        cells = " ".join(f"{v:6.1f}" for v in row) + " " * 7 * (n - len(row))
        lines.append(f"{t + 1:>10} | {cells} | {seen[t]:5.1f}")
    for label, values in (
        ("zero-shot", metrics.get("zero_shot_task_accuracy")),
        ("pre-task", metrics.get("pre_task_accuracy")),
    ):
        if values and any(v is not None for v in values[:n]):
            cells = " ".join("     -" if v is None else f"{v:6.1f}" for v in values[:n])
            lines.append(f"{label:>10} | {cells} |")
    fwt = metrics.get("fwt")
    lines.append(
        f"Last {metrics['last']:.2f}  Avg {metrics['avg']:.2f}  "
        f"Forgetting {metrics['forgetting']:.2f}  BWT {metrics['bwt']:.2f}"
        + (f"  FWT {fwt:.2f}" if fwt is not None else "")
    )
    clip = metrics.get("clip_branch")
    if clip and clip.get("accuracy_matrix") != acc:  # the method's own inference is not CLIP's alone
        pre = clip.get("pre_task_accuracy_mean")
        lines.append(
            f"CLIP branch only: Last {clip['last']:.2f}  Avg {clip['avg']:.2f}  "
            f"Forgetting {clip['forgetting']:.2f}  BWT {clip['bwt']:.2f}"
            + (f"  pre-task mean {pre:.2f}" if pre is not None else "")
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- several runs


def load_run_metrics(path) -> tuple[str, dict]:
    """(label, metrics) of a run directory (its metrics.json) or of a metrics.json file; the label is the run's
    folder name."""
    import json
    from pathlib import Path

    from ..errors import ConfigError

    p = Path(path)
    file = p / "metrics.json" if p.is_dir() else p
    if not file.is_file():
        raise ConfigError(f"{p} is neither a segpcl run directory (no metrics.json) nor a metrics.json file")
    try:
        metrics = json.loads(file.read_text())
    except ValueError as err:
        raise ConfigError(f"{file} is not valid JSON ({err})") from None
    if not isinstance(metrics, dict) or "accuracy_matrix" not in metrics:
        raise ConfigError(f"{file} holds no accuracy_matrix: not the metrics.json of a segpcl run")
    return (file.parent.name or str(file)), metrics


REPORT_COLUMNS = ("run", "bench", "method", "seed", "tasks", "last", "avg", "forgetting", "bwt", "fwt")


def run_summary(label: str, metrics: dict) -> dict:
    """One row of `segpcl report`: the run's final numbers (fwt None when the run did not measure it)."""
    return {
        "run": label,
        "bench": metrics.get("bench"),
        "method": metrics.get("method"),
        "seed": metrics.get("seed"),
        "tasks": len(metrics["accuracy_matrix"]),
        "last": metrics.get("last"),
        "avg": metrics.get("avg"),
        "forgetting": metrics.get("forgetting"),
        "bwt": metrics.get("bwt"),
        "fwt": metrics.get("fwt"),
    }


def summary_csv(rows: list[dict]) -> str:
    """The rows of run_summary as CSV (numbers with 4 decimals, empty cells for missing values)."""
    import csv
    import io

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(REPORT_COLUMNS)
    for r in rows:
        writer.writerow(
            ["" if r[k] is None else (f"{r[k]:.4f}" if isinstance(r[k], float) else r[k]) for k in REPORT_COLUMNS]
        )
    return buf.getvalue()


def summary_table(rows: list[dict]) -> str:
    """Plain-text table of run_summary rows."""
    fmt = lambda v: "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v))  # noqa: E731
    cells = [[fmt(r[k]) for k in REPORT_COLUMNS] for r in rows]
    widths = [max(len(k), *(len(c[i]) for c in cells)) for i, k in enumerate(REPORT_COLUMNS)]
    lines = ["  ".join(k.ljust(w) for k, w in zip(REPORT_COLUMNS, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)

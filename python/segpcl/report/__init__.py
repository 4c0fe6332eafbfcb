"""Plain-text and markdown tables of results: the accuracy matrix of a run and the ablation table."""

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
    from ..metrics import seen_accuracy_of

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


def _escape(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def curves_svg(runs: list[tuple[str, dict]], width: int = 760, height: int = 420) -> str:
    """A dependency-free SVG of several runs on one figure: accuracy over all seen classes (percent) against the
    number of tasks learned, one coloured line (with dots) and legend entry per run; runs of different lengths
    (10- and 20-step streams) share the x axis up to the longest."""
    from ..metrics import seen_accuracy_of

    series = [(label, list(seen_accuracy_of(m))) for label, m in runs]
    n = max([len(v) for _, v in series] + [2])
    left, right, top, bottom = 52, 220, 28, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    x = lambda t: left + plot_w * t / (n - 1)  # noqa: E731
    y = lambda v: top + plot_h * (1 - v / 100)  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        'font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="16" font-size="13">Accuracy on all seen classes (%) after each task</text>',
    ]
    for v in range(0, 101, 20):
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>')
    step = 1 if n <= 12 else 2 if n <= 24 else 5
    for t in range(0, n, step):
        parts.append(f'<text x="{x(t):.1f}" y="{height - bottom + 16}" text-anchor="middle">{t + 1}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">tasks learned</text>')
    for i, (label, values) in enumerate(series):
        colour = f"hsl({int(360 * i / max(len(series), 1))},65%,42%)"
        points = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in enumerate(values))
        parts.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for t, v in enumerate(values):
            parts.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"/>')
        ly = top + 14 * i + 6
        last = f" ({values[-1]:.1f})" if values else ""
        parts.append(
            f'<line x1="{width - right + 12}" x2="{width - right + 30}" y1="{ly}" y2="{ly}" '
            f'stroke="{colour}" stroke-width="3"/>'
        )
        parts.append(f'<text x="{width - right + 36}" y="{ly + 4}">{_escape(label)}{last}</text>')
    parts.append("</svg>")
    return "\n".join(parts)

"""Dependency-free SVG plots of results: a run's accuracy per task, several runs' accuracy curves, and the colour
and escaping helpers other plots (analysis/) share."""

from __future__ import annotations


def _hex_colour(j: int, n: int) -> str:
    """A plain #rrggbb colour (every SVG renderer reads it; hsl() is not in SVG 1.1)."""
    import colorsys

    r, g, b = colorsys.hls_to_rgb(j / max(n, 1), 0.45, 0.65)
    return f"#{round(r * 255):02x}{round(g * 255):02x}{round(b * 255):02x}"


def _escape(text: str) -> str:
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


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

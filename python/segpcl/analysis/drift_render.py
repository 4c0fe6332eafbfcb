"""Rendering of the drift diagnostic (analysis/drift.py, which re-exports these): the per-task table of the
run log, the per-task SVG plot, and the markdown summary of several runs."""

from __future__ import annotations

from .ablation_table import BASELINE, diff_cell

GROUPS = ("boundary", "core", "anchors", "new")
"""The groups of the plot, in order."""


def _fmt(r: dict | None, digits: int = 2) -> str:
    if not r:
        return "-"
    return f"{r['value']:.{digits}f} [{r['low']:.{digits}f}, {r['high']:.{digits}f}]"


def _mean(g: dict) -> str:
    return f"{g['jsd']:.3g}" if g.get("n") else "-"


def drift_table(entries: list[dict]) -> str:
    """Plain-text table: per task, mean D of the groups (n in parentheses) and the ratios with intervals."""
    head = (
        f"{'task':>4} | {'boundary':>16} | {'core':>16} | {'anchors':>16} | {'new':>16} | "
        f"{'R = b/c [95% CI]':>22} | {'R by kind':>22} | {'anchors/new':>22}"
    )
    lines = ["drift diagnostic: mean JSD over the old classes (n)", head, "-" * len(head)]
    for e in entries:
        g = e["groups"]
        cells = [f"{_mean(g[k])} ({g[k].get('n', 0)})" for k in GROUPS]
        lines.append(
            f"{e['task']:>4} | "
            + " | ".join(f"{c:>16}" for c in cells)
            + f" | {_fmt(e.get('ratio')):>22} | {_fmt(e.get('ratio_kind')):>22} | {_fmt(e.get('anchors_vs_new')):>22}"
        )
    return "\n".join(lines)


GROUP_COLOURS = {"boundary": "#d62728", "core": "#1f77b4", "anchors": "#2ca02c", "new": "#7f7f7f"}


def drift_svg(entries: list[dict], title: str = "", width: int = 760, height: int = 380) -> str:
    """A dependency-free SVG: per task, bars of mean D(x) for boundary, core, anchors and random new images
    with their bootstrap 95 % intervals as whiskers, and R_t written above each task."""
    from ..report.svg import _escape

    left, right, top, bottom = 64, 130, 40, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    highs = [g.get("jsd_high", 0.0) for e in entries for g in e["groups"].values() if g.get("n")]
    ymax = max(highs + [1e-6]) * 1.1
    y = lambda v: top + plot_h * (1 - v / ymax)  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        f'<text x="{left}" y="16" font-size="13">{_escape(title or "Drift of old classes: mean JSD per group")}</text>',
    ]
    for i in range(5):
        v = ymax * i / 4
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#dddddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    slot = plot_w / max(len(entries), 1)
    bar = slot * 0.8 / len(GROUPS)
    for i, e in enumerate(entries):
        x0 = left + slot * i + slot * 0.1
        for j, name in enumerate(GROUPS):
            g = e["groups"].get(name, {})
            if not g.get("n"):
                continue
            bx, colour = x0 + bar * j, GROUP_COLOURS[name]
            parts.append(
                f'<rect class="bar" data-task="{e["task"]}" data-group="{name}" x="{bx:.1f}" y="{y(g["jsd"]):.1f}" '
                f'width="{bar * 0.9:.1f}" height="{y(0) - y(g["jsd"]):.1f}" fill="{colour}"/>'
            )
            cx = bx + bar * 0.45
            parts.append(
                f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(g["jsd_low"]):.1f}" y2="{y(g["jsd_high"]):.1f}" '
                'stroke="#000000" stroke-width="1"/>'
            )
        r = e.get("ratio")
        label = f"R {r['value']:.2f}" if r else "R -"
        parts.append(f'<text x="{left + slot * (i + 0.5):.1f}" y="{top - 4}" text-anchor="middle">{label}</text>')
        tx = left + slot * (i + 0.5)
        parts.append(f'<text x="{tx:.1f}" y="{height - bottom + 16}" text-anchor="middle">{e["task"]}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.1f}" y="{height - 8}" text-anchor="middle">task</text>')
    mid = top + plot_h / 2
    parts.append(
        f'<text x="14" y="{mid:.1f}" text-anchor="middle" transform="rotate(-90 14 {mid:.1f})">'
        "mean JSD (old classes)</text>"
    )
    for j, name in enumerate(GROUPS):
        ly = top + 10 + 16 * j
        parts.append(
            f'<rect x="{width - right + 14}" y="{ly - 8}" width="12" height="10" fill="{GROUP_COLOURS[name]}"/>'
        )
        parts.append(f'<text x="{width - right + 32}" y="{ly + 1}">{name}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def summary_markdown(summary: dict) -> str:
    lines = [
        "| method | runs | R = boundary / core | R by class kind | D(anchors) / D(new) | D(boundary) | D(core) "
        "| D(anchors) | D(new) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        runs = max((v or {}).get("runs", 0) for v in s.values())
        lines.append(
            f"| {method} | {runs} | {_fmt(s['ratio'])} | {_fmt(s['ratio_kind'])} | {_fmt(s['anchors_vs_new'])} | "
            + " | ".join(_fmt(s[f"groups.{g}"], 4) for g in GROUPS)
            + " |"
        )
    lines += [
        "",
        "D(group) / D(new) by measure (JSD over the old classes, JSD over all seen classes, visual 1 - cos); "
        "seeds = the anchors' images before PGD:",
        "",
        "| method | group | old-class JSD | seen-class JSD | visual |",
        "|---|---|---|---|---|",
    ]
    for method, s in summary.items():
        for group in ("anchors", "seeds"):
            cells = [s[f"{group}_vs_new{m}"] for m in ("", "_seen", "_visual")]
            if any(cells):
                lines.append(f"| {method} | {group} | " + " | ".join(_fmt(c) for c in cells) + " |")
    paired = {m: s["ratio_vs_" + BASELINE] for m, s in summary.items() if s.get("ratio_vs_" + BASELINE)}
    if paired:
        lines += ["", f"| method | R - R({BASELINE}), paired by seed (95 % t) | pairs |", "|---|---|---|"]
        lines += [f"| {method} | {diff_cell(d)} | {d['n']} |" for method, d in paired.items()]
    return "\n".join(lines)

"""`segpcl report`: several runs side by side (the library side is the package segpcl.report)."""

from __future__ import annotations

from pathlib import Path

import click

from ..engine.nofollow import atomic_write_text, make_dir


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder for accuracy_curves.svg and summary.csv.",
)
def report(runs, out):
    """Several runs side by side: a table (Last, Avg, forgetting, BWT, FWT), summary.csv, and one SVG figure of
    the accuracy on all seen classes against the number of tasks learned (RUN: a run directory or metrics.json)."""
    from ..report import curves_svg, load_run_metrics, run_summary, summary_csv, summary_table

    loaded = [load_run_metrics(r) for r in runs]
    labels = [label for label, _ in loaded]
    if len(set(labels)) < len(labels):  # two runs with the same folder name: use the paths given
        loaded = [(str(r), m) for r, (_, m) in zip(runs, loaded, strict=True)]
    rows = [run_summary(label, m) for label, m in loaded]
    make_dir(out)
    atomic_write_text(out / "accuracy_curves.svg", curves_svg(loaded))
    atomic_write_text(out / "summary.csv", summary_csv(rows))
    click.echo(summary_table(rows))
    click.echo(f"figure: {out / 'accuracy_curves.svg'}  table: {out / 'summary.csv'}")

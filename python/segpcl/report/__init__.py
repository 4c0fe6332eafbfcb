"""Tables and plots of results: the accuracy matrix of a run (text, SVG) and the summary of several runs
(`segpcl report`: text, CSV, SVG curves). tables.py holds the tables, svg.py the plots."""

from __future__ import annotations

from .svg import _escape, _hex_colour, accuracy_svg, curves_svg
from .tables import REPORT_COLUMNS, accuracy_table, load_run_metrics, run_summary, summary_csv, summary_table

__all__ = [
    "REPORT_COLUMNS",
    "_escape",
    "_hex_colour",
    "accuracy_svg",
    "accuracy_table",
    "curves_svg",
    "load_run_metrics",
    "run_summary",
    "summary_csv",
    "summary_table",
]

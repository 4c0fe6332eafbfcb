"""Diagnostics that measure a run rather than change it (nothing here is used by the method)."""

from .drift import (
    DriftInputs,
    bootstrap_ratio,
    boundary_core_split,
    boundary_scores,
    drift_diagnostic,
    drift_svg,
    drift_table,
    js_divergence,
)

__all__ = [
    "DriftInputs",
    "boundary_core_split",
    "boundary_scores",
    "bootstrap_ratio",
    "drift_diagnostic",
    "drift_svg",
    "drift_table",
    "js_divergence",
]

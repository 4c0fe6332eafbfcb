"""Diagnostics that measure a run rather than change it (nothing here is used by the method). The drift
diagnostic's names are imported on first use, so the CLI can list ablation rows without importing torch."""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name not in __all__:
        raise AttributeError(f"module 'segpcl.analysis' has no attribute {name!r}")
    return getattr(importlib.import_module("segpcl.analysis.drift"), name)

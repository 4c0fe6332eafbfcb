"""`segpcl.train`: one call from a config (or overrides of the toy defaults) to a finished run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import RunConfig, resolve_config
from .entry import run_training
from .run import RunResult


def train(
    config: RunConfig | dict[str, Any] | None = None,
    out_dir: str | Path | None = None,
    bench: str = "toy",
    progress: bool = True,
    resume: str | Path | None = None,
) -> RunResult:
    """Train (or, with `resume`, continue) a class-incremental run; returns its directory and metrics.

    `config` is a RunConfig, or a nested dict of overrides such as {"model": {"arch": "tiny"},
    "train": {"epochs": 1}} applied over the benchmark's preset (as `segpcl train --set` does)."""
    if resume is not None:
        return run_training(resume=Path(resume), progress=progress)
    if not isinstance(config, RunConfig):
        overrides = dict(config or {})
        config = resolve_config(overrides.get("data", {}).get("bench", bench), overrides=overrides)
    return run_training(config, out_dir=Path(out_dir) if out_dir is not None else None, progress=progress)

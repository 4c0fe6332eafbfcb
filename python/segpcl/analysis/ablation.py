"""`segpcl ablate`: the paper's ablation rows (methods) over seeds, as one table.

A row is a method or one of ablation_table.SETTING_ROWS (a method with --set overrides, e.g. segpcl-tsgr-from2). Each
(row, seed) run gets its own run directory under the output folder; a run found there is reused
(finished) or resumed (interrupted) only if its resolved config, apart from the seed, equals the requested
one, so an ablation can be stopped and restarted but never mixes settings. A run with other settings stops
the command with the difference, or, with `fresh`, is left alone while a new run goes into
`<method>-seed<N>-<hash of the settings>`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from ..config import RunConfig
from ..engine.checkpoint import write_json
from ..engine.claim import is_run_dir
from ..engine.entry import run_training
from ..engine.nofollow import atomic_write_text, make_dir
from ..engine.resume import config_differences, load_run_config
from ..errors import ConfigError
from .ablation_table import BASELINE, ablation_markdown, ablation_rows, ablation_svg


def _finished(run_dir: Path, max_tasks: int | None = None) -> dict | None:
    """The metrics of a run that completed its tasks (the first `max_tasks` with --max-tasks), else None."""
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    try:
        metrics = json.loads(path.read_text())
    except (OSError, ValueError):
        return None  # rewritten from the verified checkpoints when the run is resumed
    if not isinstance(metrics, dict) or not metrics.get("n_tasks"):
        return None
    done = min(metrics["n_tasks"], max_tasks or metrics["n_tasks"])
    return metrics if metrics.get("tasks_completed") == done else None


def _not_seed(key: str) -> bool:
    return key != "train.seed"


def settings_hash(cfg: RunConfig) -> str:
    """8 hex digits of the resolved config without the seed (names --fresh folders)."""
    data = cfg.to_dict()
    data["train"] = {k: v for k, v in data["train"].items() if k != "seed"}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:8]


def _plan(out: Path, method: str, seed: int, cfg: RunConfig, fresh: bool) -> tuple[Path, bool]:
    """(run directory, whether it holds a run of these settings) for one (method, seed) cell."""
    candidates = [out / f"{method}-seed{seed}", out / f"{method}-seed{seed}-{settings_hash(cfg)}"]
    for run_dir in candidates if fresh else candidates[:1]:
        if not run_dir.exists():
            return run_dir, False
        if not is_run_dir(run_dir):
            raise ConfigError(
                f"{run_dir} is in the way: it exists but is not a segpcl run; move it or use another --out"
            )
        existing = load_run_config(run_dir)
        diff = config_differences(existing, cfg, _not_seed)
        if existing.train.seed != seed:
            diff.insert(0, f"train.seed: {existing.train.seed!r} -> {seed!r}")
        if not diff:
            return run_dir, True
        if not fresh:
            shown = "; ".join(diff[:6]) + (f"; and {len(diff) - 6} more" if len(diff) > 6 else "")
            raise ConfigError(
                f"{run_dir} holds a run with other settings ({shown}); nothing was run. Pass --fresh to train "
                f"new runs next to it, or use another --out"
            )
    raise ConfigError(f"{candidates[-1]} holds a run with other settings too; use another --out")


def plan_cells(configs: dict[tuple[str, int], RunConfig], out: Path, fresh: bool) -> dict:
    """(name, seed) -> (run directory under `out`, whether it holds a run of these settings), for every cell,
    checked before any training (a mismatch stops the command with nothing changed); creates `out`."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    plans = {key: _plan(out, key[0], key[1], cfg, fresh) if out.is_dir() else (out / f"{key[0]}-seed{key[1]}", False)
             for key, cfg in configs.items()}  # fmt: skip
    try:
        make_dir(out)
    except OSError as exc:
        raise ConfigError(f"cannot create the folder {out}: {exc.strerror or exc}") from None
    return plans


def run_cell(run_dir: Path, ours: bool, cfg: RunConfig, progress: bool) -> dict:
    """The metrics of one planned cell: read if finished, resumed if interrupted, else trained into run_dir."""
    metrics = _finished(run_dir, cfg.data.max_tasks) if ours else None
    if metrics is None:
        if ours:
            metrics = run_training(resume=run_dir, progress=progress).metrics
        else:
            metrics = run_training(cfg, out_dir=run_dir, progress=progress).metrics
    return metrics


def run_ablation(
    config_for: Callable[[str, int], RunConfig],
    methods: list[str],
    seeds: list[int],
    out: Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    fresh: bool = False,
    baseline: str = BASELINE,
) -> dict:
    """Train (or reuse) every (method, seed) run under `out`; write ablation.json/md/svg, each row paired with
    `baseline`'s runs of the same seeds."""
    from ..config import validate

    configs = {(m, s): config_for(m, s) for m in methods for s in seeds}
    for cfg in configs.values():
        validate(cfg)
    first = configs[(methods[0], seeds[0])]
    out = Path(out or Path("runs") / f"ablation-{first.data.bench}-{datetime.now():%Y%m%d-%H%M%S}")
    plans = plan_cells(configs, out, fresh)
    results: dict[str, list[dict]] = {}
    for method in methods:
        for seed in seeds:
            run_dir, ours = plans[(method, seed)]
            metrics = run_cell(run_dir, ours, configs[(method, seed)], progress)
            echo(f"{method:<18} seed {seed}: Last {metrics['last']:.2f}  Avg {metrics['avg']:.2f}  ({run_dir.name})")
            results.setdefault(method, []).append(metrics)
    rows = ablation_rows(results, baseline)
    markdown = ablation_markdown(rows, first.data.bench, baseline)
    settings = {
        "settings_hash": settings_hash(first),
        "runs": {f"{m}-seed{s}": str(p) for (m, s), (p, _) in plans.items()},
    }
    summary = {"bench": first.data.bench, "seeds": seeds, "baseline": baseline, "rows": rows, **settings}
    write_json(out / "ablation.json", summary)
    atomic_write_text(out / "ablation.md", markdown + "\n")
    if any(key.startswith("vs_") for row in rows for key in row):
        atomic_write_text(out / "ablation.svg", ablation_svg(rows, first.data.bench, baseline) + "\n")
    return {"rows": rows, "markdown": markdown, "out": out}

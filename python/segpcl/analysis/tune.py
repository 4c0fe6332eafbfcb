"""`segpcl tune`: every combination of a grid of config values, trained over seeds and measured on the
validation split only (data.val_fraction > 0; TUNE_VAL_FRACTION unless the config sets it), and the one with the
best mean validation Last chosen (ties: the earlier combination in grid order).

Combination i's run for seed s lives in `<out>/c<ii>-seed<s>` under the ablation's planning (analysis/ablation.py):
a finished run is reused, an interrupted one resumed, one with other settings stops the command before anything
trains. tune.json and tune.md list every combination with its validation Last/Avg per seed and their means.
"""

from __future__ import annotations

import itertools
import json
import shlex
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..engine.checkpoint import write_json
from ..engine.nofollow import atomic_write_text
from ..errors import ConfigError
from .ablation import plan_cells, run_cell
from .ablation_table import mean_std

TUNE_VAL_FRACTION = 0.1
"""The validation share `segpcl tune` holds out when the config does not set data.val_fraction."""
NOT_IN_GRID = {
    "train.seed": "give the seeds with --seeds",
    "data.seed": "the data sample follows the seed (--seeds)",
    "data.val_fraction": "every combination must be measured on the same validation images (use --set)",
    "data.bench": "give the benchmark with --bench",
}


def parse_grid(items: list[str] | tuple[str, ...]) -> dict[str, list]:
    """`["train.lr=0.01,0.03", "method.beta=0.5,1"]` -> {"train.lr": [0.01, 0.03], "method.beta": [0.5, 1]}; the
    values are read as YAML, as --set reads them (a list value in brackets: `data.task_sizes=[8,8],[4,12]`)."""
    import yaml

    grid: dict[str, list] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key or not raw.strip():
            raise ConfigError(f"--grid takes KEY=V1,V2,... (e.g. train.lr=0.01,0.03), got {item!r}")
        if key in NOT_IN_GRID:
            raise ConfigError(f"--grid cannot vary {key}: {NOT_IN_GRID[key]}")
        if key in grid:
            raise ConfigError(f"--grid names {key} twice; give all its values in one --grid {key}=V1,V2,...")
        try:
            values = yaml.safe_load(f"[{raw}]")
        except yaml.YAMLError:
            raise ConfigError(f"--grid {item!r}: the values are not a comma-separated YAML list") from None
        if len(values) != len({json.dumps(v, sort_keys=True) for v in values}):
            raise ConfigError(f"--grid {item!r} repeats a value")
        grid[key] = values
    if not grid:
        raise ConfigError("segpcl tune needs at least one --grid KEY=V1,V2,...")
    return grid


def set_text(key: str, value: Any) -> str:
    """`key=value` as --set reads it back to the same value."""
    return f"{key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}"


def combinations(grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    return [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]


def tune_configs(
    config_for: Callable[[list[str], int], RunConfig], combos: list[dict], seeds: list[int]
) -> dict[tuple[str, int], RunConfig]:
    """(c<ii>, seed) -> its validated config, on the validation split (TUNE_VAL_FRACTION unless set)."""
    from ..config import validate

    configs = {}
    for i, combo in enumerate(combos):
        for seed in seeds:
            cfg = config_for([set_text(k, v) for k, v in combo.items()], seed)
            if cfg.data.val_fraction <= 0:  # tuning never reads the test split
                cfg.data.val_fraction = TUNE_VAL_FRACTION
            validate(cfg)
            configs[(f"c{i + 1:02d}", seed)] = cfg
    return configs


def run_tune(
    config_for: Callable[[list[str], int], RunConfig],
    grid: dict[str, list],
    seeds: list[int],
    out: Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
    fresh: bool = False,
) -> dict:
    """Train every (combination, seed) on the validation split; write tune.json and tune.md; return the summary
    (tune.json's content, plus "markdown" and "out"). `config_for(set_items, seed)` resolves one run's config."""
    combos = combinations(grid)
    configs = tune_configs(config_for, combos, seeds)
    first = next(iter(configs.values()))
    out = Path(out or Path("runs") / f"tune-{first.data.bench}-{datetime.now():%Y%m%d-%H%M%S}")
    plans = plan_cells(configs, out, fresh)
    rows = []
    for i, combo in enumerate(combos):
        name, runs = f"c{i + 1:02d}", []
        for seed in seeds:
            run_dir, ours = plans[(name, seed)]
            metrics = run_cell(run_dir, ours, configs[(name, seed)], progress)
            if metrics.get("split") != "validation":  # a run from before data.val_fraction existed
                raise ConfigError(f"{run_dir} was not measured on the validation split; use another --out")
            echo(f"{name} seed {seed}: validation Last {metrics['last']:.2f}  Avg {metrics['avg']:.2f}  {combo}")
            runs.append((run_dir, metrics))
        rows.append(_row(name, combo, seeds, runs))
    chosen = max(rows, key=lambda r: (r["last_mean"], -rows.index(r)))
    summary = {
        "bench": first.data.bench,
        "method": first.method.name,
        "split": "validation",
        "val_fraction": first.data.val_fraction,
        "seeds": seeds,
        "grid": grid,
        "chosen_by": "mean validation Last over the seeds (ties: the earlier combination)",
        "combinations": rows,
        "chosen": chosen["name"],
        "set_line": " ".join(f"--set {shlex.quote(s)}" for s in chosen["set"]),
    }
    write_json(out / "tune.json", summary)
    markdown = tune_markdown(summary)
    atomic_write_text(out / "tune.md", markdown + "\n")
    return {**summary, "markdown": markdown, "out": out}


def _row(name: str, combo: dict, seeds: list[int], runs: list[tuple[Path, dict]]) -> dict:
    row: dict = {"name": name, "values": combo, "set": [set_text(k, v) for k, v in combo.items()], "seeds": seeds}
    row["runs"] = [str(run_dir) for run_dir, _ in runs]
    for key in ("last", "avg"):
        row[key] = [float(m[key]) for _, m in runs]
        row[f"{key}_mean"], row[f"{key}_std"] = mean_std(row[key])
    return row


def tune_markdown(summary: dict) -> str:
    keys = list(summary["grid"])
    lines = [
        f"Tuning {summary['method']} on {summary['bench']}: validation split (data.val_fraction "
        f"{summary['val_fraction']:g}), seeds {', '.join(map(str, summary['seeds']))}; chosen by "
        f"{summary['chosen_by']}. No test image was read.",
        "",
        "| combination | " + " | ".join(keys) + " | Last (mean ± std) | Avg (mean ± std) | Last per seed |",
        "|---|" + "---|" * len(keys) + "---|---|---|",
    ]
    for r in summary["combinations"]:
        mark = " (chosen)" if r["name"] == summary["chosen"] else ""
        values = " | ".join(set_text(k, r["values"][k]).split("=", 1)[1] for k in keys)
        per_seed = ", ".join(f"{v:.2f}" for v in r["last"])
        lines.append(
            f"| {r['name']}{mark} | {values} | {r['last_mean']:.2f} ± {r['last_std']:.2f} | "
            f"{r['avg_mean']:.2f} ± {r['avg_std']:.2f} | {per_seed} |"
        )
    lines += ["", f"chosen: {summary['set_line']}"]
    return "\n".join(lines)

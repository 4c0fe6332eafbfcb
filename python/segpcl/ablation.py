"""`segpcl ablate`: the paper's ablation rows (methods) over seeds, as one table.

Each (method, seed) run gets its own run directory under the output folder; a finished run found there is
reused and an interrupted one is resumed, so an ablation can be stopped and restarted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from .config import RunConfig
from .engine.checkpoint import write_json
from .engine.trainer import run_training
from .report import ablation_markdown, ablation_rows


def _finished(run_dir: Path) -> dict | None:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return None
    metrics = json.loads(path.read_text())
    return metrics if metrics.get("tasks_completed") == metrics.get("n_tasks") else None


def run_ablation(
    config_for: Callable[[str, int], RunConfig],
    methods: list[str],
    seeds: list[int],
    out: Path | None = None,
    progress: bool = True,
    echo: Callable[[str], None] = print,
) -> dict:
    first = config_for(methods[0], seeds[0])
    out = Path(out or Path("runs") / f"ablation-{first.data.bench}-{datetime.now():%Y%m%d-%H%M%S}")
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, list[dict]] = {}
    for method in methods:
        for seed in seeds:
            run_dir = out / f"{method}-seed{seed}"
            metrics = _finished(run_dir)
            if metrics is None:
                resume = run_dir if (run_dir / "checkpoints" / "LATEST").is_file() else None
                cfg = None if resume else config_for(method, seed)
                metrics = run_training(cfg, out_dir=run_dir, resume=resume, progress=progress).metrics
            echo(f"{method:<18} seed {seed}: Last {metrics['last']:.2f}  Avg {metrics['avg']:.2f}")
            results.setdefault(method, []).append(metrics)
    rows = ablation_rows(results)
    markdown = ablation_markdown(rows, first.data.bench)
    write_json(out / "ablation.json", {"bench": first.data.bench, "seeds": seeds, "rows": rows})
    (out / "ablation.md").write_text(markdown + "\n")
    return {"rows": rows, "markdown": markdown, "out": out}

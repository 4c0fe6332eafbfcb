"""`segpcl train` (also under torchrun, and its --nproc launcher) and `segpcl ablate`."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .options import _ablation_methods, _config_from_options, _method_names, _overrides, _parse_seeds, _train_options


def _resume_overrides(ctx: click.Context, kw) -> dict:
    """What may change when a run continues: the options in engine/resume.RESUMABLE_OPTIONS (device, workers,
    data location, ...) and --set keys that do not define the run (the engine checks those); every other option
    defines the run or acts only at its start, and is refused."""
    from click.core import ParameterSource

    from ..engine.resume import RESUMABLE_OPTIONS, RESUME_CONTROLS, resume_refusal
    from ..errors import ConfigError

    given = [
        p.opts[0]
        for p in ctx.command.params
        if p.name not in RESUMABLE_OPTIONS
        and p.name not in RESUME_CONTROLS
        and ctx.get_parameter_source(p.name) not in (ParameterSource.DEFAULT, None)
    ]
    if given:
        raise ConfigError(resume_refusal(given))
    pairs = [(key, kw[name]) for name, (_, key) in RESUMABLE_OPTIONS.items()]
    return _overrides([(k, list(v) or None) if k == "train.log" else (k, v) for k, v in pairs], kw["sets"])


@click.command()
@_train_options
@click.option("--method", default=None, show_default="segpcl", help=f"One of: {_method_names()}.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    show_default="runs/<bench>-<method>-<time>",
    help="Run directory.",
)
@click.option(
    "--resume", type=click.Path(path_type=Path), default=None, show_default="none", help="Continue a run directory."
)
@click.option(
    "--from-task",
    type=click.IntRange(min=0),
    default=None,
    show_default="the last verified checkpoint",
    help="With --resume: continue after this task's checkpoint (1-based; 0 retrains all); later ones are discarded.",
)
@click.option("--quiet", is_flag=True, default=False, show_default="off", help="No progress bars.")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Data-parallel processes on this node (torchrun's launcher; train.batch_size is the global batch).",
)
@click.pass_context
def train(ctx, bench, method, out, resume, from_task, quiet, nproc, **kw):
    """Train a method on a class-incremental benchmark (default: SeGP-CL on the toy benchmark)."""
    from ..engine import distributed
    from ..engine.trainer import run_training
    from ..errors import ConfigError
    from ..report import accuracy_table

    if nproc > 1 and distributed.env_world_size() <= 1:
        _check_batch(nproc, ctx, bench, method, resume, kw)  # before N processes start and load the model
        ctx.exit(distributed.launch(nproc, _without_nproc(sys.argv[1:])))
    if resume is None:
        if from_task is not None:
            raise ConfigError("--from-task applies only with --resume DIR")
        result = run_training(_config_from_options(bench, method, kw), out_dir=out, progress=not quiet)
    else:
        result = run_training(
            resume=resume, progress=not quiet, resume_overrides=_resume_overrides(ctx, kw), from_task=from_task
        )
    distributed.shutdown()
    if distributed.env_rank() == 0:  # under torchrun only rank 0 prints
        click.echo(accuracy_table(result.metrics))
        if result.metrics.get("split") == "validation":
            click.echo("accuracies on the validation images (data.val_fraction > 0), not the test split")
        click.echo(f"run directory: {result.run_dir}")


def _check_batch(nproc: int, ctx: click.Context, bench, method, resume, kw) -> None:
    """train.batch_size (the global batch) must divide among the --nproc processes: checked on the run's config."""
    from ..config import apply_overrides
    from ..engine.distributed import per_rank_batch
    from ..engine.resume import load_run_config

    if resume is None:
        cfg = _config_from_options(bench, method, kw)
    else:
        cfg = apply_overrides(load_run_config(Path(resume)), _resume_overrides(ctx, kw))
    per_rank_batch(cfg.train.batch_size, nproc)


def _without_nproc(argv: list[str]) -> list[str]:
    """The command line of every process `segpcl train --nproc N` starts: the same, without --nproc."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


@click.command()
@_train_options(seed=False)
@click.option(
    "--methods",
    default=_ablation_methods(),
    show_default=True,
    help="Comma-separated methods (rows); segpcl-cliponly is left out: it is the lora+acgd+tsgr+pt configuration. "
    "segpcl-tsgr-from2 is segpcl with --set method.tsgr_from_task=2.",
)
@click.option("--seeds", default="1,2,3,4,5", show_default=True, help="Comma-separated seeds (0 .. 2**32-1).")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    show_default="runs/ablation-<bench>-<time>",
    help="Output folder.",
)
@click.option(
    "--fresh",
    is_flag=True,
    default=False,
    show_default="off",
    help="Runs found with other settings are kept; train new ones into new folders (<method>-seed<N>-<settings hash>).",
)
@click.option(
    "--baseline",
    default=None,
    show_default="lora",
    help="The row every other row is paired with (differences with 95% intervals); one of --methods.",
)
@click.option("--quiet", is_flag=True, default=False, show_default="off", help="No progress bars.")
def ablate(bench, methods, seeds, out, fresh, baseline, quiet, **kw):
    """Run the paper's ablation rows over seeds; print and write the table (ablation.json, ablation.md)."""
    from ..analysis.ablation import run_ablation
    from ..analysis.ablation_table import BASELINE, ablation_row
    from ..errors import ConfigError

    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    seed_list = _parse_seeds(seeds)
    if not method_list:
        raise ConfigError("--methods needs at least one method")
    if baseline is None:
        baseline = BASELINE  # without it among the rows, the table has no paired columns
    elif baseline not in method_list:
        raise ConfigError(f"--baseline {baseline} is not one of --methods; add it there or choose another")

    def config_for(row: str, seed: int):
        method, sets = ablation_row(row)
        return _config_from_options(bench, method, dict(kw, seed=seed, sets=(*kw["sets"], *sets)))

    result = run_ablation(
        config_for,
        method_list,
        seed_list,
        out,
        progress=not quiet,
        echo=click.echo,
        fresh=fresh,
        baseline=baseline,
    )
    click.echo(result["markdown"])
    click.echo(f"results: {result['out']}")

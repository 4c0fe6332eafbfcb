"""`segpcl tune`: choose config values on the validation split (never the test split)."""

from __future__ import annotations

from pathlib import Path

import click

from .options import _config_from_options, _method_names, _parse_seeds, _train_options


@click.command()
@_train_options(seed=False)
@click.option(
    "--grid",
    "grids",
    multiple=True,
    required=True,
    show_default="none (required)",
    help="KEY=V1,V2,...: values of a config key to try, read as --set reads them; several --grid: every combination.",
)
@click.option("--method", default=None, show_default="segpcl", help=f"One of: {_method_names()}.")
@click.option("--seeds", default="0", show_default=True, help="Comma-separated seeds; the mean over them decides.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    show_default="runs/tune-<bench>-<time>",
    help="Output folder: one run per combination and seed, tune.json, tune.md.",
)
@click.option(
    "--fresh",
    is_flag=True,
    default=False,
    show_default="off",
    help="Runs found with other settings are kept; train new ones into new folders (c<NN>-seed<N>-<settings hash>).",
)
@click.option("--quiet", is_flag=True, default=False, show_default="off", help="No progress bars.")
def tune(bench, grids, method, seeds, out, fresh, quiet, **kw):
    """Train every combination of the --grid values on the validation split (data.val_fraction, 0.1 unless set;
    no test image is read), write tune.json and tune.md, and print the --set line of the combination with the
    best mean validation Last."""
    from ..analysis.tune import parse_grid, run_tune
    from ..errors import ConfigError

    grid = parse_grid(grids)
    both = sorted(set(grid) & {item.partition("=")[0].strip() for item in kw["sets"]})
    if both:
        raise ConfigError(f"{', '.join(both)} is given by both --grid and --set; keep one")
    result = run_tune(
        lambda items, seed: _config_from_options(bench, method, dict(kw, seed=seed, sets=(*kw["sets"], *items))),
        grid,
        _parse_seeds(seeds),
        out,
        progress=not quiet,
        echo=click.echo,
        fresh=fresh,
    )
    click.echo(result["markdown"])
    click.echo(f"results: {result['out']}")
    click.echo(result["set_line"])

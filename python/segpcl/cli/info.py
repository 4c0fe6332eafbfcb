"""`segpcl info`: the environment."""

from __future__ import annotations

import click


@click.command()
def info():
    """Versions, CUDA devices, kernel backend and the native core's build."""
    from ..environment import environment
    from ..kernels import backend

    env = environment()
    for key, value in env.items():
        click.echo(f"{key:>12}: {value}")
    click.echo(f"{'kernels':>12}: {backend()} (set SEGPCL_KERNELS=torch|triton to force)")

"""`segpcl benches` and `segpcl data check`: which benchmarks exist and whether their data is readable."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command()
@click.option("--data-root", type=click.Path(path_type=Path), default=None, help="Folder holding data sets.")
def benches(data_root):
    """List benchmarks with classes, tasks and whether their data is present."""
    from ..benchmarks.base import DATA_DEFINED, DEFAULT_TASKS, list_benchmarks, task_sizes_from

    status = {}
    if data_root is not None:
        from ..benchmarks.check import benchmark_status

        status = {info.name: (present, detail) for info, present, detail in benchmark_status(data_root)}
    click.echo(f"{'name':<14} {'classes':>7} {'tasks':>5}  {'data':<8} description")
    for info in list_benchmarks():
        if info.n_classes == DATA_DEFINED:  # `folder`: the data's classes, in DEFAULT_TASKS tasks
            classes, tasks = "any", DEFAULT_TASKS
        else:
            classes, tasks = info.n_classes, len(task_sizes_from(info.n_classes, info.initial, info.increment))
        if not info.needs_data:
            present = "built-in"
        elif info.name in status:
            present = "ready" if status[info.name][0] else "missing"
        else:
            present = "-"
        click.echo(f"{info.name:<14} {classes:>7} {tasks:>5}  {present:<8} {info.description}")
        if info.name in status and status[info.name][1]:
            click.echo(f"{'':<14} {status[info.name][1]}")


@click.group()
def data():
    """Data set tools."""


@data.command("check")
@click.option("--bench", default=None, help="Benchmark name.")
@click.option("--data-root", type=click.Path(path_type=Path), default=None, help="Folder of the data set.")
@click.option("--folder", type=click.Path(path_type=Path), default=None, help="An ImageFolder (a --zs-eval set).")
@click.option("--class-names", type=click.Path(path_type=Path), default=None, help="File overriding class names.")
@click.option("--download", is_flag=True, help="Let torchvision fetch the data set where it can (CIFAR-100).")
@click.option("--speed", is_flag=True, help="Also measure decode throughput (images/s).")
@click.option("--workers", type=int, default=4, show_default=True, help="DataLoader workers for --speed.")
def data_check(bench, data_root, folder, class_names, download, speed, workers):
    """Detect the layout, count classes and images, list unreadable files."""
    from ..benchmarks.base import DataConfig
    from ..benchmarks.check import check_benchmark, check_folder
    from ..errors import ConfigError

    if folder is not None:
        report = check_folder(folder, speed=speed, workers=workers)
    elif bench is not None and data_root is not None:
        cfg = DataConfig(data_root=data_root, class_names_file=class_names, download=download)
        report = check_benchmark(bench, cfg, speed=speed, workers=workers)
    else:
        raise ConfigError("give --bench NAME --data-root DIR, or --folder DIR for an ImageFolder")
    click.echo(report.format_table())
    if not report.ok:
        sys.exit(1)

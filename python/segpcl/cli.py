"""The `segpcl` command line: parse options, build a typed config, call the library. No logic of its own."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import click

from . import __version__
from .errors import SegpclError


def _overrides(pairs: list[tuple[str, object]], sets: tuple[str, ...]) -> dict:
    """The options the user gave (None/False: not given), then every --set on top."""
    from .config import parse_set, set_dotted

    out: dict = {}
    for key, value in pairs:
        if value is not None and value != () and value is not False:
            set_dotted(out, key, value)
    return parse_set(list(sets), into=out)


def _zs_pairs(items: tuple[str, ...]) -> dict[str, str] | None:
    from .errors import ConfigError

    if not items:
        return None
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--zs-eval takes NAME=PATH (e.g. food101=/data/food-101/test), got {item!r}")
        name, path = item.split("=", 1)
        out[name] = path
    return out


class _Group(click.Group):
    """Prints segpcl's own errors and bad options as one line without a traceback; exit status 2."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except SegpclError as exc:
            click.echo(f"error: {' '.join(str(exc).split())}", err=True)
            sys.exit(2)
        except click.UsageError as exc:
            name = exc.ctx.command_path if exc.ctx is not None else "segpcl"
            click.echo(f"error: {' '.join(exc.format_message().split())} (see `{name} --help`)", err=True)
            sys.exit(2)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (click's test runner swaps it per call)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _quiet_library_logging() -> None:
    """Libraries' log lines (open_clip's `ERROR:root:` on a missing tag) would precede segpcl's own error;
    segpcl's warnings still print, as `warning: ...`."""
    root = logging.getLogger()
    if not root.handlers:
        root.addHandler(logging.NullHandler())
    ours = logging.getLogger("segpcl")
    if not any(getattr(h, "_segpcl_cli", False) for h in ours.handlers):
        handler = _StderrHandler()
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("warning: %(message)s"))
        handler._segpcl_cli = True
        ours.addHandler(handler)


@click.group(cls=_Group)
@click.version_option(__version__, prog_name="segpcl")
def main():
    """segpcl: exemplar-free continual learning of CLIP models with SeGP-CL."""
    _quiet_library_logging()


@main.command()
def info():
    """Versions, CUDA devices, kernel backend and the native core's build."""
    from .environment import environment
    from .kernels import backend

    env = environment()
    for key, value in env.items():
        click.echo(f"{key:>12}: {value}")
    click.echo(f"{'kernels':>12}: {backend()} (set SEGPCL_KERNELS=torch|triton to force)")


@main.command()
@click.option("--data-root", type=click.Path(path_type=Path), default=None, help="Folder holding data sets.")
def benches(data_root):
    """List benchmarks with classes, tasks and whether their data is present."""
    from .benchmarks.base import list_benchmarks, task_sizes_from

    status = {}
    if data_root is not None:
        from .benchmarks.check import benchmark_status

        status = {info.name: (present, detail) for info, present, detail in benchmark_status(data_root)}
    click.echo(f"{'name':<14} {'classes':>7} {'tasks':>5}  {'data':<8} description")
    for info in list_benchmarks():
        tasks = len(task_sizes_from(info.n_classes, info.initial, info.increment))
        if not info.needs_data:
            present = "built-in"
        elif info.name in status:
            present = "ready" if status[info.name][0] else "missing"
        else:
            present = "-"
        click.echo(f"{info.name:<14} {info.n_classes:>7} {tasks:>5}  {present:<8} {info.description}")
        if info.name in status and status[info.name][1]:
            click.echo(f"{'':<14} {status[info.name][1]}")


PRESET = "the benchmark's preset"
SEED_RANGE = click.IntRange(0, 2**32 - 1)


def _method_names() -> str:
    from .method.learner import METHODS

    return ", ".join(METHODS)


def _ablation_methods() -> str:
    """Every row of the paper's tables; segpcl-cliponly is the lora+acgd+tsgr+pt configuration."""
    from .method.learner import METHODS

    return ",".join(m for m in METHODS if m != "segpcl-cliponly")


def _train_options(fn=None, *, seed: bool = True):
    """The options `train` and `ablate` share (`ablate` takes --seeds instead of --seed)."""
    if fn is None:
        return lambda f: _train_options(f, seed=seed)
    options = [
        click.option("--bench", default="toy", show_default=True, help="Benchmark (see `segpcl benches`)."),
        click.option("--data-root", default=None, show_default="none", help="Folder of the benchmark's data set."),
        click.option(
            "--model",
            "arch",
            default=None,
            show_default=PRESET,
            help="open_clip architecture, e.g. ViT-L-14-quickgelu.",
        ),
        click.option(
            "--pretrained", default=None, show_default=PRESET, help="Local weights file (or an offline open_clip tag)."
        ),
        click.option(
            "--epochs", type=click.IntRange(min=1), default=None, show_default=PRESET, help="Epochs per task."
        ),
        click.option("--seed", type=SEED_RANGE, default=None, show_default="0", help="Random seed (0 .. 2**32-1).")
        if seed
        else None,
        click.option("--device", default=None, show_default="auto", help="cpu, cuda, cuda:N or auto."),
        click.option("--precision", type=click.Choice(["fp32", "bf16"]), default=None, show_default=PRESET),
        click.option(
            "--max-tasks",
            type=click.IntRange(min=1),
            default=None,
            show_default="all",
            help="Run only the first N tasks of the stream.",
        ),
        click.option(
            "--log",
            "log_kinds",
            type=click.Choice(["tensorboard"]),
            multiple=True,
            show_default="metrics.json and metrics.csv only",
            help="Also write TensorBoard event files to <run>/tensorboard (pip install 'segpcl[tensorboard]').",
        ),
        click.option(
            "--initial",
            type=click.IntRange(min=1),
            default=None,
            show_default=PRESET,
            help="Classes in the first task.",
        ),
        click.option(
            "--increment", type=click.IntRange(min=1), default=None, show_default=PRESET, help="Classes per later task."
        ),
        click.option(
            "--class-order",
            default=None,
            show_default="PyCIL's seed-1993 order",
            help="File with a class order (YAML/JSON/text).",
        ),
        click.option(
            "--class-names", default=None, show_default="the benchmark's", help="File overriding class names."
        ),
        click.option(
            "--templates",
            default=None,
            show_default="the benchmark's",
            help="File of prompt templates, one per line with {}.",
        ),
        click.option("--strict", is_flag=True, default=False, show_default="off", help="Fail on unreadable images."),
        click.option(
            "--diagnose",
            is_flag=True,
            default=False,
            show_default="off",
            help="Boundary-vs-core drift diagnostic at the end of every task t >= 2 (metrics.json drift, "
            "plots/drift.svg).",
        ),
        click.option(
            "--download",
            is_flag=True,
            default=False,
            show_default="off",
            help="Allow torchvision to download (CIFAR100).",
        ),
        click.option(
            "--workers",
            type=click.IntRange(min=0),
            default=None,
            show_default=PRESET,
            help="DataLoader worker processes.",
        ),
        click.option(
            "--zs-eval",
            multiple=True,
            show_default="none",
            help="NAME=PATH of an ImageFolder set for zero-shot retention.",
        ),
        click.option(
            "--config", "config_file", default=None, show_default="none", help="YAML config file (over the preset)."
        ),
        click.option(
            "--preset",
            default=None,
            show_default="the benchmark's own",
            help="Protocol preset: revision, revision-20, or a preset file name such as cifar100-revision.",
        ),
        click.option(
            "--set", "sets", multiple=True, show_default="none", help="Override any config key: section.key=value."
        ),
    ]
    for option in reversed([o for o in options if o is not None]):
        fn = option(fn)
    return fn


def _config_from_options(bench, method, kw) -> object:
    from .config import resolve_config

    pairs = [
        ("data.data_root", kw["data_root"]),
        ("model.arch", kw["arch"]),
        ("model.pretrained", kw["pretrained"]),
        ("model.precision", kw["precision"]),
        ("train.epochs", kw["epochs"]),
        ("train.seed", kw["seed"]),
        ("train.device", kw["device"]),
        ("data.initial", kw["initial"]),
        ("data.increment", kw["increment"]),
        ("data.max_tasks", kw["max_tasks"]),
        ("train.log", list(kw["log_kinds"]) or None),
        ("data.class_order", kw["class_order"]),
        ("data.class_names", kw["class_names"]),
        ("data.templates", kw["templates"]),
        ("data.strict", kw["strict"]),
        ("data.download", kw["download"]),
        ("data.num_workers", kw["workers"]),
        ("data.zs_eval", _zs_pairs(kw["zs_eval"])),
        ("method.name", method),
        ("train.diagnose", kw["diagnose"]),
    ]
    return resolve_config(bench, kw["config_file"], _overrides(pairs, kw["sets"]), preset=kw.get("preset"))


NOT_ON_RESUME = (
    "bench", "method", "out", "config_file", "arch", "pretrained", "initial", "increment",
    "class_order", "class_names", "templates", "seed", "zs_eval", "download", "preset",
)  # fmt: skip
"""Options that define a run or apply only at its start: an error with --resume."""


def _resume_overrides(ctx: click.Context, kw) -> dict:
    """What may change when a run continues (device, workers, data location, learning settings via --set);
    what defines the run (benchmark, method, model, split, seed) or acts only at its start may not. --set keys
    that define the run are refused by the trainer, which compares the resolved configs."""
    from click.core import ParameterSource

    from .errors import ConfigError

    given = [
        p.opts[0]
        for p in ctx.command.params
        if p.name in NOT_ON_RESUME and ctx.get_parameter_source(p.name) not in (ParameterSource.DEFAULT, None)
    ]
    if given:
        raise ConfigError(
            f"{', '.join(given)} cannot change when resuming a run (they define the run or act only at its start); "
            "only --device, --workers, --data-root, --epochs, --precision, --strict, --max-tasks, --log, --from-task "
            "and --set "
            "(not method.name, model, lora, the data split or the seed) apply to the remaining tasks"
        )
    pairs = [
        ("train.device", kw["device"]),
        ("data.num_workers", kw["workers"]),
        ("data.data_root", kw["data_root"]),
        ("train.epochs", kw["epochs"]),
        ("model.precision", kw["precision"]),
        ("data.strict", kw["strict"]),
        ("train.diagnose", kw["diagnose"]),
        ("data.max_tasks", kw["max_tasks"]),
        ("train.log", list(kw["log_kinds"]) or None),
    ]
    return _overrides(pairs, kw["sets"])


@main.command()
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
    from .engine import distributed
    from .engine.trainer import run_training
    from .errors import ConfigError
    from .report import accuracy_table

    if nproc > 1 and distributed.env_world_size() <= 1:
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
        click.echo(f"run directory: {result.run_dir}")


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


@main.command()
@_train_options(seed=False)
@click.option(
    "--methods",
    default=_ablation_methods(),
    show_default=True,
    help="Comma-separated methods (rows); segpcl-cliponly is left out: it is the lora+acgd+tsgr+pt configuration.",
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
@click.option("--quiet", is_flag=True, default=False, show_default="off", help="No progress bars.")
def ablate(bench, methods, seeds, out, fresh, quiet, **kw):
    """Run the paper's ablation rows over seeds; print and write the table (ablation.json, ablation.md)."""
    from .ablation import run_ablation
    from .errors import ConfigError

    method_list = [m.strip() for m in methods.split(",") if m.strip()]
    try:
        seed_list = [int(s) for s in seeds.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(f"--seeds takes comma-separated integers, e.g. 1,2,3; got {seeds!r}") from None
    if not method_list or not seed_list:
        raise ConfigError("--methods and --seeds each need at least one entry")
    result = run_ablation(
        lambda method, seed: _config_from_options(bench, method, dict(kw, seed=seed)),
        method_list,
        seed_list,
        out,
        progress=not quiet,
        echo=click.echo,
        fresh=fresh,
    )
    click.echo(result["markdown"])
    click.echo(f"results: {result['out']}")


@main.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("."),
    show_default=True,
    help="Folder for accuracy_curves.svg and summary.csv.",
)
def report(runs, out):
    """Several runs side by side: a table (Last, Avg, forgetting, BWT, FWT), summary.csv, and one SVG figure of
    the accuracy on all seen classes against the number of tasks learned (RUN: a run directory or metrics.json)."""
    from .report import curves_svg, load_run_metrics, run_summary, summary_csv, summary_table

    loaded = [load_run_metrics(r) for r in runs]
    labels = [label for label, _ in loaded]
    if len(set(labels)) < len(labels):  # two runs with the same folder name: use the paths given
        loaded = [(str(r), m) for r, (_, m) in zip(runs, loaded, strict=True)]
    rows = [run_summary(label, m) for label, m in loaded]
    out.mkdir(parents=True, exist_ok=True)
    (out / "accuracy_curves.svg").write_text(curves_svg(loaded))
    (out / "summary.csv").write_text(summary_csv(rows))
    click.echo(summary_table(rows))
    click.echo(f"figure: {out / 'accuracy_curves.svg'}  table: {out / 'summary.csv'}")


@main.group()
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
    from .benchmarks.base import DataConfig
    from .benchmarks.check import check_benchmark, check_folder
    from .errors import ConfigError

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


@main.group()
def bench():
    """Performance measurements."""


@bench.command("overhead")
@click.option("--model", "arch", default="tiny", show_default=True, help="tiny, toy-clip, or an open_clip arch.")
@click.option("--pretrained", default=None, help="Local weights (random weights otherwise; costs only).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True)
@click.option("--batch-size", type=int, default=128, show_default=True, help="New-task images per step (B).")
@click.option("--anchors-per-step", type=int, default=None, help="A; default: the method config's anchors_per_step.")
@click.option("--classes", type=int, default=100, show_default=True, help="Seen classes C at the measured task.")
@click.option("--increment", type=int, default=10, show_default=True, help="New classes of the measured task.")
@click.option("--templates", type=int, default=6, show_default=True, help="Prompt templates per class.")
@click.option("--repeats", type=int, default=10, show_default=True, help="Timed interleaved repeats (medians).")
@click.option("--warmup", type=int, default=2, show_default=True, help="Untimed rounds first.")
@click.option("--images-per-task", type=int, default=5000, show_default=True, help="Training images of the task.")
@click.option("--epochs", type=int, default=10, show_default=True, help="Epochs per task (for the task's steps).")
@click.option("--task-steps", type=int, default=None, help="Steps per task; default epochs x ceil(images / B).")
@click.option("--k-seed", type=int, default=None, help="Anchors per task; default: the method config's.")
@click.option("--pgd-steps", type=int, default=None, help="PGD iterations; default: the method config's.")
@click.option("--anchor-repeats", type=int, default=2, show_default=True, help="Timed before/after_task calls.")
@click.option("--eval-batch-size", type=int, default=256, show_default=True)
@click.option("--sweep-anchors", default="", help="Also measure the step ratio at these A, e.g. 4,8,16.")
@click.option("--lora-towers", default="visual,text", show_default=True, help="Towers with LoRA.")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's).")
@click.option("--profile", is_flag=True, help="Add torch.profiler tables of one step of each method.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write results as JSON.")
def bench_overhead(json_path, sweep_anchors, lora_towers, **options):
    """Training and inference overhead of SeGP-CL over plain LoRA, measured side by side."""
    from .errors import ConfigError
    from .overhead import OverheadConfig, format_overhead, measure_overhead

    try:
        sweep = tuple(int(a) for a in sweep_anchors.split(",") if a.strip())
    except ValueError as exc:
        raise ConfigError(f"--sweep-anchors takes integers separated by commas, got {sweep_anchors!r}") from exc
    towers = tuple(t.strip() for t in lora_towers.split(",") if t.strip())
    cfg = OverheadConfig(sweep_anchors=sweep, lora_towers=towers, **options)
    result = measure_overhead(cfg)
    click.echo(format_overhead(result))
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2))


def _add_use_commands() -> None:
    """segpcl eval / predict / export (cli_use.py)."""
    from .cli_use import COMMANDS

    for command in COMMANDS:
        main.add_command(command)


_add_use_commands()

if __name__ == "__main__":
    main()

"""`segpcl perf overhead`; `segpcl bench ...` is the same group under its older name ("bench" is also what
--bench names: a data set)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..engine.nofollow import atomic_write_text


@click.group()
def perf():
    """Performance measurements."""


@perf.command("overhead")
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
@click.option(
    "--memory/--no-memory",
    default=True,
    show_default=True,
    help="Peak memory of a SeGP-CL step with and without gradient checkpointing (CPU: a child process each).",
)
@click.option("--tokenizer", default=None, help="Local tokenizer folder (models whose tokenizer comes from a hub).")
@click.option(
    "--method",
    "methods",
    default="segpcl",
    show_default=True,
    help="segpcl: SeGP-CL's detailed report; or methods, comma-separated (e.g. rapf,mgclip,zscl,moe-adapters,segpcl):"
    " step, whole-task and inference cost of each relative to plain LoRA, trainable parameters beside them.",
)
@click.option(
    "--bench",
    default="cifar100",
    show_default=True,
    help="With --method: whose method presets (by_bench) set each method's optimiser, epochs and settings.",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Write results as JSON.")
def overhead(json_path, sweep_anchors, lora_towers, methods, bench, **options):
    """Training and inference overhead of SeGP-CL (or of any methods: --method) over plain LoRA, measured side by
    side in one process."""
    from ..errors import ConfigError
    from ..method.registry import method_names
    from ..perf.overhead import OverheadConfig, format_overhead, measure_overhead

    try:
        sweep = tuple(int(a) for a in sweep_anchors.split(",") if a.strip())
    except ValueError as exc:
        raise ConfigError(f"--sweep-anchors takes integers separated by commas, got {sweep_anchors!r}") from exc
    towers = tuple(t.strip() for t in lora_towers.split(",") if t.strip())
    cfg = OverheadConfig(sweep_anchors=sweep, lora_towers=towers, **options)
    names = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in names if m not in method_names()]
    if unknown or not names:
        raise ConfigError(
            f"--method: unknown {', '.join(unknown) or '(none given)'}; choose from {', '.join(method_names())}"
        )
    if names == ["segpcl"]:
        result = measure_overhead(cfg)
        click.echo(format_overhead(result))
    else:
        from ..perf.method_cost import format_method_costs, measure_method_costs

        result = measure_method_costs(cfg, names, bench)
        click.echo(format_method_costs(result))
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(result, indent=2))


bench = click.Group(
    "bench",
    commands=perf.commands,  # the same mapping: every perf command is a bench command too
    short_help="Alias of perf.",
    help="Performance measurements (alias of `segpcl perf`).",
)

"""Commands that use what a run trained: `segpcl eval`, `segpcl predict`, `segpcl export`. Parse options, call the
library, print."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..engine.nofollow import atomic_write_text

RUN = click.argument("run", type=click.Path(path_type=Path))
TASK = click.option(
    "--task", type=click.IntRange(min=1), default=None, show_default="the last completed", help="Task (1-based)."
)
DATA_ROOT = click.option(
    "--data-root", default=None, show_default="the run's", help="The benchmark's data at another folder."
)
DEVICE = click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")


@click.command("eval")
@RUN
@TASK
@DATA_ROOT
@DEVICE
@click.option(
    "--branch",
    type=click.Choice(["run", "clip", "dual"]),
    default="run",
    show_default=True,
    help="Inference: the run's own, the CLIP path alone, or the dual path.",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write results here.")
@click.option("--quiet", is_flag=True, default=False, help="No progress bar.")
def eval_command(run, task, data_root, device, branch, json_path, quiet):
    """Re-evaluate a run's checkpoint on its benchmark: accuracy on each task's classes and on all seen."""
    from ..inference.reopen import evaluate_task, reopen, set_branch

    r = reopen(run, task=task, device=device, data_root=data_root)
    set_branch(r, branch)
    result = evaluate_task(r, progress=not quiet)
    result.update({"run": str(r.root), "branch": branch, "method": r.cfg.method.name, "bench": r.cfg.data.bench})
    click.echo(f"{r.cfg.method.name} on {r.cfg.data.bench}, after task {result['task']} of {r.stream.n_tasks}")
    click.echo(f"{'task':>6} {'classes':>8} {'images':>7} {'accuracy':>9}")
    for j, (acc, n) in enumerate(zip(result["accuracy"], result["total"], strict=True)):
        click.echo(f"{j + 1:>6} {len(r.stream.task_range(j)):>8} {n:>7} {acc:>8.2f}%")
    click.echo(f"{'seen':>6} {r.learner.n_seen(r.task):>8} {sum(result['total']):>7} {result['seen_accuracy']:>8.2f}%")
    if json_path is not None:
        atomic_write_text(json_path, json.dumps(result, indent=2))


@click.command("predict")
@RUN
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True, help="Classes per image.")
@TASK
@DATA_ROOT
@DEVICE
@click.option("--branch", type=click.Choice(["run", "clip", "dual"]), default="run", show_default=True)
@click.option("--json", "as_json", is_flag=True, default=False, help="Print JSON lines instead of a table.")
def predict_command(run, images, top_k, task, data_root, device, branch, as_json):
    """Classify image files (or folders of images) with a run's model: class names and probabilities."""
    from ..inference.continual import load_run, read_images

    model = load_run(run, task=task, device=device, data_root=data_root)
    files, batch, skipped = read_images(images, model.image_size)
    results = model.top_classes(batch, top_k=top_k, branch=branch)
    for path, top in zip(files, results, strict=True):
        if as_json:
            click.echo(json.dumps({"image": str(path), "top": [{"class": c, "prob": p} for c, p in top]}))
        else:
            click.echo(f"{path}: " + ", ".join(f"{c} {100 * p:.1f}%" for c, p in top))
    for line in skipped:
        click.echo(f"warning: skipped {line}", err=True)
    if skipped:
        click.echo(f"skipped {len(skipped)} of {len(files) + len(skipped)} files (not readable as images)", err=True)


@click.command("export")
@RUN
@TASK
@DATA_ROOT
@click.option("--out", type=click.Path(path_type=Path), required=True, help="A new or empty folder.")
def export_command(run, task, data_root, out):
    """Export a run's model: merged open_clip weights (.safetensors), the peft adapter, the prototypes, class
    names and templates, and a model card."""
    from ..inference.export import export_run

    paths = export_run(run, out, task=task, data_root=data_root)
    for kind, path in paths.items():
        click.echo(f"{kind:>10}: {path}")

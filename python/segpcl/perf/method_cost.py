"""`segpcl perf overhead --method M[,M2,...]`: what any method costs beside plain LoRA, in one process.

For each method (and `lora`, the reference) a fresh model of the same weights is built the way a run builds it
(engine/build.build_method with the method's preset overlay for `--bench`: RAPF's frozen towers and linear
adapter, MG-CLIP's masked k/v LoRA, ZSCL's full fine-tuning, MoE-Adapters' routed adapters), set up as task t = 2
of a stream of C classes with synthetic images (task 1's hooks run untimed, so RAPF has class statistics and
MG-CLIP a visual agent), then timed:

1. one training step at the common batch B: the method's `training_loss`, then the trainer's `optimizer_step`
   with the method's own optimiser and clip; all methods interleaved (order reversed every other round), the
   ratio to `lora` a median of paired ratios, so slow drifts of a shared machine cancel;
2. `before_task` and `after_task` of task 2 (teachers, anchors, class statistics, fusion, weight averages);
3. the whole task: the method's own epochs (its preset) x ceil(images / B) steps x step + both hooks;
4. inference: `begin_eval` then `predict` on one batch, interleaved like the steps;
5. trainable parameters (what the engine's optimiser updates) and their count.

Each method runs with the settings a run on `--bench` gets (its preset and method overlay); the options that
set SeGP-CL's anchors (--anchors-per-step, --k-seed, --pgd-steps, --sweep-anchors) belong to the SeGP-CL-only
report. Random weights (no --pretrained) give costs only. Timings exclude data loading. The step is measured at one
batch size for every method (their own batch sizes differ: see their presets); the whole-task number scales by
the method's epochs only.
"""

from __future__ import annotations

import math
import types
from dataclasses import asdict

import torch

from ..environment import environment
from ..errors import ConfigError
from .config import OverheadConfig, check_config
from .timing import Timer, machine, stats
from .workload import TaskBatches

REFERENCE = "lora"
"""Every method's costs are given relative to this one (SeGP-CL's naive-LoRA row)."""


def measure_method_costs(cfg: OverheadConfig, methods: list[str], bench: str = "cifar100") -> dict:
    """Costs of `methods` and of `lora`, measured side by side (see the module docstring); the result dict."""
    check_config(cfg)
    anchor_options = {
        "--anchors-per-step": cfg.anchors_per_step,
        "--k-seed": cfg.k_seed,
        "--pgd-steps": cfg.pgd_steps,
        "--sweep-anchors": cfg.sweep_anchors or None,
    }
    given = [name for name, value in anchor_options.items() if value is not None]
    if given:  # silently ignored they would mislabel the table: each method runs with its --bench preset
        raise ConfigError(
            f"{', '.join(given)} set SeGP-CL's own report (--method segpcl alone); with several methods each "
            f"runs with the settings of its --bench preset: drop {'them' if len(given) > 1 else 'it'}"
        )
    threads = torch.get_num_threads()
    try:
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        return _measure(cfg, [REFERENCE] + [m for m in methods if m != REFERENCE], bench)
    finally:
        torch.set_num_threads(threads)


def _measure(cfg: OverheadConfig, names: list[str], bench: str) -> dict:
    from ..engine.device import resolve_device

    device = resolve_device(cfg.device)
    timer = Timer(device)
    gen = torch.Generator().manual_seed(cfg.seed)
    runs = {name: _MethodRun.build(name, cfg, bench, device, gen) for name in names}
    for run in runs.values():  # task 1, untimed: what task 2 builds on
        run.method.before_task(0, run.batches(0))
        run.method.after_task(0, run.batches(0))
    for _ in range(cfg.anchor_repeats):
        for name, run in runs.items():
            timer.record(f"{name}/before_task", lambda run=run: run.method.before_task(1, run.batches(1)))
    for run in runs.values():
        run.method.model.train()
    timer.interleaved({f"{n}/step": r.step for n, r in runs.items()}, cfg.repeats, cfg.warmup, cfg.steps_per_repeat)
    for name, run in runs.items():
        run.method.model.eval()
        timer.record(f"{name}/after_task", lambda run=run: run.method.after_task(1, run.batches(1)))
        run.method.begin_eval(1)
    timer.interleaved({f"{n}/predict": r.predict for n, r in runs.items()}, cfg.repeats, cfg.warmup)
    rows = {name: _row(name, run, timer, cfg) for name, run in runs.items()}
    for name, row in rows.items():  # steps and predictions: medians of paired ratios; the task: of its medians
        row["step_ratio"] = timer.ratio(f"{name}/step", f"{REFERENCE}/step")
        row["task_ratio"] = row["task_s"] / rows[REFERENCE]["task_s"]
        row["predict_ratio"] = timer.ratio(f"{name}/predict", f"{REFERENCE}/predict")
    return {
        "methods": list(rows.values()),
        "reference": REFERENCE,
        "bench_presets": bench,
        "config": {**asdict(cfg), "sweep_anchors": list(cfg.sweep_anchors), "lora_towers": list(cfg.lora_towers)},
        "environment": {**environment(), **machine(device)},
        "timings": {"unit": "seconds per call, all repeats", **{k: stats(v) for k, v in timer.samples.items()}},
        "losses_finite": all(run.finite for run in runs.values()),
    }


def _row(name: str, run: _MethodRun, timer: Timer, cfg: OverheadConfig) -> dict:
    step, before, after = (timer.median(f"{name}/{k}") for k in ("step", "before_task", "after_task"))
    epochs = run.cfg.train.epochs
    steps = cfg.task_steps if cfg.task_steps is not None else epochs * math.ceil(cfg.images_per_task / cfg.batch_size)
    params = run.method.trainable_parameters()
    return {
        "method": name,
        "trainable_params": sum(p.numel() for p in params),
        "optimizer": run.cfg.train.optimizer,
        "epochs": epochs,
        "task_steps": steps,
        "step_s": step,
        "before_task_s": before,
        "after_task_s": after,
        "task_s": steps * step + before + after,
        "predict_s": timer.median(f"{name}/predict"),
        "templates": run.n_templates,
    }


class _MethodRun:
    """One method on its own model, with its optimiser, synthetic task data and the trainer's step."""

    def __init__(self, name, cfg, method, run_cfg, data, n_templates):
        self.name, self.overhead, self.method, self.cfg = name, cfg, method, run_cfg
        self.pool, self.images, self.labels, self.eval_images = data
        self.n_templates = n_templates
        self.params = method.trainable_parameters()
        from ..engine.loop import make_optimizer

        self.opt = make_optimizer(self.params, run_cfg)
        self.finite = True

    @classmethod
    def build(cls, name: str, cfg: OverheadConfig, bench: str, device, gen: torch.Generator) -> _MethodRun:
        from ..config import resolve_config
        from ..engine.build import build_method
        from ..engine.device import autocast_factory, seed_everything
        from ..models.loading import load_clip

        run_cfg = resolve_config(bench, overrides={"method": {"name": name}, "data": {"bench": bench}})
        if name == REFERENCE:
            run_cfg.lora.towers = list(cfg.lora_towers)
        seed_everything(cfg.seed)  # the same weights for every method
        model = load_clip(cfg.arch, cfg.pretrained, device=device, precision=cfg.precision, tokenizer=cfg.tokenizer)
        model.eval()
        n_templates = 1 if run_cfg.data.templates == "single" else cfg.templates
        stream = types.SimpleNamespace(
            class_names=[f"synthetic class {i}" for i in range(cfg.classes)],
            bench=types.SimpleNamespace(templates=[f"a photo of a {{}}, variant {j}." for j in range(n_templates)]),
            task_sizes=[cfg.classes - cfg.increment, cfg.increment],
        )
        H = model.image_size
        reference = torch.rand(cfg.batch_size, 3, H, H, generator=gen)  # ZSCL's reference set (synthetic)
        method = build_method(run_cfg, model, stream, device, autocast_factory(device, cfg.precision), reference)
        B = cfg.batch_size
        pool = max(min(cfg.eval_batch_size, cfg.images_per_task), cfg.classes - cfg.increment)  # every class an image
        data = (
            torch.rand(pool, 3, H, H, generator=gen).to(device),
            torch.rand(B, 3, H, H, generator=gen).to(device),
            (cfg.classes - cfg.increment + torch.randint(0, cfg.increment, (B,), generator=gen)).to(device),
            torch.rand(cfg.eval_batch_size, 3, H, H, generator=gen).to(device),
        )
        return cls(name, cfg, method, run_cfg, data, n_templates)

    def batches(self, t: int) -> TaskBatches:
        """Task t's training images (synthetic), labelled with task t's classes, as the hooks read them."""
        first = 0 if t == 0 else self.overhead.classes - self.overhead.increment
        size = self.overhead.classes - self.overhead.increment if t == 0 else self.overhead.increment
        labels = (first + torch.arange(len(self.pool)) % size).to(self.pool.device)
        # task 0 (untimed: it only brings the method to a later task) reads the whole pool: an image per class
        images = len(self.pool) if t == 0 else min(len(self.pool), self.overhead.images_per_task)
        return TaskBatches(self.pool, labels, images)

    def step(self) -> None:
        """The trainer's step (engine/loop.py): loss, its one host sync, backward, clip, optimiser."""
        from ..engine.loop import optimizer_step

        loss, _ = self.method.training_loss(self.images, self.labels)
        self.finite &= math.isfinite(loss.item())
        optimizer_step(loss, self.opt, self.params, self.cfg.train.grad_clip)

    def predict(self) -> None:
        self.method.predict(self.eval_images)


def format_method_costs(result: dict) -> str:
    """The report of `measure_method_costs`: one row per method, every ratio relative to `lora`."""
    env, cfg = result["environment"], result["config"]
    lines = [
        f"cost relative to {result['reference']} (medians of paired ratios; task = its epochs x "
        f"ceil({cfg['images_per_task']} / {cfg['batch_size']}) steps + before/after_task), model {cfg['arch']}, "
        f"{env['device']}, {env['torch_threads']} threads, method presets for --bench {result['bench_presets']}",
        f"{'method':<16}{'trainable':>12}{'optim':>7}{'epochs':>7}{'step':>12}{'x step':>8}{'hooks':>12}"
        f"{'task':>12}{'x task':>8}{'predict':>12}{'x pred':>8}",
    ]
    for r in result["methods"]:
        hooks = r["before_task_s"] + r["after_task_s"]
        lines.append(
            f"{r['method']:<16}{r['trainable_params']:>12,}{r['optimizer']:>7}{r['epochs']:>7}"
            f"{r['step_s'] * 1e3:>9.2f} ms{r['step_ratio']:>8.2f}{hooks * 1e3:>9.1f} ms{r['task_s']:>10.2f} s"
            f"{r['task_ratio']:>8.2f}{r['predict_s'] * 1e3:>9.2f} ms{r['predict_ratio']:>8.2f}"
        )
    if not result["losses_finite"]:
        lines.append("note: a loss was not finite (random weights): the costs stand, the losses mean nothing")
    return "\n".join(lines)

"""The task loop: for each task, before_task (teacher, anchors, TSGR), training epochs, after_task
(prototypes), evaluation on all seen classes, an atomic checkpoint, and metrics.json.

Every task reseeds from (seed, task), so `--resume` after a completed task replays the rest (up to float
rounding: peft's MultiheadAttention LoRA adds and subtracts its delta in the base weights on each forward).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..benchmarks.base import (
    BAD_LABEL,
    DataConfig,
    TaskStream,
    build_benchmark,
    get_benchmark_info,
    limit_per_class,
    pycil_class_order,
    stack_images,
    task_sizes_from,
)
from ..config import RunConfig, apply_overrides, config_from_dict, validate, write_config
from ..environment import environment
from ..errors import ConfigError, TrainingError
from ..method.learner import Learner, method_switches
from ..metrics import AccuracyMatrix
from ..models.loading import load_clip
from ..models.lora import apply_lora, load_adapter, lora_parameters, save_adapter
from ..report import accuracy_svg
from .checkpoint import RunDir, load_prototypes, save_prototypes, write_json
from .device import autocast_factory, is_main_process, resolve_device, seed_everything, task_seed
from .evaluate import evaluate_seen

log = logging.getLogger("segpcl")


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    class_names: list[str] = field(default_factory=list)


def default_run_dir(cfg: RunConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.data.bench}-{cfg.method.name}-{stamp}"


def build_stream(cfg: RunConfig, image_size: int, run_dir: Path | None) -> TaskStream:
    info = get_benchmark_info(cfg.data.bench)
    data_cfg = DataConfig(
        data_root=Path(cfg.data.data_root) if cfg.data.data_root else None,
        image_size=image_size,
        class_names_file=Path(cfg.data.class_names) if cfg.data.class_names else None,
        templates_file=Path(cfg.data.templates) if cfg.data.templates else None,
        strict=cfg.data.strict,
        download=cfg.data.download,
        seed=0,  # data splits (e.g. ImageNet-R's 80/20) stay fixed across training seeds
        run_dir=run_dir,
    )
    bench = build_benchmark(cfg.data.bench, data_cfg)
    if cfg.data.max_train_per_class is not None or cfg.data.max_test_per_class is not None:
        bench = limit_per_class(bench, cfg.data.max_train_per_class, cfg.data.max_test_per_class)
    n = bench.n_classes
    if cfg.data.class_order:
        from ..benchmarks.class_files import load_class_order

        order = load_class_order(Path(cfg.data.class_order), n)
    else:
        order = pycil_class_order(n, cfg.data.class_order_seed)
    if cfg.data.task_sizes:
        sizes = list(cfg.data.task_sizes)
    else:
        sizes = task_sizes_from(n, cfg.data.initial or info.initial, cfg.data.increment or info.increment)
    return TaskStream(bench, order, sizes)


class _Loaders:
    """DataLoaders of a stream with the run's settings; samplers are injectable (for DDP later)."""

    def __init__(self, cfg: RunConfig, device: torch.device, sampler_factory=None):
        self.cfg, self.device, self.sampler_factory = cfg, device, sampler_factory
        self.skipped_train = 0

    def _loader(self, ds: Dataset, batch_size: int, shuffle: bool, seed: int = 0) -> DataLoader:
        workers = self.cfg.data.num_workers
        gen = torch.Generator().manual_seed(seed)
        sampler = self.sampler_factory(ds, shuffle, seed) if self.sampler_factory else None
        return DataLoader(
            ds,
            batch_size=batch_size,
            shuffle=shuffle and sampler is None,
            sampler=sampler,
            generator=gen,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
            collate_fn=stack_images,
        )

    def train(self, ds: Dataset, seed: int) -> DataLoader:
        return self._loader(ds, self.cfg.train.batch_size, True, seed)

    def ordered_batches(self, ds: Dataset):
        """A callable iterating (images, labels) on the device in dataset order, unreadable files dropped."""

        def batches():
            for images, labels in self._loader(ds, self.cfg.train.eval_batch_size, False):
                keep = labels != BAD_LABEL
                if keep.any():
                    yield images[keep].to(self.device, non_blocking=True), labels[keep].to(self.device)

        return batches

    def test(self, ds: Dataset) -> DataLoader:
        return self._loader(ds, self.cfg.train.eval_batch_size, False)


def _lr_lambda(total_steps: int, warmup_frac: float):
    warmup = max(1, int(total_steps * warmup_frac))

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return fn


def _train_task(learner: Learner, loader: DataLoader, cfg: RunConfig, t: int, run: RunDir, progress: bool) -> dict:
    params = lora_parameters(learner.model)
    opt = torch.optim.AdamW(params, lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    total = cfg.train.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, cfg.train.warmup_frac))
    learner.model.train()
    sums: dict[str, torch.Tensor] = {}
    steps = skipped = 0
    for epoch in range(cfg.train.epochs):
        bar = tqdm(
            loader,
            desc=f"task {t + 1} epoch {epoch + 1}/{cfg.train.epochs}",
            leave=False,
            disable=not progress,
        )
        for images, labels in bar:
            keep = labels != BAD_LABEL
            skipped += int((~keep).sum()) if epoch == 0 else 0
            if not keep.any():
                continue
            images = images[keep].to(learner.device, non_blocking=True)
            labels = labels[keep].to(learner.device, non_blocking=True)
            loss, parts = learner.training_loss(images, labels)
            loss_value = loss.item()  # the step's one host sync
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"the training loss became {loss_value} at task {t + 1}, epoch {epoch + 1} ({parts}); "
                    f"completed tasks are saved in {run.checkpoints}. Lower train.lr or the loss weights "
                    f"(--set train.lr=...), then continue with `segpcl train --resume {run.root}`"
                )
            optimizer_step(loss, opt, params, cfg.train.grad_clip)
            sched.step()
            steps += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v  # tensors: summed on the device, read once per task
            bar.set_postfix(loss=f"{loss_value:.3f}")
    learner.model.eval()
    return {
        "steps": steps,
        "skipped_images": skipped,
        **{f"mean_{k}": float(v) / max(steps, 1) for k, v in sums.items()},
    }


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, params: list, grad_clip: float) -> None:
    """The trainer's update (also what `segpcl bench overhead` times): backward, norm clip (0: off), step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()


def run_training(
    cfg: RunConfig | None = None,
    out_dir: Path | None = None,
    resume: Path | None = None,
    progress: bool = True,
    sampler_factory=None,
    resume_overrides: dict | None = None,
) -> RunResult:
    """Run (or resume) a whole class-incremental stream; returns the run directory and its metrics.

    With `resume`, the run's config.yaml is loaded and `resume_overrides` (e.g. a lower train.lr or another
    device) are applied on top for the remaining tasks and written back."""
    import yaml

    if resume is not None:
        run = RunDir(Path(resume))
        if not run.config_path.is_file():
            raise ConfigError(f"{resume} is not a segpcl run directory (no config.yaml); pass the folder of a run")
        cfg = config_from_dict(yaml.safe_load(run.config_path.read_text()))
        if resume_overrides:
            write_config(apply_overrides(cfg, resume_overrides), run.config_path)
    else:
        if cfg is None:
            raise ConfigError("run_training needs a config or a run directory to resume")
        run = RunDir(out_dir or default_run_dir(cfg))
        if run.latest_task() is not None:
            raise ConfigError(f"{run.root} already holds a run; use --resume {run.root} or another --out")
    run.create()
    handler = logging.FileHandler(run.log_path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        return _run(cfg, run, resume is not None, progress and is_main_process(), sampler_factory)
    finally:
        log.removeHandler(handler)
        handler.close()


def _run(cfg: RunConfig, run: RunDir, resuming: bool, progress: bool, sampler_factory) -> RunResult:
    validate(cfg)
    switches = method_switches(cfg.method.name)
    device = resolve_device(cfg.train.device)
    if device.type == "cuda":
        torch.cuda.set_device(device)  # Triton launches on the current device
    elif cfg.model.precision == "bf16":
        log.warning("model.precision=bf16 is autocast on CUDA only; running fp32 on %s", device)
    autocast = autocast_factory(device, cfg.model.precision)
    seed_everything(cfg.train.seed)
    model = load_clip(cfg.model.arch, cfg.model.pretrained, device=device, precision=cfg.model.precision)
    model.eval()
    stream = build_stream(cfg, model.image_size, run.root)
    if not resuming:
        write_config(cfg, run.config_path)
    if switches.train:
        apply_lora(model, cfg.lora)
        model.to(device)
    learner = Learner(
        model,
        stream.class_names,
        stream.bench.templates,
        stream.task_sizes,
        cfg.method,
        text_has_lora=switches.train and "text" in cfg.lora.towers,
        device=device,
        autocast=autocast,
    )
    loaders = _Loaders(cfg, device, sampler_factory)
    env = {**environment(), "device": str(device)}
    matrix = AccuracyMatrix(stream.n_tasks)
    timings: list[dict] = []
    task_info: list[dict] = []
    skipped = {"train": 0, "test": 0}
    zs: dict = {}
    start = 0
    latest = run.latest_task() if resuming else None
    if latest is not None:
        folder = run.task_dir(latest)
        state = json.loads((folder / "state.json").read_text())
        if switches.train:
            load_adapter(model, folder / "adapter")
        learner.load_state_dict({"task": latest, "prototypes": load_prototypes(folder / "prototypes.npz")})
        matrix.load_state(state["metrics"])
        timings, task_info, skipped, zs = state["timings"], state["task_info"], state["skipped"], state["zs"]
        start = latest + 1
        log.info("resuming %s after task %d", run.root, latest + 1)

    if cfg.data.zs_eval and start == 0:
        from .zero_shot import zero_shot_accuracies

        zs = {name: {"before": acc} for name, acc in zero_shot_accuracies(model, cfg, device, progress).items()}

    task_of_class = stream.task_of_position()
    t = start
    try:
        for t in range(start, stream.n_tasks):
            seed_everything(task_seed(cfg.train.seed, t))
            train_set = stream.train_set(t)
            times: dict[str, float] = {}
            t0 = time.perf_counter()
            info = learner.before_task(t, loaders.ordered_batches(train_set))
            times["before_task"] = time.perf_counter() - t0
            if switches.train:
                t0 = time.perf_counter()
                info.update(
                    _train_task(learner, loaders.train(train_set, task_seed(cfg.train.seed, t)), cfg, t, run, progress)
                )
                skipped["train"] += info.pop("skipped_images")
                times["train"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            info.update(learner.after_task(t, loaders.ordered_batches(train_set)))
            times["after_task"] = time.perf_counter() - t0
            t0 = time.perf_counter()
            learner.begin_eval(t)
            correct, total, bad = evaluate_seen(
                learner.predict, loaders.test(stream.test_set(t)), task_of_class, t + 1, device, progress
            )
            skipped["test"] = bad
            times["eval"] = time.perf_counter() - t0
            matrix.update(t, correct, total)
            timings.append(times)
            task_info.append(info)
            log.info("task %d/%d: accuracy %.2f (%s)", t + 1, stream.n_tasks, matrix.task_accuracy[-1], info)
            if cfg.data.zs_eval and t == stream.n_tasks - 1:
                from .zero_shot import zero_shot_accuracies

                for name, acc in zero_shot_accuracies(model, cfg, device, progress).items():
                    zs.setdefault(name, {})["after"] = acc
                    if "before" in zs[name]:
                        zs[name]["delta"] = acc - zs[name]["before"]
            metrics = _metrics(cfg, stream, matrix, timings, task_info, skipped, zs, env)
            write_json(run.metrics_path, metrics)
            run.write_plot(accuracy_svg(metrics))
            state = {
                "metrics": matrix.state(),
                "timings": timings,
                "task_info": task_info,
                "skipped": skipped,
                "zs": zs,
            }

            def contents(folder: Path, state=state) -> None:
                save_adapter(model, folder / "adapter")
                save_prototypes(folder / "prototypes.npz", learner.state_dict()["prototypes"])
                write_json(folder / "state.json", state)

            run.save_task(t, contents)
    except torch.OutOfMemoryError as exc:
        raise TrainingError(
            f"out of GPU memory in task {t + 1} ({str(exc).splitlines()[0]}); completed tasks are saved in "
            f"{run.checkpoints}. Lower train.batch_size, train.eval_batch_size or method.k_seed (--set ...), "
            f"or use --precision bf16, then continue with `segpcl train --resume {run.root}`"
        ) from exc
    metrics = _metrics(cfg, stream, matrix, timings, task_info, skipped, zs, env)
    write_json(run.metrics_path, metrics)
    return RunResult(run.root, metrics, stream.class_names)


def _metrics(cfg, stream, matrix, timings, task_info, skipped, zs, env) -> dict:
    out = {
        "bench": cfg.data.bench,
        "method": cfg.method.name,
        "seed": cfg.train.seed,
        "n_tasks": stream.n_tasks,
        "task_sizes": stream.task_sizes,
        "tasks_completed": len(matrix.acc),
        **matrix.result(),
        "timings": timings,
        "task_info": task_info,
        "skipped_images": skipped,
        "environment": env,
    }
    if zs:
        out["zero_shot_retention"] = zs
    return out

"""The task loop: for each task, before_task (teacher, anchors, TSGR), training epochs, after_task
(prototypes), evaluation on all seen classes, an atomic checkpoint, and metrics.json.

Every task reseeds from (seed, task), so `--resume` after a completed task replays the rest (up to float
rounding: peft's MultiheadAttention LoRA adds and subtracts its delta in the base weights on each forward).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import shutil
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
from ..errors import ConfigError, SegpclError, TrainingError
from ..method.learner import Learner, method_switches
from ..metrics import AccuracyMatrix
from ..models.lora import load_adapter, lora_parameters, save_adapter
from ..report import accuracy_svg
from . import distributed
from .checkpoint import RunDir, check_manifest, load_prototypes, manifest_identity, save_prototypes, write_json
from .device import autocast_factory, is_main_process, resolve_device, seed_everything, task_seed
from .evaluate import evaluate_seen
from .logs import RunLogger
from .reference import reference_images
from .reopen import build_learner, build_model, write_classes
from .transfer import record_transfer

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
    if cfg.data.class_order == "boundary":  # the drift diagnostic's ground truth (toy only)
        from ..benchmarks.toy import boundary_class_order

        if cfg.data.bench != "toy":
            raise ConfigError("data.class_order=boundary is an order of the toy benchmark's classes (--bench toy)")
        increments = set(
            cfg.data.task_sizes or [cfg.data.initial or info.initial, cfg.data.increment or info.increment]
        )
        order = boundary_class_order(increments.pop() if len(increments) == 1 else 0, cfg.data.class_order_seed)
    elif cfg.data.class_order:
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


def _train_task(
    learner: Learner, loader: DataLoader, cfg: RunConfig, t: int, run: RunDir, progress: bool, on_step=None
) -> dict:
    params = lora_parameters(learner.model)
    opt = make_optimizer(params, cfg)
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
                if distributed.active():  # the other ranks step: take part with a zero gradient
                    optimizer_step(sum(p.sum() for p in params) * 0.0, opt, params, cfg.train.grad_clip)
                    sched.step()
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
            if on_step is not None:  # engine/logs.py: TensorBoard reads the parts only when it is on
                on_step(t, loss_value, parts, sched.get_last_lr()[0])
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v  # tensors: summed on the device, read once per task
            bar.set_postfix(loss=f"{loss_value:.3f}")
    learner.model.eval()
    return {
        "steps": steps,
        "skipped_images": skipped,
        **{f"mean_{k}": float(v) / max(steps, 1) for k, v in sums.items()},
    }


def make_optimizer(params: list, cfg: RunConfig) -> torch.optim.Optimizer:
    """train.optimizer over the trainable LoRA parameters (a fresh one each task)."""
    tr = cfg.train
    if tr.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tr.lr, momentum=tr.momentum, weight_decay=tr.weight_decay)
    return torch.optim.AdamW(params, lr=tr.lr, weight_decay=tr.weight_decay)


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, params: list, grad_clip: float) -> None:
    """The trainer's update (also what `segpcl bench overhead` times): backward, norm clip (0: off), step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if distributed.active():  # several processes (torchrun): the mean gradient of the global batch
        distributed.average_gradients(params)
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
    from_task: int | None = None,
) -> RunResult:
    """Run (or resume) a whole class-incremental stream; returns the run directory and its metrics.

    With `resume`, the run's config.yaml is loaded and `resume_overrides` (e.g. a lower train.lr or another
    device) are checked, then applied for the remaining tasks and written back; the run continues after the
    last verified checkpoint (or after task `from_task`, 1-based; 0 retrains from the start). The run
    directory is locked for the whole call.

    Under torchrun (WORLD_SIZE > 1) the process group is joined here; rank 0 does all of the above and the
    other ranks follow it (engine/distributed.py)."""
    if distributed.init_from_env(_device_name(cfg, resume, resume_overrides)):
        from .sharded import leading, run_ranks

        if not leading():
            return run_ranks(run_training, cfg, out_dir, resume, progress, sampler_factory, resume_overrides, from_task)
    if resume is not None:
        return _resume(Path(resume), resume_overrides or {}, from_task, progress, sampler_factory)
    if cfg is None:
        raise ConfigError("run_training needs a config or a run directory to resume")
    if from_task is not None:
        raise ConfigError("--from-task applies only with --resume DIR")
    validate(cfg)
    run = RunDir(Path(out_dir) if out_dir is not None else default_run_dir(cfg))
    created = _claim_out_dir(run)
    started = {"training": False, "ours": False}
    try:
        try:
            run.acquire()
        except OSError as exc:
            raise ConfigError(f"cannot write the run directory {run.root}: {exc.strerror or exc}") from None
        started["ours"] = True  # we hold the lock of a folder that was new or empty
        try:
            if is_run_dir(run.root):  # another process finished a run here between our check and the lock
                started["ours"] = False
                raise ConfigError(f"{run.root} already holds a run; use --resume {run.root} or another --out")
            try:
                run.create()
                write_config(cfg, run.config_path)
            except OSError as exc:
                raise ConfigError(f"cannot write the run directory {run.root}: {exc.strerror or exc}") from None
            with _run_log(run):
                return _run(cfg, run, None, progress and is_main_process(), sampler_factory, started)
        except BaseException:
            if started["ours"] and not started["training"]:
                _remove_failed_start(run, created)
            raise
        finally:
            run.release()
    except BaseException:
        if created is not None and not started["ours"]:  # the folders we made, if still empty
            folder = run.root
            while True:
                try:
                    folder.rmdir()
                except OSError:
                    break
                if folder == created:
                    break
                folder = folder.parent
        raise


def _device_name(cfg: RunConfig | None, resume, overrides: dict | None) -> str:
    """The run's train.device (which backend the process group uses), without loading anything else."""
    if overrides and overrides.get("train.device"):
        return str(overrides["train.device"])
    if cfg is not None:
        return cfg.train.device
    if resume is not None:
        try:
            return load_run_config(Path(resume)).train.device
        except SegpclError:
            return "auto"
    return "auto"


def is_run_dir(root: Path) -> bool:
    """A segpcl run directory: config.yaml next to checkpoints/ (a user's own config.yaml is not one)."""
    return (root / "config.yaml").is_file() and (root / "checkpoints").is_dir()


def _claim_out_dir(run: RunDir) -> Path | None:
    """Refuse a folder that is a file, busy, a finished run or someone else's non-empty folder; create it.
    Returns the topmost folder this call created (removed again if the start fails), or None."""
    root = run.root
    if root.exists() or root.is_symlink():
        if not root.is_dir():
            raise ConfigError(f"--out {root} exists and is not a folder; choose a new or empty folder")
        try:
            entries = [p.name for p in root.iterdir()]
        except OSError as exc:
            raise ConfigError(f"cannot read --out {root}: {exc.strerror or exc}") from None
        if entries:
            pid = run.lock_holder()
            if pid is not None:
                who = f"process {pid}" if pid > 0 else "another process"
                raise ConfigError(f"{root} is in use by {who} (a segpcl run holds {run.lock_path}); use another --out")
            if is_run_dir(root):
                raise ConfigError(f"{root} already holds a run; use --resume {root} or another --out")
            raise ConfigError(
                f"--out {root} is a folder that is not empty and not a segpcl run directory "
                f"({len(entries)} entries, e.g. {sorted(entries)[0]}); choose a new or empty folder"
            )
        return None
    top = root
    while not top.parent.exists() and top.parent != top:
        top = top.parent
    try:
        root.mkdir(parents=True)
    except FileExistsError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot create the run directory {root}: {exc.strerror or exc}") from None
    return top


def _remove_failed_start(run: RunDir, created: Path | None) -> None:
    """A start that failed before training leaves nothing behind (we held the lock, no task finished)."""
    if created is not None:
        shutil.rmtree(created, ignore_errors=True)
    elif run.root.is_dir():
        for p in run.root.iterdir():
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)


class _run_log:
    """log.txt of the run for the duration of a with block."""

    def __init__(self, run: RunDir):
        self.run = run

    def __enter__(self):
        self.handler = logging.FileHandler(self.run.log_path)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        log.addHandler(self.handler)
        log.setLevel(logging.INFO)
        return self

    def __exit__(self, *exc):
        log.removeHandler(self.handler)
        self.handler.close()


FREE_ON_RESUME = ("data.data_root", "data.strict", "data.num_workers", "data.max_tasks")
"""data.* keys that may change on resume (where the data lives, how it is read); every other data key
defines the split or the images."""


def defines_run(key: str) -> bool:
    """Whether a dotted config key is part of what a run is (method, model, split, images, LoRA, seed)."""
    if key in FREE_ON_RESUME:
        return False
    return key.startswith(("data.", "lora.")) or key in ("model.arch", "model.pretrained", "train.seed", "method.name")


def flat_config(cfg: RunConfig) -> dict:
    out: dict = {}

    def walk(tree, prefix):
        for key, value in tree.items():
            if isinstance(value, dict) and key != "zs_eval":
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value

    walk(cfg.to_dict(), "")
    return out


def run_identity(cfg: RunConfig) -> dict:
    """The settings that define the run (stored in every checkpoint's manifest)."""
    return {k: v for k, v in flat_config(cfg).items() if defines_run(k)}


def config_differences(old: RunConfig, new: RunConfig, keys=None) -> list[str]:
    """`key: old -> new` for every differing key (restricted to `keys`, a predicate, when given)."""
    a, b = flat_config(old), flat_config(new)
    return [
        f"{k}: {a.get(k)!r} -> {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and (keys is None or keys(k))
    ]


def load_run_config(root: Path) -> RunConfig:
    """The config.yaml of a run directory, or a one-line ConfigError saying what is wrong with it."""
    import yaml

    path = root / "config.yaml"
    if not root.is_dir():
        raise ConfigError(f"--resume {root}: no such folder")
    if not path.is_file():
        raise ConfigError(f"{root} is not a segpcl run directory (no config.yaml); pass the folder of a run")
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"{path} is damaged ({first}); restore it (every checkpoint keeps the run's settings)"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} is damaged (it does not hold a mapping of config sections); restore it")
    try:
        return config_from_dict(data)
    except ConfigError as exc:
        raise ConfigError(f"{path} is damaged or from another segpcl version: {exc}") from None


def _resume_hint(run: RunDir, below: int) -> str:
    j = run.last_intact_before(below)
    if j is None:
        return (
            f"no earlier checkpoint is intact; retrain from the first task with "
            f"`segpcl train --resume {run.root} --from-task 0`"
        )
    return (
        f"the last intact checkpoint is task {j + 1}; continue from it with "
        f"`segpcl train --resume {run.root} --from-task {j + 1}` (retrains the tasks after it)"
    )


def resume_point(run: RunDir, cfg: RunConfig, from_task: int | None) -> int | None:
    """The 0-based task whose verified checkpoint the run continues after (None: from the start).
    Never guesses: a damaged, missing or foreign checkpoint stops with what was found and how to go on."""
    folders = run.task_folders()
    if from_task is not None:
        if from_task == 0:
            return None
        k = from_task - 1
        if k not in folders:
            have = ", ".join(str(t + 1) for t in folders) or "none"
            raise ConfigError(
                f"--from-task {from_task}: {run.task_dir(k)} does not exist (checkpoints of tasks: {have})"
            )
        problem = check_manifest(run.task_dir(k))
        if problem:
            raise ConfigError(
                f"--from-task {from_task}: checkpoint {run.task_dir(k)} is damaged: {problem}; {_resume_hint(run, k)}"
            )
    else:
        name = run.latest_name()
        if name is None:
            if not folders:
                claimed = _metrics_tasks_completed(run)
                if claimed:
                    raise ConfigError(
                        f"{run.latest_path} is missing and there are no task checkpoints, but metrics.json says "
                        f"{claimed} tasks were completed; the checkpoints are lost: retrain with "
                        f"`segpcl train --resume {run.root} --from-task 0`"
                    )
                return None
            k = folders[-1]
            problem = check_manifest(run.task_dir(k))
            if problem:
                raise ConfigError(
                    f"{run.latest_path} is missing; found checkpoints of tasks "
                    f"{', '.join(str(t + 1) for t in folders)}, and the highest, {run.task_dir(k).name}, is damaged: "
                    f"{problem}; {_resume_hint(run, k)}"
                )
            log.warning(
                "%s is missing; continuing after task %d, the highest verified checkpoint", run.latest_path, k + 1
            )
        else:
            k = int(name.split("_")[1])
            problem = check_manifest(run.task_dir(k))
            if problem:
                raise ConfigError(
                    f"checkpoint {run.task_dir(k)} (the last completed task, named by LATEST) is damaged: {problem}; "
                    f"{_resume_hint(run, k)}"
                )
    stored = manifest_identity(run.task_dir(k))
    mine = run_identity(cfg)
    differ = [f"{key}: {stored[key]!r} vs {mine.get(key)!r}" for key in sorted(stored) if stored[key] != mine.get(key)]
    if differ:
        raise ConfigError(
            f"checkpoint {run.task_dir(k)} was written by a run with other settings than {run.config_path} "
            f"({'; '.join(differ[:4])}); the run directory mixes two runs: restore config.yaml or start a new run"
        )
    return k


def _metrics_tasks_completed(run: RunDir) -> int:
    try:
        return int(json.loads(run.metrics_path.read_text()).get("tasks_completed") or 0)
    except (OSError, ValueError, AttributeError, TypeError):
        return 0


def _resume(root: Path, overrides: dict, from_task: int | None, progress: bool, sampler_factory) -> RunResult:
    """Check everything (config, overrides, checkpoints) before changing a single file, then continue."""
    run = RunDir(root)
    old = load_run_config(root)
    cfg = apply_overrides(copy.deepcopy(old), overrides)
    fixed = config_differences(old, cfg, defines_run)
    if fixed:
        raise ConfigError(
            f"--resume cannot change what defines the run ({'; '.join(fixed)}); the method, model, LoRA layout, "
            "data split and seed stay as the run started: use a new --out for a new run"
        )
    validate(cfg)
    if not run.checkpoints.is_dir():
        raise ConfigError(f"{root} is not a segpcl run directory (no checkpoints/ folder)")
    try:
        run.acquire()
    except OSError as exc:
        raise ConfigError(f"cannot lock {run.lock_path}: {exc.strerror or exc}") from None
    try:
        start_after = resume_point(run, old, from_task)
        run.remove_stale_temporaries()
        if from_task is not None:
            # an explicit restart point: later checkpoints are superseded (they would otherwise mix in)
            for k in run.task_folders():
                if start_after is None or k > start_after:
                    shutil.rmtree(run.task_dir(k))
        if start_after is None:
            run.latest_path.unlink(missing_ok=True)
        elif run.latest_name() != run.task_dir(start_after).name:
            from .checkpoint import atomic_write_text

            atomic_write_text(run.latest_path, run.task_dir(start_after).name)
        if config_differences(old, cfg):
            write_config(cfg, run.config_path)
        with _run_log(run):
            return _run(cfg, run, start_after, progress and is_main_process(), sampler_factory, {"training": False})
    finally:
        run.release()


def image_size_guess(arch: str) -> int:
    """The input size of `arch` without building it (so the data can be checked before any weights load)."""
    from ..models.tiny import TINY_CONFIGS

    if arch in TINY_CONFIGS:
        return int(TINY_CONFIGS[arch]["vision"]["image_size"])
    try:
        import open_clip

        size = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
        return int(size[0] if isinstance(size, list | tuple) else size)
    except Exception:  # unknown arch: load_clip reports it
        return 224


def _run(
    cfg: RunConfig, run: RunDir, start_after: int | None, progress: bool, sampler_factory, started: dict
) -> RunResult:
    """The task loop; `start_after`: the verified checkpoint to continue after (None: the first task)."""
    validate(cfg)
    ranks = distributed.active()
    if ranks:
        from .sharded import NoLogger, ShardedLoaders, announce, reduce_task_info

        announce(cfg, run.root, start_after)  # rank 0: the followers start their loop from here
    main = distributed.rank() == 0
    switches = method_switches(cfg.method.name)
    device = distributed.local_device(resolve_device(cfg.train.device))
    if device.type == "cuda":
        torch.cuda.set_device(device)  # Triton launches on the current device
    guess = image_size_guess(cfg.model.arch)
    stream_dir = run.root if main else None  # rank 0 writes files a benchmark keeps in the run (a split list)
    stream = build_stream(cfg, guess, stream_dir)  # the data is checked before any weights load
    if device.type != "cuda" and cfg.model.precision == "bf16":
        log.warning("model.precision=bf16 is autocast on CUDA only; running fp32 on %s", device)
    autocast = autocast_factory(device, cfg.model.precision)
    model = build_model(cfg, device)  # seeded from train.seed (engine/reopen.py: load_run builds it the same way)
    if model.image_size != guess:
        stream = build_stream(cfg, model.image_size, stream_dir)
    references = reference_images(cfg, model.image_size) if switches.source == "ref" else None
    learner = build_learner(cfg, model, stream, device, autocast, references)
    loaders = _Loaders(cfg, device, sampler_factory)
    task_batches = loaders.ordered_batches
    if ranks:  # each rank scans and encodes its shard; anchors and prototypes are merged (learner.comm)
        learner.comm = distributed.AnchorComm()
        loaders = ShardedLoaders(cfg, device, learner.comm)
        task_batches = loaders.shard_batches
    env = {**environment(), "device": str(device)}
    matrix = AccuracyMatrix(stream.n_tasks)
    timings: list[dict] = []
    task_info: list[dict] = []
    skipped = {"train": 0, "test": 0}
    zs: dict = {}
    drift: list[dict] = []  # --diagnose: one entry per task t >= 2
    start = 0
    latest = start_after
    if latest is not None:
        folder = run.task_dir(latest)
        try:  # verified against its manifest already; this catches a manifest forged along with the file
            state = json.loads((folder / "state.json").read_text())
            if switches.train:
                load_adapter(model, folder / "adapter")
            learner.load_state_dict({"task": latest, "prototypes": load_prototypes(folder / "prototypes.npz")})
            matrix.load_state(state["metrics"])
            timings, task_info, skipped, zs = state["timings"], state["task_info"], state["skipped"], state["zs"]
            drift = state.get("drift", [])
        except SegpclError:
            raise
        except Exception as exc:
            why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            raise ConfigError(f"checkpoint {folder} cannot be read ({why}); {_resume_hint(run, latest)}") from None
        if len(matrix.acc) != latest + 1:
            why = f"holds {len(matrix.acc)} tasks' results, not {latest + 1}"
            raise ConfigError(f"checkpoint {folder} {why}; {_resume_hint(run, latest)}")
        start = latest + 1
        log.info("resuming %s after task %d", run.root, latest + 1)

    if cfg.data.zs_eval and start == 0:
        from .zero_shot import zero_shot_accuracies

        zs = {name: {"before": acc} for name, acc in zero_shot_accuracies(model, cfg, device, progress).items()}

    task_of_class = stream.task_of_position()
    if main:
        write_classes(run.root, stream)  # lets load_run / segpcl predict / export work where the data set is absent
    identity = run_identity(cfg)
    steps_done = sum(int(i.get("steps", 0)) for i in task_info)
    logger = RunLogger(run.root, cfg.train.log, steps_done) if main else NoLogger()
    n_run = min(stream.n_tasks, cfg.data.max_tasks or stream.n_tasks)  # --max-tasks: the first N tasks only
    started["training"] = True
    t = start
    try:
        for t in range(start, n_run):
            fwt_seconds = record_transfer(matrix, learner, stream, loaders, t, device, progress, switches.train)
            seed_everything(task_seed(cfg.train.seed, t))
            train_set = stream.train_set(t)
            times: dict[str, float] = {"transfer_eval": fwt_seconds}
            t0 = time.perf_counter()
            info = learner.before_task(t, task_batches(train_set))
            distributed.dump_anchors(learner.anchors, t)  # SEGPCL_DEBUG_ANCHORS only
            times["before_task"] = time.perf_counter() - t0
            diagnosis = None
            if cfg.train.diagnose and switches.train and t >= 1:
                from ..analysis.drift import begin_diagnosis, diagnose_task, drift_table

                t0 = time.perf_counter()
                diagnosis = begin_diagnosis(learner, task_batches(train_set), device)
                times["diagnose"] = time.perf_counter() - t0
            if switches.train:
                t0 = time.perf_counter()
                info.update(
                    _train_task(
                        learner,
                        loaders.train(train_set, task_seed(cfg.train.seed, t)),
                        cfg,
                        t,
                        run,
                        progress,
                        logger.on_step,
                    )
                )
                if ranks:  # the whole batch's numbers: unreadable images summed, mean losses averaged over ranks
                    info.update(reduce_task_info(info))
                skipped["train"] += info.pop("skipped_images")
                times["train"] = time.perf_counter() - t0
            if diagnosis is not None:
                t0 = time.perf_counter()
                teacher, probe = diagnosis
                drift.append(diagnose_task(learner, teacher, stream, loaders.ordered_batches, t, probe))
                diagnosis = teacher = probe = None
                times["diagnose"] += time.perf_counter() - t0
                log.info("%s", drift_table(drift[-1:]))
            t0 = time.perf_counter()
            info.update(learner.after_task(t, task_batches(train_set)))
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
            log.info("task %d/%d: accuracy %.2f (%s)", t + 1, stream.n_tasks, matrix.seen_accuracy[-1], info)
            if cfg.data.zs_eval and t == n_run - 1:
                from .zero_shot import zero_shot_accuracies

                for name, acc in zero_shot_accuracies(model, cfg, device, progress).items():
                    zs.setdefault(name, {})["after"] = acc
                    if "before" in zs[name]:
                        zs[name]["delta"] = acc - zs[name]["before"]
            metrics = _metrics(cfg, stream, matrix, timings, task_info, skipped, zs, env, drift)
            state = {
                "metrics": matrix.state(),
                "timings": timings,
                "task_info": task_info,
                "skipped": skipped,
                "zs": zs,
                **({"drift": drift} if drift else {}),
            }

            def contents(folder: Path, state=state) -> None:
                save_adapter(model, folder / "adapter")
                save_prototypes(folder / "prototypes.npz", learner.state_dict()["prototypes"])
                write_json(folder / "state.json", state)

            if not main:  # rank 0 writes the run directory
                continue
            run.save_task(t, contents, identity)  # the checkpoint first: metrics.json never runs ahead of it
            write_json(run.metrics_path, metrics)
            logger.on_task(t, metrics)  # metrics.csv, TensorBoard
            run.write_plot(accuracy_svg(metrics))
            if drift:
                from ..analysis.drift import drift_svg

                run.write_plot(
                    drift_svg(drift, f"{cfg.method.name} on {cfg.data.bench}: drift of old classes"), "drift.svg"
                )
    except torch.OutOfMemoryError as exc:
        raise TrainingError(
            f"out of GPU memory in task {t + 1} ({str(exc).splitlines()[0]}); completed tasks are saved in "
            f"{run.checkpoints}. Lower train.batch_size, train.eval_batch_size or method.k_seed (--set ...), "
            f"or use --precision bf16, then continue with `segpcl train --resume {run.root}`"
        ) from exc
    finally:
        logger.close()
    metrics = _metrics(cfg, stream, matrix, timings, task_info, skipped, zs, env, drift)
    if main:
        write_json(run.metrics_path, metrics)
    distributed.barrier()  # the followers end with rank 0's last write
    return RunResult(run.root, metrics, stream.class_names)


def _metrics(cfg, stream, matrix, timings, task_info, skipped, zs, env, drift=None) -> dict:
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
    if drift:
        out["drift"] = drift
    return out

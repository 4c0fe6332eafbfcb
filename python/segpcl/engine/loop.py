"""The epochs of one task: the optimiser, its schedule (linear warm-up, then cosine or step decay) and the update
step, with what the optimiser did (mean pre-clip gradient norm, share of clipped steps) and a warning when a
task's training looks divergent."""

from __future__ import annotations

import logging
import math

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import RunConfig
from ..errors import TrainingError
from ..method.base import ContinualMethod
from . import distributed
from .loaders import readable

log = logging.getLogger("segpcl")

DIVERGENCE_RATIO = 10.0
"""A task looks divergent when the mean loss of its last 10 % of steps exceeds this multiple of its first 10 %'s,
or when every step was clipped with a mean pre-clip gradient norm of this multiple of train.grad_clip or more."""
MIN_STEPS_ALL_CLIPPED = 10
"""Clipping at every step is reported for tasks of at least this many steps (fewer say little)."""


def lr_factor(
    total_steps: int,
    warmup_frac: float,
    milestones: list[int] | None = None,
    steps_per_epoch: int = 1,
    gamma: float = 0.1,
    warmup_steps: int = 0,
):
    """step -> learning-rate factor: linear warm-up over warmup_frac of the steps (or over `warmup_steps` when
    > 0), then cosine decay to 0, or with `milestones` (epochs) a step decay: gamma ** (milestones reached by the
    step's epoch)."""
    warmup = warmup_steps or max(1, int(total_steps * warmup_frac))

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if milestones is not None:
            epoch = step // max(1, steps_per_epoch)
            return gamma ** sum(epoch >= m for m in milestones)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return fn


def make_optimizer(params: list, cfg: RunConfig) -> torch.optim.Optimizer:
    """train.optimizer over the trainable parameters (a fresh one each task)."""
    tr = cfg.train
    if tr.optimizer == "sgd":
        return torch.optim.SGD(params, lr=tr.lr, momentum=tr.momentum, weight_decay=tr.weight_decay)
    if tr.optimizer == "adam":
        return torch.optim.Adam(params, lr=tr.lr, weight_decay=tr.weight_decay)
    return torch.optim.AdamW(params, lr=tr.lr, weight_decay=tr.weight_decay)


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, params: list, grad_clip: float) -> torch.Tensor:
    """The trainer's update (also what `segpcl bench overhead` times): backward, norm clip (0: off), step.
    Returns the total gradient norm before clipping, on the device (reading it is a host sync: sum it there)."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if distributed.active():  # several processes (torchrun): the mean gradient of the global batch
        distributed.average_gradients(params)
    # max_norm inf: the norm without clipping (the scale factor is clamped to 1)
    norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
    opt.step()
    return norm


def divergence_warning(
    losses: list[float], clipped_share: float, mean_norm: float, cfg: RunConfig, t: int
) -> str | None:
    """One line naming the settings to check when task t's training looks divergent, else None: the mean loss
    of its last 10 % of steps above DIVERGENCE_RATIO times that of its first 10 %, or every step of the task
    clipped with a mean pre-clip norm of DIVERGENCE_RATIO x train.grad_clip or more (clipping then hides a
    learning rate far too large: train.lr=1e9 still trains, to garbage, with a loss that barely moves).

    Clipping at every step by a small factor is not enough: the toy preset clips every step of its later tasks
    at about 2x train.grad_clip while training well (README, "The toy benchmark"); there the clip sets the step
    size, which `clipped_share` and `mean_grad_norm` in metrics.json show."""
    n, tr = len(losses), cfg.train
    window = max(1, n // 10)
    first, last = sum(losses[:window]) / window, sum(losses[-window:]) / window
    why = []
    if n >= 2 and last > DIVERGENCE_RATIO * first:
        why.append(f"its loss rose from {first:.3g} (first 10% of steps) to {last:.3g} (last 10%)")
    clip_hides = mean_norm >= DIVERGENCE_RATIO * tr.grad_clip
    if tr.grad_clip > 0 and n >= MIN_STEPS_ALL_CLIPPED and clipped_share >= 1.0 and clip_hides:
        why.append(
            f"the gradient norm exceeded train.grad_clip={tr.grad_clip:g} at every one of its {n} steps "
            f"(mean {mean_norm:.3g} before clipping)"
        )
    if not why:
        return None
    return (
        f"task {t + 1} may have diverged: {' and '.join(why)}; check train.lr (now {tr.lr:g}) and "
        f"train.grad_clip (now {tr.grad_clip:g}), e.g. --set train.lr={tr.lr / 10:g}"
    )


def _what_next(t: int, where: str) -> str:
    """After a non-finite loss: resume from the saved tasks, or (task 1: a new run's folder is removed) start over."""
    if t == 0:
        return (
            "no task had completed, so nothing is kept. Lower train.lr or the loss weights (--set train.lr=...) "
            "and run the command again"
        )
    return (
        f"completed tasks are saved in {where}/checkpoints. Lower train.lr or the loss weights "
        f"(--set train.lr=...), then continue with `segpcl train --resume {where}`"
    )


def train_task(
    method: ContinualMethod, loader: DataLoader, cfg: RunConfig, t: int, where: str, on_step=None, progress=True
) -> dict:
    """Train task t for train.epochs over `loader` (fewer when the method's should_stop says so after an epoch);
    returns the steps, unreadable images and mean loss parts.
    `where` (the run directory) goes into the message of a non-finite loss."""
    params = method.trainable_parameters()
    opt = make_optimizer(params, cfg)
    tr = cfg.train
    milestones = tr.milestones if tr.schedule == "multistep" else None
    factor = lr_factor(tr.epochs * len(loader), tr.warmup_frac, milestones, len(loader), tr.gamma, tr.warmup_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    method.model.train()
    sums: dict[str, torch.Tensor] = {}
    norms = torch.zeros(2, device=method.device)  # pre-clip norm, clipped steps: summed here, read once per task
    losses: list[float] = []  # on the host already (the step's one sync)
    steps = skipped = 0
    for epoch in range(cfg.train.epochs):
        desc = f"task {t + 1} epoch {epoch + 1}/{cfg.train.epochs}"
        for images, labels in (bar := tqdm(loader, desc=desc, leave=False, disable=not progress)):
            images, labels, keep = readable(images, labels)
            skipped += int((~keep).sum()) if epoch == 0 else 0
            if not len(labels):
                if distributed.active():  # the other ranks step: take part with a zero gradient
                    optimizer_step(sum(p.sum() for p in params) * 0.0, opt, params, cfg.train.grad_clip)
                    sched.step()
                continue
            images = images.to(method.device, non_blocking=True)
            loss, parts = method.training_loss(images, labels.to(method.device, non_blocking=True))
            loss_value = loss.item()  # the step's one host sync
            if not math.isfinite(loss_value):
                raise TrainingError(
                    f"the training loss became {loss_value} at task {t + 1}, epoch {epoch + 1} ({parts}); "
                    + _what_next(t, where)
                )
            norm = optimizer_step(loss, opt, params, cfg.train.grad_clip)
            sched.step()
            steps += 1
            losses.append(loss_value)
            norms += torch.stack([norm.float(), (norm > cfg.train.grad_clip).float() * (cfg.train.grad_clip > 0)])
            if on_step is not None:  # engine/logs.py: TensorBoard reads the parts only when it is on
                on_step(t, loss_value, parts, sched.get_last_lr()[0])
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v  # tensors: summed on the device, read once per task
            bar.set_postfix(loss=f"{loss_value:.3f}")
        if method.should_stop(epoch):
            break
    method.model.eval()
    norm_sum, clipped = (float(v) for v in norms)
    info = {
        "steps": steps,
        "skipped_images": skipped,
        **{f"mean_{k}": float(v) / max(steps, 1) for k, v in sums.items()},
        "mean_grad_norm": norm_sum / max(steps, 1),
        "clipped_share": clipped / max(steps, 1),
    }
    warning = divergence_warning(losses, info["clipped_share"], info["mean_grad_norm"], cfg, t)
    if warning is not None:
        info["warning"] = warning
        if distributed.rank() == 0:
            log.warning("%s", warning)
    return info

"""The epochs of one task: the optimiser, its schedule (linear warm-up, then cosine decay) and the update step."""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from ..config import RunConfig
from ..errors import TrainingError
from ..method.base import ContinualMethod
from . import distributed
from .loaders import readable


def lr_factor(total_steps: int, warmup_frac: float):
    """step -> learning-rate factor: linear warm-up over warmup_frac of the steps, then cosine decay to 0."""
    warmup = max(1, int(total_steps * warmup_frac))

    def fn(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return fn


def make_optimizer(params: list, cfg: RunConfig) -> torch.optim.Optimizer:
    """train.optimizer over the trainable parameters (a fresh one each task)."""
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


def train_task(
    method: ContinualMethod, loader: DataLoader, cfg: RunConfig, t: int, where: str, on_step=None, progress=True
) -> dict:
    """Train task t for train.epochs over `loader`; returns the steps, unreadable images and mean loss parts.
    `where` (the run directory) goes into the message of a non-finite loss."""
    params = method.trainable_parameters()
    opt = make_optimizer(params, cfg)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg.train.epochs * len(loader), cfg.train.warmup_frac))
    method.model.train()
    sums: dict[str, torch.Tensor] = {}
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
                    f"completed tasks are saved in {where}/checkpoints. Lower train.lr or the loss weights "
                    f"(--set train.lr=...), then continue with `segpcl train --resume {where}`"
                )
            optimizer_step(loss, opt, params, cfg.train.grad_clip)
            sched.step()
            steps += 1
            if on_step is not None:  # engine/logs.py: TensorBoard reads the parts only when it is on
                on_step(t, loss_value, parts, sched.get_last_lr()[0])
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v  # tensors: summed on the device, read once per task
            bar.set_postfix(loss=f"{loss_value:.3f}")
    method.model.eval()
    return {
        "steps": steps,
        "skipped_images": skipped,
        **{f"mean_{k}": float(v) / max(steps, 1) for k, v in sums.items()},
    }

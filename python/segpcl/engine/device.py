"""Device choice, autocast, seeding and rank-aware logging (no global state beyond the process RNGs)."""

from __future__ import annotations

import contextlib
import functools
import random

import numpy as np
import torch

from ..errors import ConfigError


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} was asked for but CUDA is not available here; use --device cpu")
    try:
        return torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}; use cpu, cuda, cuda:N or auto") from exc


def autocast_factory(device: torch.device, precision: str):
    """A zero-argument context-manager factory: bf16 autocast on CUDA when asked, else a no-op."""
    if precision == "bf16" and device.type == "cuda":
        return functools.partial(torch.autocast, device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def task_seed(seed: int, task: int) -> int:
    """Each task reseeds from (seed, task), so a resumed run replays the same randomness."""
    return seed * 7919 + task

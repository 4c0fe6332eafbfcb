"""The toy CLIP's pretraining recipe: its settings (:class:`ToyPretrainRecipe`), the hash that names the
weights it makes (:func:`recipe_hash`), and its learning-rate schedule (:func:`lr_schedule`).

A leaf: both the pretraining (`clip.py`) and the shipped weights file (`weights.py`, which replays the
schedule) read the recipe from here."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

import numpy as np

from ... import toyworld as tw

RECIPE_VERSION = 1


@dataclass(frozen=True)
class ToyPretrainRecipe:
    steps: int = 700
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: int = 50
    seed: int = 0
    mild_shift_fraction: float = 0.5


def recipe_hash(recipe: ToyPretrainRecipe) -> str:
    payload = json.dumps(
        {
            "recipe": asdict(recipe),
            "version": RECIPE_VERSION,
            "render": tw.RENDER_VERSION,
            "arch": "toy-clip",
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def lr_schedule(recipe: ToyPretrainRecipe):
    """Linear warm-up, then cosine decay (a LambdaLR factor; weights.py replays it)."""
    return lambda s: min(1.0, (s + 1) / recipe.warmup) * 0.5 * (1 + np.cos(np.pi * min(1.0, s / recipe.steps)))

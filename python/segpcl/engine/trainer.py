"""Old import path of the training entry points (kept for users who imported them from here)."""

from .build import build_stream, image_size_guess
from .claim import is_run_dir
from .entry import default_run_dir, run_training
from .loop import make_optimizer, optimizer_step
from .resume import config_differences, defines_run, load_run_config, run_identity
from .run import RunResult

__all__ = [
    "RunResult",
    "build_stream",
    "config_differences",
    "default_run_dir",
    "defines_run",
    "image_size_guess",
    "is_run_dir",
    "load_run_config",
    "make_optimizer",
    "optimizer_step",
    "run_identity",
    "run_training",
]

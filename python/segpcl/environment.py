"""Versions and devices of this process, for `segpcl info`, metrics.json and benchmark results."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def cpu_model() -> str:
    """The processor's model name (Linux /proc/cpuinfo), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    import torch

    from . import __version__
    from .kernels import triton_status

    try:
        from ._core import build_info

        core = build_info()
    except ImportError as exc:  # the package is unusable without it, but `info` should still report
        core = {"error": str(exc)}
    devices = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return {
        "segpcl": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "torchvision": _version("torchvision"),
        "open_clip": _version("open_clip_torch"),
        "peft": _version("peft"),
        "numpy": _version("numpy"),
        "triton": triton_status(),
        "cuda_devices": devices,
        "native_core": core,
    }


def cache_dir() -> Path:
    """The user cache folder of segpcl (toy CLIP weights, rendered toy data): $SEGPCL_CACHE, else
    $XDG_CACHE_HOME/segpcl, else ~/.cache/segpcl."""
    root = os.environ.get("SEGPCL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "segpcl"
    )
    return Path(root)

"""The one place that decides which implementation of a kernel runs: Triton or the pure-torch reference.

Rule (``SEGPCL_KERNELS=auto``, the default): tensors on a CUDA device with a working Triton run the Triton
kernels; everything else (CPU tensors, no Triton, a GPU too old for Triton, the Triton interpreter) runs
the torch reference. ``SEGPCL_KERNELS=torch`` always runs the reference. ``SEGPCL_KERNELS=triton`` always
runs the Triton kernels and raises :class:`~segpcl.errors.ConfigError` where they cannot run; with
``TRITON_INTERPRET=1`` set before anything imports triton, that includes CPU tensors (this is how the CPU
test suite exercises the kernels).

The variable is read at every call, so it can be changed at run time (tests use ``monkeypatch.setenv``).
``TRITON_INTERPRET`` cannot: Triton reads it when a kernel is defined, i.e. when this package's kernel
modules are imported.

This module is a leaf: it imports no kernel module. Each kernel module imports it, and after defining its
``@triton.jit`` kernels tells it so (:func:`note_kernel_defined`); that is how dispatch knows whether the
kernels run in the interpreter.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import torch

from segpcl.errors import ConfigError

ENV_VAR = "SEGPCL_KERNELS"
"""Environment variable that forces a backend: ``torch``, ``triton`` or ``auto`` (default)."""

_MODES = ("auto", "torch", "triton")

# Triton's supported NVIDIA GPUs start at compute capability 7.0 (Volta); ROCm devices report their own.
_MIN_CUDA_CAPABILITY = (7, 0)


def _mode() -> str:
    raw = os.environ.get(ENV_VAR, "").strip().lower()
    mode = raw or "auto"
    if mode not in _MODES:
        raise ConfigError(
            f"{ENV_VAR}={os.environ.get(ENV_VAR)!r} is not a kernel backend; use one of: {', '.join(_MODES)}"
        )
    return mode


@functools.lru_cache(maxsize=1)
def _import_triton() -> tuple[Any, str | None]:
    """``(triton module, None)`` or ``(None, reason)``; never raises, imported once."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as exc:  # ImportError, or a broken install raising anything else
        return None, f"triton is not importable ({type(exc).__name__}: {exc})"
    return triton, None


_kernels_defined_interpreted: bool | None = None
"""Whether the kernels were defined in the interpreter, as told by the kernel modules; None until one has."""

# the values Triton's own parser (getenv_bool, case-insensitive, no stripping) reads as true
_TRUE_VALUES = ("1", "true", "on", "yes", "y")


def note_kernel_defined(kernel: Any) -> None:
    """Called by each kernel module right after it defines a ``@triton.jit`` kernel: records whether
    Triton built it for the interpreter (``TRITON_INTERPRET=1`` at definition) or for compilation."""
    global _kernels_defined_interpreted
    _kernels_defined_interpreted = type(kernel).__name__ == "InterpretedFunction"


def _kernels_interpreted() -> bool:
    """Whether this package's Triton kernels were defined under TRITON_INTERPRET=1 (interpreter mode)."""
    if _import_triton()[0] is None:
        return False
    if _kernels_defined_interpreted is not None:
        return _kernels_defined_interpreted
    # no kernel module defined its kernels yet: they will be defined under the environment as it is now
    return os.environ.get("TRITON_INTERPRET", "").lower() in _TRUE_VALUES


@functools.lru_cache(maxsize=16)
def _cuda_device_reason(index: int | None) -> str | None:
    """None when Triton can compile for this CUDA device, else why not."""
    if not torch.cuda.is_available():
        return "no CUDA device is available to torch"
    try:
        idx = torch.cuda.current_device() if index is None else index
        cap = torch.cuda.get_device_capability(idx)
    except Exception as exc:
        return f"the CUDA device cannot be queried ({type(exc).__name__}: {exc})"
    if torch.version.hip is None and tuple(cap) < _MIN_CUDA_CAPABILITY:
        return f"CUDA device {idx} has compute capability {cap[0]}.{cap[1]}; Triton needs 7.0 or newer"
    return None


def _as_device(device: Any) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device, torch.Tensor):
        return device.device
    return torch.device(device)


def _triton_reason(dev: torch.device) -> str | None:
    """None when compiled (non-interpreted) Triton kernels can run on ``dev``, else why not."""
    _, reason = _import_triton()
    if reason is not None:
        return reason
    if _kernels_interpreted():
        return "TRITON_INTERPRET=1 was set when the kernels were defined (interpreter mode)"
    if dev.type != "cuda":
        return f"tensors are on {dev.type!r}, and compiled Triton kernels run on CUDA devices only"
    return _cuda_device_reason(dev.index)


def backend(device: Any = None) -> str:
    """The backend a kernel call on ``device`` uses: ``"triton"``, ``"triton-interpreter"`` or ``"torch"``.

    ``device`` is a torch device, a device string, or a tensor; ``None`` means the default device (CUDA if
    available, else CPU). Raises :class:`~segpcl.errors.ConfigError` if ``SEGPCL_KERNELS=triton`` and Triton
    cannot run there, or if ``SEGPCL_KERNELS`` has an unknown value.
    """
    mode = _mode()
    if mode == "torch":
        return "torch"
    dev = _as_device(device)
    reason = _triton_reason(dev)
    if mode == "auto":
        return "triton" if reason is None else "torch"
    # mode == "triton": forced.
    if reason is None:
        return "triton"
    if _import_triton()[0] is not None and _kernels_interpreted():
        return "triton-interpreter"
    raise ConfigError(
        f"{ENV_VAR}=triton, but the Triton kernels cannot run here: {reason}. "
        f"Unset {ENV_VAR} (or set it to 'auto' or 'torch') to use the torch reference, run on a CUDA GPU, "
        "or set TRITON_INTERPRET=1 before anything imports triton to run the kernels on the CPU "
        "(slow; for tests)."
    )


def use_triton(*tensors: torch.Tensor) -> bool:
    """True when a kernel call on these tensors must take the Triton path (see :func:`backend`)."""
    dev = tensors[0].device if tensors else None
    return backend(dev) != "torch"


def triton_status() -> dict[str, Any]:
    """A report for ``segpcl info``.

    Keys: ``version`` (triton's version or None), ``importable``, ``cuda`` (compiled kernels can run on the
    default CUDA device), ``interpreter`` (kernels were defined under TRITON_INTERPRET=1), ``mode`` (the value
    of SEGPCL_KERNELS), ``backend`` (what a call on the default device would use, or an ``error: ...`` line),
    ``reason`` (why compiled Triton is unavailable on the default device, or None).
    """
    triton, import_reason = _import_triton()
    version = getattr(triton, "__version__", None) if triton is not None else None
    interpreted = _kernels_interpreted()
    cuda_reason = _cuda_device_reason(None) if import_reason is None else import_reason
    if import_reason is None and cuda_reason is None and interpreted:
        cuda_reason = "TRITON_INTERPRET=1 was set when the kernels were defined (interpreter mode)"
    try:
        mode = _mode()
        chosen = backend(None)
    except ConfigError as exc:
        mode = os.environ.get(ENV_VAR, "")
        chosen = f"error: {exc}"
    return {
        "version": version,
        "importable": triton is not None,
        "cuda": cuda_reason is None,
        "interpreter": interpreted,
        "mode": mode,
        "backend": chosen,
        "reason": cuda_reason,
    }

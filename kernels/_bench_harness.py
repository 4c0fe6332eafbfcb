"""What the kernel benchmarks (bench_pgd_step.py, bench_kl.py, bench_dpgd.py) share: finding segpcl, choosing
the device, timing a call, measuring its peak memory, naming the machine and writing the results CSV.

Imported by the scripts from this folder (``python kernels/bench_*.py`` puts it on sys.path). It imports
torch but never triton, so that a script can still turn the Triton interpreter on before triton loads.
"""

from __future__ import annotations

import csv
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent


def import_path() -> None:
    """Use the installed segpcl, else the source tree beside this folder."""
    try:
        import segpcl  # noqa: F401
    except ImportError:
        sys.path.insert(0, str(HERE.parent / "python"))


def setup_backend(quick: bool) -> str:
    """Returns the device; on a CPU-only --quick run turns the Triton interpreter on before triton loads."""
    if torch.cuda.is_available():
        if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") and not quick:
            sys.exit("TRITON_INTERPRET is set: unset it to measure the compiled kernels")
        return "cuda"
    if not quick:
        sys.exit("no CUDA device: this benchmark measures GPU kernels (use --quick for a CPU smoke test)")
    os.environ["TRITON_INTERPRET"] = "1"
    return "cpu"


def device_name(device: str) -> str:
    """The GPU's name, or the CPU's where the run is a CPU smoke test."""
    return torch.cuda.get_device_name() if device == "cuda" else f"cpu ({platform.processor() or 'unknown'})"


def timer(device: str):
    """``bench(fn, grad_to_none=None) -> ms``: triton.testing.do_bench's median on CUDA, else the median of 3
    wall-clock runs (the gradients of the tensors in ``grad_to_none`` are reset before each run)."""
    if device == "cuda":
        import triton.testing

        return lambda fn, grad_to_none=None: triton.testing.do_bench(
            fn, warmup=25, rep=100, grad_to_none=grad_to_none, return_mode="median"
        )

    def cpu_time(fn, grad_to_none=None):
        runs = []
        for _ in range(3):
            if grad_to_none:
                for t in grad_to_none:
                    t.grad = None
            t0 = time.perf_counter()
            fn()
            runs.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(runs)

    return cpu_time


def warm_gpu(device: str, seconds: float = 1.5) -> None:
    """Bring the GPU clocks up before the first measurement (idle clocks skew the first shapes)."""
    if device != "cuda":
        return
    a = torch.randn(4096, 4096, device=device, dtype=torch.bfloat16)
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(20):
            a @ a
        torch.cuda.synchronize()


def peak_mb(fn, device: str) -> float:
    """Peak CUDA memory (MiB) that one call of ``fn`` allocates above what was allocated before it (NaN off CUDA)."""
    if device != "cuda":
        return float("nan")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak / 2**20


def write_csv(out_dir: Path, name: str, rows: list[dict]) -> Path:
    """Writes ``rows`` (one header, the first row's keys) to ``out_dir/name``, creating the folder; returns the path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / name
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path

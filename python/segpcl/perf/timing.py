"""Timing, FLOP counting and profiling helpers of `segpcl bench overhead` (perf/overhead.py)."""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..environment import cpu_model


@dataclass
class Timer:
    device: torch.device
    samples: dict[str, list[float]] = field(default_factory=dict)

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def time(self, fn: Callable[[], object], n: int = 1) -> float:
        """Seconds per call of fn, over n calls, synchronised at both ends."""
        self.sync()
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        self.sync()
        return (time.perf_counter() - t0) / n

    def record(self, name: str, fn: Callable[[], object]) -> None:
        """Time one call of fn and append it to the samples of `name`."""
        self.samples.setdefault(name, []).append(self.time(fn))

    def interleaved(self, fns: dict[str, Callable[[], object]], repeats: int, warmup: int, n: int = 1) -> None:
        """Run every fn in turn, warm-up rounds first; store seconds per call. The order is reversed every other
        round (A B C, C B A, ...) so that no fn always runs right after the same neighbour."""
        for _ in range(warmup):
            for fn in fns.values():
                fn()
        items = list(fns.items())
        for r in range(repeats):
            for name, fn in items if r % 2 == 0 else items[::-1]:
                self.samples.setdefault(name, []).append(self.time(fn, n))

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratio(self, num: str, den: str) -> float:
        """Median over repeats of the paired ratio num / den."""
        return statistics.median(a / b for a, b in zip(self.samples[num], self.samples[den], strict=True))

    def timed(self, fn: Callable, into: list[float]) -> Callable:
        """fn, recording the seconds of every call into `into` (synchronised at both ends)."""

        def wrapper(*args, **kwargs):
            self.sync()
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self.sync()
            into.append(time.perf_counter() - t0)
            return out

        return wrapper


def stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "all": values}


def machine(device: torch.device) -> dict:
    out = {
        "cpu_model": cpu_model(),
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def count_flops(fn: Callable[[], object]) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def profile_table(fn: Callable[[], object], device: torch.device, rows: int = 12) -> str:
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)

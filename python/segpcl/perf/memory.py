"""Peak memory of one SeGP-CL training step with and without gradient checkpointing (`segpcl bench overhead`).

CUDA: `torch.cuda.max_memory_allocated` over the step, minus what was allocated before it, in this process.
CPU: torch keeps no CPU allocation statistics, so each setting runs in a fresh child process, which builds the
same workload, takes one untimed step (the optimizer's buffers, first-touch pages), then measures the next
step's peak resident set size above the resident size before it (Linux: VmHWM after resetting it through
/proc/self/clear_refs). glibc's mmap threshold is fixed at 64 KiB in the child, so a freed tensor returns its
pages at once instead of staying in the heap, where the next step would reuse them unseen.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..errors import ConfigError
from .config import OverheadConfig

MIB = 2**20


def measure_memory(cfg: OverheadConfig, workload=None) -> dict:
    """{"unit", "how", "without", "with", "ratio"}: the step's peak extra memory, MiB, per setting."""
    if workload is not None and workload.device.type == "cuda":
        peaks = {on: _cuda_step_peak(workload, on) for on in (False, True)}
        workload.model.set_grad_checkpointing(False)
        how = "CUDA max_memory_allocated over one SeGP-CL step, minus the memory allocated before it"
    else:
        if not Path("/proc/self/clear_refs").exists():
            raise ConfigError("peak CPU memory needs Linux (/proc/self/clear_refs); drop --memory")
        peaks = {on: _child_step_peak(cfg, on) for on in (False, True)}
        how = "peak RSS of one SeGP-CL step above the RSS before it, in a fresh process per setting"
    return {
        "unit": "MiB",
        "how": how,
        "without": peaks[False] / MIB,
        "with": peaks[True] / MIB,
        "ratio": peaks[True] / peaks[False] if peaks[False] > 0 else float("nan"),
    }


def _cuda_step_peak(b, checkpointing: bool) -> int:
    b.model.set_grad_checkpointing(checkpointing)
    b.model.train()
    b.train_step(b.seg)  # untimed: the same warm state as the CPU children
    torch.cuda.synchronize(b.device)
    before = torch.cuda.memory_allocated(b.device)
    torch.cuda.reset_peak_memory_stats(b.device)
    b.train_step(b.seg)
    torch.cuda.synchronize(b.device)
    return torch.cuda.max_memory_allocated(b.device) - before


def _child_step_peak(cfg: OverheadConfig, checkpointing: bool) -> int:
    # the step's memory does not depend on the task's length: a short task keeps the child's setup cheap
    small = replace(cfg, images_per_task=min(cfg.images_per_task, cfg.eval_batch_size), profile=False)
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    spec = json.dumps({"cfg": asdict(small), "checkpointing": checkpointing})
    done = subprocess.run(
        [sys.executable, "-m", "segpcl.perf.memory"], input=spec, capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise RuntimeError(f"the memory measurement's child process failed: {done.stderr.strip()[-2000:]}")
    return int(done.stdout.strip().splitlines()[-1])


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _child() -> None:
    """In the child: build the workload, one warm step, then print the next step's peak extra RSS in bytes."""
    from .workload import Workload

    spec = json.loads(sys.stdin.read())
    raw = spec["cfg"]
    cfg = OverheadConfig(
        **{**raw, "sweep_anchors": tuple(raw["sweep_anchors"]), "lora_towers": tuple(raw["lora_towers"])}
    )
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    b = Workload.build(cfg)
    b.model.set_grad_checkpointing(spec["checkpointing"])
    b.model.train()
    b.train_step(b.seg)
    before = _rss_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    b.train_step(b.seg)
    print((_rss_kib("VmHWM") - before) * 1024)


if __name__ == "__main__":
    _child()

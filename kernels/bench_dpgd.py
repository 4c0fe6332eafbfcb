"""Benchmark: whole-DPGD anchors per second, fused path vs a plain eager PGD, on open_clip ViT-B-16.

    python kernels/bench_dpgd.py [--out DIR] [--quick] [--self-test] [--batch B] [--steps K]

Both paths minimise the DPGD objective of DESIGN.md section 4 over a pixel-space delta, for K steps:
    L' = CE(s * cos(f(x + delta), T_old), c*) + lambda_p * (1 - cos(f(x + delta), P_c*))
- eager (the plain baseline): two separate forwards (one per objective), a full backward with the model's
  parameters requiring grad, and the eager sign update (sign, mul, sub, clamp, add, clamp, sub);
- fused: ``segpcl.method.anchors.run_pgd`` (one forward for both objectives, torch.autograd.grad w.r.t.
  delta only, the fused in-place Triton step ``pgd_step_``) on the frozen model.

On CUDA: random-weight ``open_clip.create_model("ViT-B-16", pretrained=None)`` (no download), bf16 autocast,
the median wall time of --reps runs after a warm-up; peak memory from torch.cuda.max_memory_allocated.
Writes DIR/results_dpgd.csv and prints a table.

--self-test runs on the CPU with a tiny CLIP (fp32, the Triton step in the interpreter) and checks that both
paths give anchors of the input's shape, inside the eps ball and the [0, 1] range, and that they agree.
--quick is the benchmark itself at tiny sizes (CPU allowed): a smoke test of the harness.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _bench_harness import HERE, device_name, import_path, write_csv


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="results directory (default: kernels/)")
    ap.add_argument("--quick", action="store_true", help="tiny model and sizes; CPU allowed")
    ap.add_argument("--self-test", action="store_true", help="CPU correctness check of both paths; no CSV")
    ap.add_argument("--model", default="ViT-B-16", help="open_clip architecture (random weights)")
    ap.add_argument("--batch", type=int, default=64, help="anchors per PGD run (seeds)")
    ap.add_argument("--steps", type=int, default=10, help="PGD steps K")
    ap.add_argument("--reps", type=int, default=3, help="timed runs per path (median)")
    ap.add_argument("--old-classes", type=int, default=100, help="number of old classes")
    ap.add_argument("--eps", type=float, default=4 / 255)
    ap.add_argument("--gamma", type=float, default=1 / 255, help="PGD step size")
    ap.add_argument("--lambda-p", type=float, default=1.0, help="weight of the visual-prototype objective")
    return ap.parse_args()


# --------------------------------------------------------------------------------------------------
# the two PGD implementations


def eager_pgd(
    model: torch.nn.Module,
    encode_image: Callable[[torch.Tensor], torch.Tensor],
    x_clean: torch.Tensor,
    targets: torch.Tensor,
    text_old: torch.Tensor,
    protos_old: torch.Tensor,
    logit_scale: float,
    steps: int,
    eps: float,
    gamma: float,
    lambda_p: float,
) -> torch.Tensor:
    """The plain baseline: two forwards, full backward (parameter gradients too), eager sign update."""
    delta = torch.zeros_like(x_clean, requires_grad=True)
    p_target = protos_old[targets]
    for _ in range(steps):
        f_text = F.normalize(encode_image(x_clean + delta).float(), dim=-1)
        loss_text = F.cross_entropy(logit_scale * f_text @ text_old.t(), targets, reduction="sum")
        f_vis = F.normalize(encode_image(x_clean + delta).float(), dim=-1)
        loss_vis = lambda_p * (1.0 - (f_vis * p_target).sum(-1)).sum()
        (loss_text + loss_vis).backward()
        with torch.no_grad():
            new = (delta - gamma * delta.grad.sign()).clamp(-eps, eps)
            delta.copy_((x_clean + new).clamp(0.0, 1.0) - x_clean)
        delta.grad = None
        model.zero_grad(set_to_none=True)
    return delta.detach()


def _call_fused(run_pgd, autocast, *args, **kwargs) -> torch.Tensor:
    """run_pgd with bf16 autocast around the forward: through its ``autocast`` argument where it has one."""
    if "autocast" in inspect.signature(run_pgd).parameters:
        return run_pgd(*args, autocast=autocast, **kwargs)
    with autocast():
        return run_pgd(*args, **kwargs)


# --------------------------------------------------------------------------------------------------
# problem setup


def _tiny_clip():
    import open_clip

    return open_clip.CLIP(
        embed_dim=32,
        vision_cfg={"image_size": 32, "patch_size": 8, "width": 64, "layers": 2, "head_width": 32},
        text_cfg={"context_length": 16, "vocab_size": 512, "width": 64, "heads": 2, "layers": 1},
    )


def _problem(model, batch: int, old_classes: int, device: str, seed: int = 0):
    import open_clip

    size = model.visual.image_size
    size = size if isinstance(size, (tuple, list)) else (size, size)
    mean = torch.tensor(open_clip.OPENAI_DATASET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(open_clip.OPENAI_DATASET_STD, device=device).view(1, 3, 1, 1)

    def encode_image(x: torch.Tensor) -> torch.Tensor:  # pixels in [0, 1] -> L2-normalised features
        return F.normalize(model.encode_image((x - mean) / std), dim=-1)

    gen = torch.Generator(device=device).manual_seed(seed)
    x_clean = torch.rand(batch, 3, *size, device=device, generator=gen)
    with torch.no_grad():
        dim = model.encode_image(x_clean[:1]).shape[-1]
    text_old = F.normalize(torch.randn(old_classes, dim, device=device, generator=gen), dim=-1)
    protos_old = F.normalize(torch.randn(old_classes, dim, device=device, generator=gen), dim=-1)
    targets = torch.randint(0, old_classes, (batch,), device=device, generator=gen)
    logit_scale = float(model.logit_scale.detach().exp())
    return encode_image, x_clean, targets, text_old, protos_old, logit_scale


def _measure(fn: Callable[[], torch.Tensor], device: str, reps: int) -> tuple[float, float, torch.Tensor]:
    """(median seconds, peak MB above the start, last output) over ``reps`` runs after one warm-up."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out = fn()
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20 if device == "cuda" else float("nan")
    return statistics.median(times), peak, out


# --------------------------------------------------------------------------------------------------


def _self_test(args) -> int:
    os.environ["TRITON_INTERPRET"] = "1"  # before open_clip (which imports triton) and segpcl
    os.environ.setdefault("SEGPCL_KERNELS", "triton")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import_path()
    torch.manual_seed(0)
    model = _tiny_clip().eval()
    encode_image, x, targets, text_old, protos_old, scale = _problem(model, 4, 5, "cpu")
    common = dict(steps=3, eps=8 / 255, gamma=2 / 255, lambda_p=0.5)
    from segpcl.method.anchors import run_pgd

    model.requires_grad_(True)
    d_eager = eager_pgd(model, encode_image, x, targets, text_old, protos_old, scale, **common)
    model.requires_grad_(False)
    d_fused = run_pgd(encode_image, x, targets, text_old, protos_old, scale, **common)
    # early stop: a margin below any reachable one freezes every sample before its first step
    d_stop = run_pgd(encode_image, x, targets, text_old, protos_old, scale, early_stop_margin=-1e9, **common)

    failures = []
    for name, d in (("eager", d_eager), ("fused", d_fused)):
        if d.shape != x.shape:
            failures.append(f"{name}: anchors have shape {tuple(d.shape)}, expected {tuple(x.shape)}")
        if d.abs().max() > common["eps"] + 1e-6:
            failures.append(f"{name}: |delta| = {d.abs().max().item():.4g} exceeds eps")
        anchors = x + d
        if anchors.min() < -1e-6 or anchors.max() > 1 + 1e-6:
            failures.append(f"{name}: anchors leave the [0, 1] pixel range")
        if d.abs().max() == 0:
            failures.append(f"{name}: delta stayed zero")
    agree = (d_eager - d_fused).abs().le(1e-5).float().mean().item()
    if agree < 0.9:
        failures.append(f"eager and fused anchors agree on only {agree:.1%} of pixels (expected >= 90%)")
    if d_stop.abs().max() != 0:
        failures.append("early_stop_margin=-1e9 must freeze every sample before its first step")
    print(
        f"self-test: fused = segpcl.method.anchors.run_pgd; anchors {tuple(d_fused.shape)}; "
        f"eager/fused agreement {agree:.1%}"
    )
    for f in failures:
        print(f"FAIL {f}")
    print("self-test " + ("FAILED" if failures else "passed"))
    return 1 if failures else 0


def main() -> int:
    args = _parse()
    if args.self_test:
        return _self_test(args)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        if not args.quick:
            sys.exit("no CUDA device: this benchmark measures GPU work (use --quick or --self-test on a CPU)")
        os.environ["TRITON_INTERPRET"] = "1"
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import_path()
    import open_clip
    import triton

    torch.manual_seed(0)
    if args.quick:
        model, name = _tiny_clip(), "tiny CLIP (self-built)"
        batch, steps, reps = 4, 2, 1
    else:
        model, name = open_clip.create_model(args.model, pretrained=None), f"{args.model} (random weights)"
        batch, steps, reps = args.batch, args.steps, args.reps
    model = model.to(device).eval()
    problem = _problem(model, batch, args.old_classes, device)
    encode_image, x, targets, text_old, protos_old, scale = problem
    common = dict(steps=steps, eps=args.eps, gamma=args.gamma, lambda_p=args.lambda_p)
    from segpcl.method.anchors import run_pgd

    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if device == "cuda" else contextlib.nullcontext

    def run_eager():
        model.requires_grad_(True)
        with autocast():
            return eager_pgd(model, encode_image, x, targets, text_old, protos_old, scale, **common)

    def run_fused():
        model.requires_grad_(False)  # the teacher is frozen; gradients go to delta only
        return _call_fused(run_pgd, autocast, encode_image, x, targets, text_old, protos_old, scale, **common)

    t_eager, mb_eager, d_eager = _measure(run_eager, device, reps)
    t_fused, mb_fused, d_fused = _measure(run_fused, device, reps)
    if d_fused.shape != x.shape or d_eager.shape != x.shape:
        sys.exit(f"anchors have the wrong shape: eager {tuple(d_eager.shape)}, fused {tuple(d_fused.shape)}")

    gpu = device_name(device)
    row = {
        "gpu": gpu,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "open_clip": open_clip.__version__,
        "model": name,
        "autocast": "bf16" if device == "cuda" else "none (fp32)",
        "batch": batch,
        "steps": steps,
        "image_size": "x".join(map(str, x.shape[-2:])),
        "eager_s": round(t_eager, 5),
        "fused_s": round(t_fused, 5),
        "eager_anchors_per_s": round(batch / t_eager, 2),
        "fused_anchors_per_s": round(batch / t_fused, 2),
        "speedup": round(t_eager / t_fused, 3),
        "eager_peak_mb": round(mb_eager, 1),
        "fused_peak_mb": round(mb_fused, 1),
    }
    path = write_csv(args.out, "results_dpgd.csv", [row])
    print(f"DPGD anchors, {gpu}, torch {row['torch']}, triton {row['triton']}, open_clip {row['open_clip']}")
    print(f"model {name}, batch {batch}, {steps} steps, autocast {row['autocast']}")
    print(f"{'path':>6} {'s/run':>9} {'anchors/s':>10} {'peak MB':>9}")
    print(f"{'eager':>6} {t_eager:>9.4f} {row['eager_anchors_per_s']:>10.1f} {mb_eager:>9.1f}")
    print(f"{'fused':>6} {t_fused:>9.4f} {row['fused_anchors_per_s']:>10.1f} {mb_fused:>9.1f}")
    print(f"speedup {row['speedup']:.2f}x; wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

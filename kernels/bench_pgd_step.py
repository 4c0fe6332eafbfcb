"""Benchmark: fused PGD step (Triton) vs the eager torch sequence on image batches [B, 3, 224, 224].

    python kernels/bench_pgd_step.py [--out DIR] [--quick] [--strict]

Eager = (delta - step * grad.sign()).clamp(-eps, eps), then (x + delta).clamp(0, 1) - x: seven kernels
(sign, mul, sub, clamp, add, clamp, sub). Fused = segpcl's one-pass kernel, out of place (pgd_step) and in
place (pgd_step_, what the PGD loop uses). Times are medians of triton.testing.do_bench on CUDA after a GPU
warm-up, the best of --rounds interleaved rounds; peak memory is torch.cuda.max_memory_allocated above the
inputs around one call. Writes DIR/results_pgd_step.csv
(default: this folder) and prints a table. Targets: fused >= 2x eager, fused peak memory <= eager;
--strict exits with status 3 when a target is missed.

--quick runs tiny shapes; without CUDA it runs the kernel in the Triton interpreter (a smoke test of the
harness, not a measurement).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from _bench_harness import HERE, device_name, import_path, peak_mb, setup_backend, timer, warm_gpu, write_csv

TARGET = "fused (out of place and in place) >= 2x eager speed and fused peak memory <= eager"
EPS, STEP = 4 / 255, 1 / 255


def _parse() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE, help="results directory (default: kernels/)")
    ap.add_argument("--quick", action="store_true", help="tiny shapes; CPU allowed (Triton interpreter)")
    ap.add_argument("--strict", action="store_true", help="exit 3 if a performance target is missed")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved timing rounds (best median kept)")
    return ap.parse_args()


def eager_step(x, delta, grad, eps=EPS, step=STEP):
    """The plain torch sequence the fused kernel replaces."""
    new = (delta - step * grad.sign()).clamp(-eps, eps)
    return (x + new).clamp(0.0, 1.0) - x


def main() -> int:
    args = _parse()
    device = setup_backend(args.quick)
    import_path()
    import importlib

    import triton

    P = importlib.import_module("segpcl.kernels.pgd_step")
    bench = timer(device)
    batches, hw = ((2, 4), 32) if args.quick else ((32, 64, 128), 224)
    dtypes = [torch.float32, torch.bfloat16]

    gpu = device_name(device)
    meta = {"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__}
    rows = []
    gen = torch.Generator(device=device).manual_seed(0)
    rounds = 1 if args.quick else max(1, args.rounds)
    warm_gpu(device)
    for dtype in dtypes:
        for b in batches:
            shape = (b, 3, hw, hw)
            x = torch.rand(shape, device=device, generator=gen).to(dtype)
            delta = ((torch.rand(shape, device=device, generator=gen) * 2 - 1) * EPS).to(dtype)
            grad = torch.randn(shape, device=device, generator=gen).to(dtype)
            # correctness first
            ref = P.pgd_step_reference(x, delta, grad, EPS, STEP)
            # compiled: bit-exact; the interpreter rounds fp32 -> bf16 towards zero (one ulp)
            exact = device == "cuda" or dtype == torch.float32
            tol = {"rtol": 0.0, "atol": 1e-7 if device != "cuda" else 0.0} if exact else {"rtol": 2**-7, "atol": 1e-6}
            got = P.pgd_step_triton(x, delta, grad, EPS, STEP)
            torch.testing.assert_close(got.float(), ref.float(), **tol)

            work = delta.clone()
            variants = {
                "eager": lambda x=x, d=delta, g=grad: eager_step(x, d, g),
                "fused": lambda x=x, d=delta, g=grad: P.pgd_step_triton(x, d, g, EPS, STEP),
                "fused_inplace": lambda x=x, d=work, g=grad: P.pgd_step_triton_(x, d, g, EPS, STEP),
            }
            times = {name: [] for name in variants}
            for _ in range(rounds):  # interleaved, so that drifts hit all variants alike
                for name, fn in variants.items():
                    times[name].append(bench(fn))
            res = {name: (min(times[name]), peak_mb(fn, device)) for name, fn in variants.items()}
            nbytes = x.numel() * x.element_size()
            for name in ("fused", "fused_inplace"):
                ms, mb = res[name]
                rows.append(
                    {
                        **meta,
                        "dtype": str(dtype).replace("torch.", ""),
                        "B": b,
                        "shape": "x".join(map(str, shape)),
                        "variant": name,
                        "eager_ms": round(res["eager"][0], 5),
                        "fused_ms": round(ms, 5),
                        "speedup": round(res["eager"][0] / ms, 3),
                        # bytes the fused kernel must move: read x, delta, grad; write delta
                        "fused_GBps": round(4 * nbytes / (ms * 1e-3) / 1e9, 1),
                        "eager_peak_mb": round(res["eager"][1], 3),
                        "fused_peak_mb": round(mb, 3),
                    }
                )

    path = write_csv(args.out, "results_pgd_step.csv", rows)

    print(f"PGD step, {gpu}, torch {meta['torch']}, triton {meta['triton']}")
    print(
        f"{'dtype':>8} {'B':>4} {'variant':>14} {'eager ms':>9} {'fused ms':>9} {'speedup':>8} {'GB/s':>7} "
        f"{'eager MB':>9} {'fused MB':>9}"
    )
    for r in rows:
        print(
            f"{r['dtype']:>8} {r['B']:>4} {r['variant']:>14} {r['eager_ms']:>9.4f} {r['fused_ms']:>9.4f} "
            f"{r['speedup']:>8.2f} {r['fused_GBps']:>7.0f} {r['eager_peak_mb']:>9.1f} "
            f"{r['fused_peak_mb']:>9.1f}"
        )
    print(f"wrote {path}")

    missed = [r for r in rows if r["speedup"] < 2.0 or r["fused_peak_mb"] > r["eager_peak_mb"]]
    if device == "cuda":
        print(f"target: {TARGET}: " + ("met" if not missed else f"MISSED at {len(missed)} row(s)"))
        for r in missed:
            print(f"  missed: {r['dtype']} B={r['B']} {r['variant']} speedup {r['speedup']}")
    return 3 if (args.strict and missed and device == "cuda") else 0


if __name__ == "__main__":
    sys.exit(main())

"""Rust core vs numpy: `select_key_edges` and Gaussian prototype migration, in one process.

Each case times the native call and an honest, vectorised numpy reference of the same computation
(no Python loops), takes the median of repeats after a warm-up, and prints ratio = numpy / rust
(> 1: Rust is faster). Results go to kernels/results_core.txt with the machine and versions.

    python kernels/bench_core.py [--repeats 30] [--out kernels/results_core.txt]

The numpy references are the fastest numpy formulations we know:
- key edges: symmetrise, `argpartition` per row (which ignores the lower-index tie rule, so it only
  does less work than the Rust), a boolean adjacency matrix, `nonzero` of its upper triangle;
- migration: matrix-form distances `||P||^2 + ||b||^2 - 2 P b^T` (one float32 GEMM), max-subtracted
  softmax in float32, and the weighted drift as a second float32 GEMM. The Rust computes the same
  two float32 products and does the weights in float64.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from segpcl import _core


def numpy_key_edges(sim: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k-nearest key edges in numpy (argpartition: exact for distinct similarities)."""
    s = ((sim.astype(np.float64) + sim.T) * 0.5).astype(np.float32)
    c = s.shape[0]
    masked = s.copy()
    np.fill_diagonal(masked, -np.inf)
    kk = min(k, c - 1)
    nbr = np.argpartition(-masked, kk - 1, axis=1)[:, :kk]
    adj = np.zeros((c, c), dtype=bool)
    adj[np.repeat(np.arange(c), kk), nbr.ravel()] = True
    adj |= adj.T
    i, j = np.nonzero(np.triu(adj, 1))
    return np.stack([i, j], axis=1), s[i, j]


def numpy_migrate(protos: np.ndarray, before: np.ndarray, after: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian-weighted mean drift per prototype, matrix form, float32 products."""
    d2 = (protos * protos).sum(1)[:, None] + (before * before).sum(1)[None, :] - 2.0 * (protos @ before.T)
    lw = -np.maximum(d2, 0.0) / np.float32(2.0 * sigma * sigma)
    lw -= lw.max(axis=1, keepdims=True)
    w = np.exp(lw)
    w /= w.sum(axis=1, keepdims=True)
    return w @ (after - before)


def median_times(numpy_fn, rust_fn, repeats: int) -> tuple[float, float]:
    """Median seconds of each, the two calls interleaved so that load changes hit both alike."""
    numpy_fn(), rust_fn()  # warm-up
    t_np, t_rs = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        numpy_fn()
        t1 = time.perf_counter()
        rust_fn()
        t2 = time.perf_counter()
        t_np.append(t1 - t0)
        t_rs.append(t2 - t1)
    return statistics.median(t_np), statistics.median(t_rs)


def machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical cores"


def run_cases(repeats: int) -> list[tuple[str, float, float]]:
    """Time every case in this process; returns (case, numpy seconds, rust seconds)."""
    rng = np.random.default_rng(0)
    rows = []
    for c in (100, 300, 1000):
        x = rng.standard_normal((c, 64)).astype(np.float32)
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        sim = x @ x.T
        for k in (5, 10):
            edges, weights = _core.select_key_edges(sim, k)
            ref_edges, ref_weights = numpy_key_edges(sim, k)
            assert np.array_equal(edges, ref_edges) and np.array_equal(weights, ref_weights)
            t_np, t_rs = median_times(
                lambda sim=sim, k=k: numpy_key_edges(sim, k),
                lambda sim=sim, k=k: _core.select_key_edges(sim, k),
                repeats,
            )
            rows.append((f"select_key_edges C={c} k={k}", t_np, t_rs))

    a, c, dim, sigma = 1000, 300, 768, 0.5
    before = rng.standard_normal((a, dim)).astype(np.float32)
    before /= np.linalg.norm(before, axis=1, keepdims=True)
    after = before + 0.05 * rng.standard_normal((a, dim)).astype(np.float32)
    protos = rng.standard_normal((c, dim)).astype(np.float32)
    protos /= np.linalg.norm(protos, axis=1, keepdims=True)
    bank = _core.PrototypeBank(dim)
    ids = np.arange(c, dtype=np.int64)

    bank.set_means(ids, protos)
    err = float(np.abs(bank.migrate(before, after, sigma) - numpy_migrate(protos, before, after, sigma)).max())
    assert err < 1e-5, err
    # Timed calls keep moving the bank's prototypes a little; the work per call does not change.
    t_np, t_rs = median_times(
        lambda: numpy_migrate(protos, before, after, sigma),
        lambda: bank.migrate(before, after, sigma),
        repeats,
    )
    rows.append((f"migrate gaussian A={a} C={c} dim={dim}", t_np, t_rs))
    return rows


SINGLE_THREAD_ENV = {
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "SEGPCL_NUM_THREADS": "1",
}


def table(title: str, rows: list[tuple[str, float, float]]) -> list[str]:
    lines = [title, f"{'case':<42} {'numpy ms':>10} {'rust ms':>10} {'ratio':>7}"]
    for name, t_np, t_rs in rows:
        lines.append(f"{name:<42} {t_np * 1e3:>10.3f} {t_rs * 1e3:>10.3f} {t_np / t_rs:>7.2f}")
    return lines + [""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(__file__).with_name("results_core.txt"))
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # the single-thread run: print rows as JSON for the parent
        print(json.dumps(run_cases(args.repeats)))
        return

    threads = os.environ.get("SEGPCL_NUM_THREADS") or str(os.cpu_count())
    rows = run_cases(args.repeats)
    child = subprocess.run(
        [sys.executable, __file__, "--child", "--repeats", str(args.repeats)],
        env={**os.environ, **SINGLE_THREAD_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    single = [tuple(row) for row in json.loads(child.stdout)]

    info = _core.build_info()
    lines = [
        f"segpcl native core vs numpy: median of {args.repeats} interleaved repeats, "
        "ratio = numpy / rust (> 1: rust faster)",
        f"machine: {machine()}; load average at start {os.getloadavg()[0]:.2f}",
        f"python {platform.python_version()}, numpy {np.__version__} ({blas_name()}), "
        f"segpcl._core {info['version']} ({info['profile']})",
        "",
        *table(f"default threads (numpy BLAS: its default; rust: {threads} workers)", rows),
        *table("single thread (OPENBLAS/OMP/MKL_NUM_THREADS=1, SEGPCL_NUM_THREADS=1)", single),
    ]
    text = "\n".join(lines)
    sys.stdout.write(text)
    args.out.write_text(text)


def blas_name() -> str:
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas['name']} {blas['version']}"
    except Exception:  # numpy < 1.26 or an unusual build: not worth failing the benchmark
        return "blas unknown"


if __name__ == "__main__":
    main()

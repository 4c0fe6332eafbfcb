#!/usr/bin/env bash
# Runs the Triton kernel benchmarks on a CUDA GPU and writes their CSVs into a results directory.
#   kernels/run_gpu_benchmarks.sh RESULTS_DIR
# Takes about 2 minutes on an H200 (PGD step ~20 s, KL ~60 s, DPGD on ViT-B-16 ~30 s, plus start-up).
# Exits non-zero as soon as one benchmark fails. PYTHON selects the interpreter (default: python3).
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 RESULTS_DIR" >&2
  exit 2
fi
out="$1"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
py="${PYTHON:-python3}"
mkdir -p "$out"

if ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "run_gpu_benchmarks.sh: no CUDA device visible to $py" >&2
  exit 1
fi
if [ -n "${TRITON_INTERPRET:-}" ] && [ "${TRITON_INTERPRET}" != "0" ]; then
  echo "run_gpu_benchmarks.sh: unset TRITON_INTERPRET to measure the compiled kernels" >&2
  exit 1
fi
# the installed segpcl if there is one, else the source tree beside this folder
if ! "$py" -c "import segpcl" 2>/dev/null; then
  export PYTHONPATH="$here/../python${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1

"$py" "$here/bench_pgd_step.py" --out "$out"
"$py" "$here/bench_kl.py" --out "$out"
"$py" "$here/bench_dpgd.py" --out "$out"
echo "results in $out"

#!/usr/bin/env bash
# Every GPU check in one run, for a CUDA machine that has torch and triton:
#   benchmarks/gpu_checks.sh RESULTS_DIR
# Installs wheels carried in .whl/ (open_clip, ftfy, wcwidth, peft) when present, runs the overhead benchmark
# (ViT-L/14, ViT-B/16; benchmarks/run_overhead_gpu.sh) and the tests marked `gpu`. The native core must be
# built into python/segpcl/ (maturin develop, or the abi3 .so copied there).
set -uo pipefail
out=${1:?usage: $0 RESULTS_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD/python:$PYTHONPATH" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 -m segpcl.cli info >"$out/info.txt" 2>&1
cat "$out/info.txt"
PYTHON=python3 bash benchmarks/run_overhead_gpu.sh "$out"
status=$?
timeout 90 python3 -m pytest -q -p no:cacheprovider -m gpu tests >"$out/gpu_tests.txt" 2>&1
echo "== gpu tests: rc=$?"
tail -n 15 "$out/gpu_tests.txt"
exit $status

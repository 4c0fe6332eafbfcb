#!/usr/bin/env bash
# GPU numbers of `segpcl bench overhead` for benchmarks/README.md: ViT-L/14 and ViT-B/16, random weights
# (costs only), CUDA, bf16 autocast, the method's default anchors per step plus a sweep.
#
#   benchmarks/run_overhead_gpu.sh RESULTS_DIR
#
# Writes RESULTS_DIR/<name>.json (the --json result) and <name>.txt (the printed report) per run. About 2.5 to 3
# minutes on one H200 (ViT-L/14 random init takes some seconds on the CPU). PYTHON selects the interpreter
# (default: python); the source tree's python/ is put first on PYTHONPATH, so the built native core must be in
# python/segpcl/ (or segpcl installed in that interpreter).
set -uo pipefail

out=${1:?usage: $0 RESULTS_DIR}
mkdir -p "$out"
out=$(cd "$out" && pwd)
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || true
common=(bench overhead --device cuda --precision bf16 --repeats 6 --warmup 2 --anchor-repeats 1)
status=0

run() {  # run NAME TIMEOUT_S ARGS...
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$PY" -m segpcl.cli "${common[@]}" "$@" --json "$out/$name.json" >"$out/$name.txt" 2>&1
    local rc=$?
    echo "== $name: rc=$rc, $((SECONDS - t0)) s"
    grep -E "^(training step|  \(FLOPs|whole task|inference per image|DPGD anchors|extra inference|dual-path head|  text tower|  why|  one anchor|  measured step)" "$out/$name.txt" | cut -c1-400
    [ "$rc" -eq 0 ] || { tail -n 20 "$out/$name.txt"; status=1; }
}

# the paper's model first (OpenAI's ViT-L/14 is the QuickGELU variant; costs equal ViT-L-14 up to the activation)
run gpu_vitl14 150 --model ViT-L-14-quickgelu --sweep-anchors 8,16,64 --profile
run gpu_vitb16 60 --model ViT-B-16 --sweep-anchors 8,16,64
# text tower frozen (visual-only LoRA): no text forward per step, TSGR off, the ratio is the image tower's (B+A)/B
run gpu_vitl14_visual 60 --model ViT-L-14-quickgelu --lora-towers visual --sweep-anchors 8,16
exit $status

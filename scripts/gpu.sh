#!/usr/bin/env bash
# Everything that needs an NVIDIA GPU, as one prepared run that ends inside ten minutes:
# the machine, the GPU tests (cuda == ref for every zoo cell, cuDNN cross-checks) and the GPU
# benchmark, each log also written under $OUT (default ./gpu-out).
#
#   bash scripts/gpu.sh                      # python3 must have numpy, sympy, llvmlite,
#   PYTHON=.venv/bin/python bash scripts/gpu.sh   # networkx, pytest, cupy and CUDA torch
#
# graphrnn is run from this checkout (PYTHONPATH), not installed: a machine that can reach no
# package index runs it as it is. TOTAL_S (default 540) bounds the whole run in seconds: the
# tests get at most TEST_S of it, the benchmark the rest, starting no new row in its last
# ROW_S seconds (one row with torch.compile at the largest size) and writing each row as it goes.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader \
    || echo "nvidia-smi: no GPU here"
  "$PY" -c 'import sys, numpy; print("python", sys.version.split()[0], "numpy", numpy.__version__)'
  "$PY" -c 'import cupy; print("cupy", cupy.__version__, "devices",
            cupy.cuda.runtime.getDeviceCount())' || echo "cupy: unusable"
  "$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available())' \
    || echo "torch: missing"
} 2>&1 | tee "$OUT/env.txt"

echo "== GPU tests (pytest -m gpu)" | tee "$OUT/tests.txt"
timeout "${TEST_S:-200}" "$PY" -m pytest -q -p no:cacheprovider -m gpu -rs \
  tests/test_cuda_gpu.py 2>&1 | tee -a "$OUT/tests.txt"
tests_rc=${PIPESTATUS[0]}

left=$(( ${TOTAL_S:-540} - SECONDS ))
budget=$(( left - ${ROW_S:-90} > 30 ? left - ${ROW_S:-90} : 30 ))
echo "== GPU benchmark ($left s left; no new row after $budget s)" | tee "$OUT/bench.txt"
timeout "$left" "$PY" benchmarks/bench_gpu.py --reps "${REPS:-10}" --budget "$budget" \
  --json "$OUT/bench_gpu.json" 2>&1 | tee -a "$OUT/bench.txt"
bench_rc=${PIPESTATUS[0]}

echo "gpu.sh: tests exit $tests_rc, benchmark exit $bench_rc (124: cut by its time limit)" \
  | tee -a "$OUT/env.txt"
[ "$tests_rc" = 0 ] && [ "$bench_rc" = 0 ]

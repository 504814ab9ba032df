#!/usr/bin/env bash
# One GPU check for a machine with a CUDA GPU and no weights (about 8 minutes on a current data-centre GPU):
#   1. the tests marked `gpu` (tests/test_gpu.py): CUDA fp32 = CPU fp32 on tiny-sd for every method, fp16 and bf16
#      finite, batch = singles on CUDA, CUDA-event timing = wall time;
#   2. `make bench` on model=sd14-random (SD-1.4's architecture with random weights: SD-1.4's cost, no download) in
#      fp16 at B = 1 and 8, eager and with torch.compile; each writes results/bench/cuda-<gpu>-sd14-random-*.md/.csv;
#   3. `make bench` on model=sd3-random (SD3-medium's transformer and CLIP encoders, random) in bf16 at B = 1 and 4:
#      the flow rows (VAE only, Euler, DDIM, fixed-point, EasyInv) → results/bench/cuda-<gpu>-sd3-random-*.
# Commit what it writes. Usage: bash scripts/gpu_check.sh [--dry-run]   (--dry-run prints the commands only)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
IMAGES=${IMAGES:-8}
COMPILE=${COMPILE:-default}
DRY=0
case "${1:-}" in
  --dry-run) DRY=1 ;;
  "") ;;
  *) echo "usage: bash scripts/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1

run() {
  echo "+ $*"
  if [[ $DRY == 0 ]]; then "$@"; fi
}

if [[ $DRY == 0 ]]; then
  test -x "$PY" || { echo "gpu_check: $PY not found; run 'make setup' first" >&2; exit 2; }
  "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
    || { echo "gpu_check: no CUDA device visible to torch; nothing to check" >&2; exit 2; }
  "$PY" -c 'import torch; p = torch.cuda.get_device_properties(0); print(f"gpu_check: {p.name}, {p.total_memory / 2**30:.0f} GiB, torch {torch.__version__}")'
fi
BENCH=(scripts/bench.py model=sd14-random precision=fp16 device=cuda --batch-sizes 1 8 --images "$IMAGES")
run "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
run "$PY" "${BENCH[@]}"
run "$PY" "${BENCH[@]}" "model.compile=$COMPILE" --no-table2 --no-renoise-split
run "$PY" scripts/bench.py model=sd3-random precision=bf16 device=cuda --batch-sizes 1 4 --images "$IMAGES" --no-table2
echo "gpu_check: done; results/bench/ holds the tables"

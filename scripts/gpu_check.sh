#!/usr/bin/env bash
# The prepared GPU check, run in one call on a lent CUDA machine (no package index there: it uses the machine's
# own torch/numpy/scipy and the embedded dataset cached in .devcache/, copied from ~/.cache/backfill beforehand).
# Benchmarks the working model's and the plan's full profiles (training throughput per phase, projected
# curriculum time, a 1000-sample 1-year backfill) and times two real full-size epochs of phase 1.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD/lib BACKFILL_CACHE=${BACKFILL_CACHE:-$PWD/.devcache} BACKFILL_BATCH=1 PYTHONUNBUFFERED=1
out=${OUT:-runs/gpu_check}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
python3 -m backfill bench --params params/full_working.yaml --out "$out/bench_full_working.json" --epochs 2
python3 -m backfill bench --params params/full.yaml --out "$out/bench_full.json"

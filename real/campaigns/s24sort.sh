#!/usr/bin/env bash
# The sort cliffs of real/'s MoE layer, measured per call (session s24sort, issue 13; docs/notes/s24sort_rule.md).
# Why: the twin now prices each forward argsort on torch's threshold (Sort.h, <= 4,096: in-place sort) with its own
# count and the backward's index_put_ sorts on cub's single tile (2,304 int64 pairs, read from cub's policy, not
# measured); no committed kernel record holds a sort at or below 4,096. This sweep gives, per call of
# torch.argsort(stable=True) and of index_put_(accumulate=True) at 1,024-8,192 elements: kernels launched (radix,
# memsets, memcpys), GPU seconds back to back, host seconds from an idle device (real/bench/sort_sweep.py).
# Nothing is judged on it here: it checks CUB_SINGLE_TILE_ITEMS and SMALL_SORT_KERNELS (3 assumed; Sort.cpp reads 4).
# One part, one GPU (the first of CUDA_VISIBLE_DEVICES), <= 40 s wall; no GPU: exits 0 having run nothing.
# Outputs OUTDIR/s24sort/: sort_sweep.csv (every row: GPU name, clocks, torch/CUDA/NCCL versions, time),
# env_sort_sweep.json, gpu.txt (nvidia-smi name, power limit, clocks), log.txt.
#   bash real/campaigns/s24sort.sh OUTDIR   (S24SORT_QUICK=1: three sizes on the CPU, a dry run)
set -u
OUT="${1:?usage: real/campaigns/s24sort.sh OUTDIR}/s24sort"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
WALL_S=40
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
if [ "${S24SORT_QUICK:-0}" = "1" ]; then
  QUICK=(--quick)
  NGPU=1
fi
{
  echo "s24sort campaign $(date -u +%FT%TZ), $NGPU GPU(s)"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,clocks.sm --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$WALL_S" "$PY" -m real.bench.sort_sweep --out "$OUT" ${QUICK[@]+"${QUICK[@]}"}
  echo "sort_sweep exit $? at $(date -u +%FT%TZ)"
  echo "s24sort done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

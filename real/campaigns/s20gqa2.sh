#!/usr/bin/env bash
# A pre-registered prediction of GQA prefill and decode on the real/ path (session s20gqa2). Why:
# issue 13's one-GPU targets (held-out median <= 5%, P90 <= 10%) cover the model.csv prefill and
# decode rows, and every serve record so far is an MLA model (real/ had no GQA KV cache before
# s20gqa2). This times real/'s serving (section serve, real/bench/whole_model.py bench_serve: BF16
# prefill of a batch of 1024-token prompts, then decode steps over the GQA cache of K and V per kv
# head, 32 generated) on s20gqa's slices of the released models' own attention: mixtral-slice
# (32 heads, 8 kv heads of 128, 8 x 14336 top-2) and qwen3moe-slice (32 heads, 4 kv heads of 128,
# QK norm, 128 x 768 top-8); prefill batches 1,4,16, decode batches 1,8,32,128 (s20new2's cases).
# The twin's predictions of these rows were committed before this ran
# (calibration/measurements/prereg/s20gqa2_predictions.csv); the records are compared with them
# (calibration/prereg.py --registration s20gqa2) and fitted to nothing.
# One GPU (the first of CUDA_VISIBLE_DEVICES); no GPU: exits 0 having run nothing. Budget <= 60 s
# wall (model builds included; the bench's deadline stops it early, rows written as they go).
# Outputs OUTDIR/s20gqa2/: model.csv (benches prefill and decode; GPU name, clocks, torch/CUDA
# versions in every row), env.json, gpu.txt, log.txt.
#   bash real/campaigns/s20gqa2.sh OUTDIR   (S20GQA2_QUICK=1: the tiny GQA model on the CPU, a dry
#   run; S20GQA2_QUICK_GPUS=0: the dry run as a host without a GPU; S20GQA2_CASES overrides the cases)
set -u
OUT="${1:?usage: real/campaigns/s20gqa2.sh OUTDIR}/s20gqa2"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
CASES="mixtral-slice:1024:32:1,4,16:1,8,32,128;qwen3moe-slice:1024:32:1,4,16:1,8,32,128"
WALL_S=60
if [ "${S20GQA2_QUICK:-0}" = "1" ]; then
  QUICK=(--quick)
  CASES="tiny-gqa:16:8:2:2"
  WALL_S=40
fi
CASES=${S20GQA2_CASES:-$CASES}
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S20GQA2_QUICK:-0}" = "1" ] && NGPU=${S20GQA2_QUICK_GPUS:-1}   # the CPU dry run
{
  echo "s20gqa2 campaign $(date -u +%FT%TZ), $NGPU GPU(s), cases $CASES"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  CUDA_VISIBLE_DEVICES=$ONE_GPU REAL_BENCH_SERVE_CASES="$CASES" \
    timeout -k 5 "$WALL_S" "$PY" -m real.bench --out "$OUT" --only serve --budget-s $((WALL_S - 12)) ${QUICK[@]+"${QUICK[@]}"}
  echo "serve exit $? at $(date -u +%FT%TZ)"
  echo "s20gqa2 done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

#!/usr/bin/env bash
# A pre-registered prediction of whole training steps of Mixtral and Qwen3-MoE slices with their own
# grouped-query attention (session s20gqa). Why: s20new met issue 13's train_step target on these
# families' MoE shapes with MLA attention; the released models run GQA (real/model.py GQA: q/k/v/o
# projections, Qwen3's per-head QK norm, RoPE, repeat_kv + causal SDPA), which the twin now prices on
# the real/ path (calibration.predict _gqa_ops) without a single GQA layer record. This times real/'s
# training step (section train, real/bench/whole_model.py bench_train: AdamW with FP32 masters, BF16
# and the bench's FP8) on:
#   mixtral-slice    Mixtral-8x7B: 32 heads, 8 KV heads of 128, 8 experts of 14336 top-2, 1 layer;
#   qwen3moe-slice   Qwen3-30B-A3B: 32 heads, 4 KV heads of 128, QK norm, 128 experts of 768 top-8, 2 layers.
# The twin's predictions of these rows were committed before this ran
# (calibration/measurements/prereg/s20gqa_predictions.csv); the records are compared with them
# (python -m calibration.prereg compare --registration s20gqa) and fitted to nothing.
# One GPU (the first of CUDA_VISIBLE_DEVICES); no GPU: exits 0 having run nothing. Budget <= 90 s
# wall (model builds included; the bench's deadline stops it early, rows written as they go).
# Outputs OUTDIR/s20gqa/: model.csv (bench train_step; GPU name, clocks, torch/CUDA versions in
# every row), env.json, gpu.txt, log.txt.
#   bash real/campaigns/s20gqa.sh OUTDIR   (S20GQA_QUICK=1: the tiny GQA model on the CPU, a dry run;
#   S20GQA_QUICK_GPUS=0: the dry run as a host without a GPU; S20GQA_CASES overrides the cases)
set -u
OUT="${1:?usage: real/campaigns/s20gqa.sh OUTDIR}/s20gqa"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
CASES="qwen3moe-slice:4096:1,2;mixtral-slice:4096:1,2,4;qwen3moe-slice:2048:4"
WALL_S=90
if [ "${S20GQA_QUICK:-0}" = "1" ]; then
  QUICK=(--quick)
  CASES="tiny-gqa:64:2"
  WALL_S=60
fi
CASES=${S20GQA_CASES:-$CASES}
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S20GQA_QUICK:-0}" = "1" ] && NGPU=${S20GQA_QUICK_GPUS:-1}   # the CPU dry run
{
  echo "s20gqa campaign $(date -u +%FT%TZ), $NGPU GPU(s), cases $CASES"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  CUDA_VISIBLE_DEVICES=$ONE_GPU REAL_BENCH_TRAIN_CASES="$CASES" \
    timeout -k 5 "$WALL_S" "$PY" -m real.bench --out "$OUT" --only train --budget-s $((WALL_S - 15)) ${QUICK[@]+"${QUICK[@]}"}
  echo "train exit $? at $(date -u +%FT%TZ)"
  echo "s20gqa done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

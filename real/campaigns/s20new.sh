#!/usr/bin/env bash
# A pre-registered prediction of whole training steps of models the twin has never seen (session
# s20new). Why: every train_step record so far is one of three DeepSeek slices; issue 13's one-GPU
# target (held-out median <= 5%, P90 <= 10%) is met on those. This times real/'s training step
# (section train, real/bench/whole_model.py bench_train: AdamW with FP32 masters, BF16 and the
# bench's FP8) on three slices whose MoE shapes differ from DeepSeek's, MLA attention kept:
#   qwen3moe-mla-slice  Qwen3-30B-A3B's MoE: 128 experts of width 768, top-8, no shared expert;
#   qwen2moe-mla-slice  Qwen1.5-MoE-A2.7B's MoE: 60 experts of width 1408, top-4, 4-wide shared;
#   mixtral-mla-slice   Mixtral-8x7B's MoE: 8 experts of width 14336, top-2, hidden 4096.
# The twin's predictions of these rows were committed before this ran
# (calibration/measurements/prereg/s20new_predictions.csv); the records are compared with them
# (calibration/prereg.py) and fitted to nothing.
# One GPU (the first of CUDA_VISIBLE_DEVICES); no GPU: exits 0 having run nothing. Budget <= 120 s
# wall (model builds included; the bench's deadline stops it early, rows written as they go).
# Outputs OUTDIR/s20new/: model.csv (bench train_step; GPU name, clocks, torch/CUDA versions in
# every row), env.json, gpu.txt, log.txt.
#   bash real/campaigns/s20new.sh OUTDIR   (S20NEW_QUICK=1: the tiny model on the CPU, a dry run;
#   S20NEW_QUICK_GPUS=0: the dry run as a host without a GPU; S20NEW_CASES overrides the cases)
set -u
OUT="${1:?usage: real/campaigns/s20new.sh OUTDIR}/s20new"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
CASES="qwen3moe-mla-slice:4096:1,2;mixtral-mla-slice:4096:1,2,4;qwen2moe-mla-slice:4096:1,2;qwen3moe-mla-slice:2048:4;qwen2moe-mla-slice:2048:4"
WALL_S=120
if [ "${S20NEW_QUICK:-0}" = "1" ]; then
  QUICK=(--quick)
  CASES="tiny:64:2"
  WALL_S=60
fi
CASES=${S20NEW_CASES:-$CASES}
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S20NEW_QUICK:-0}" = "1" ] && NGPU=${S20NEW_QUICK_GPUS:-1}   # the CPU dry run
{
  echo "s20new campaign $(date -u +%FT%TZ), $NGPU GPU(s), cases $CASES"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  CUDA_VISIBLE_DEVICES=$ONE_GPU REAL_BENCH_TRAIN_CASES="$CASES" \
    timeout -k 5 "$WALL_S" "$PY" -m real.bench --out "$OUT" --only train --budget-s $((WALL_S - 15)) ${QUICK[@]+"${QUICK[@]}"}
  echo "train exit $? at $(date -u +%FT%TZ)"
  echo "s20new done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

#!/usr/bin/env bash
# A pre-registered prediction of prefill and decode of models the twin has never seen (session
# s20new2). Why: issue 13's one-GPU targets (held-out median <= 5%, P90 <= 10%) cover the model.csv
# prefill and decode rows too, and every such record so far is a DeepSeek slice (v2-lite-slice,
# v3-slice-2l). This times real/'s serving (section serve, real/bench/whole_model.py bench_serve:
# BF16 prefill of a batch of 1024-token prompts, then decode steps over the MLA cache, 32 generated)
# on s20new's three slices with other families' MoE shapes, MLA attention kept (GQA has no cache in
# real/): qwen3moe-mla-slice (128 x 768, top-8), qwen2moe-mla-slice (60 x 1408, top-4, 4-wide shared),
# mixtral-mla-slice (8 x 14336, top-2, hidden 4096); prefill batches 1,4,16, decode batches 1,8,32,128.
# The twin's predictions of these rows were committed before this ran
# (calibration/measurements/prereg/s20new2_predictions.csv); the records are compared with them
# (calibration/prereg.py --registration s20new2) and fitted to nothing.
# One GPU (the first of CUDA_VISIBLE_DEVICES); no GPU: exits 0 having run nothing. Budget <= 60 s
# wall (model builds included; the bench's deadline stops it early, rows written as they go).
# Outputs OUTDIR/s20new2/: model.csv (benches prefill and decode; GPU name, clocks, torch/CUDA
# versions in every row), env.json, gpu.txt, log.txt.
#   bash real/campaigns/s20new2.sh OUTDIR   (S20NEW2_QUICK=1: the tiny model on the CPU, a dry run;
#   S20NEW2_QUICK_GPUS=0: the dry run as a host without a GPU; S20NEW2_CASES overrides the cases)
set -u
OUT="${1:?usage: real/campaigns/s20new2.sh OUTDIR}/s20new2"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
CASES="qwen3moe-mla-slice:1024:32:1,4,16:1,8,32,128;qwen2moe-mla-slice:1024:32:1,4,16:1,8,32,128;mixtral-mla-slice:1024:32:1,4,16:1,8,32,128"
WALL_S=60
if [ "${S20NEW2_QUICK:-0}" = "1" ]; then
  QUICK=(--quick)
  CASES="tiny:16:8:2:2"
  WALL_S=40
fi
CASES=${S20NEW2_CASES:-$CASES}
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S20NEW2_QUICK:-0}" = "1" ] && NGPU=${S20NEW2_QUICK_GPUS:-1}   # the CPU dry run
{
  echo "s20new2 campaign $(date -u +%FT%TZ), $NGPU GPU(s), cases $CASES"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  CUDA_VISIBLE_DEVICES=$ONE_GPU REAL_BENCH_SERVE_CASES="$CASES" \
    timeout -k 5 "$WALL_S" "$PY" -m real.bench --out "$OUT" --only serve --budget-s $((WALL_S - 12)) ${QUICK[@]+"${QUICK[@]}"}
  echo "serve exit $? at $(date -u +%FT%TZ)"
  echo "s20new2 done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

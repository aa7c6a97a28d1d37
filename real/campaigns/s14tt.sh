#!/usr/bin/env bash
# Issue 14, the power law behind the 500 W clock (s14tt). The twin runs torchtitan's H100s at their
# 500 W limit by a clock fraction derived from our 700 W records under an assumed law (static part =
# idle power, dynamic power ~ f^3: calibration/power_cap.py); f^2 would give 0.80 instead of 0.86.
# The limit cannot be changed on the lent machines, so this traces the law under the limit we have:
# section duty_sweep (real/bench/duty_sweep.py), one GPU only (ONE_GPU):
#   idle board power (3 s), then the BF16 GEMM of sustained.csv (m=8192 n=4096 k=7168) at 10 duty
#   cycles 1.0 .. 0.1 and FlashAttention-2's causal 8K forward (batch 8, 32 x 128) at 6 duty cycles
#   1.0 .. 0.15, each point held 5 s with a row per 1 s window (duty by CUDA events, board power by
#   the energy counter, SM clock, temperature, NVML clock-event reasons).
# An H200 substitute is useful only as its own GPU's law (not for the H100 catalog entry).
# Writes OUTDIR/s14tt/{duty_sweep.csv, env.json, log.txt}. Budget: <= 130 s of one GPU (the part under
# `timeout 125`, ~95 s expected; rows are flushed as written, so a cut run keeps its windows).
#   bash real/campaigns/s14tt.sh OUTDIR    (S14TT_QUICK=1: tiny shapes, a CPU dry run)
# Analysis: python -m calibration.power_cap --duty OUTDIR/s14tt/duty_sweep.csv
set -u
OUT="${1:?usage: real/campaigns/s14tt.sh OUTDIR}/s14tt"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S14TT_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
{
  echo "s14tt campaign $(date -u +%FT%TZ), $NGPU GPU(s), one-GPU part on GPU $ONE_GPU"
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,temperature.gpu,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
  CUDA_VISIBLE_DEVICES="$ONE_GPU" timeout -k 5 125 "$PY" -m real.bench --out "$OUT" --only duty_sweep \
    --budget-s 120 ${QUICK[@]+"${QUICK[@]}"}
  echo "part duty_sweep exit $? at $(date -u +%FT%TZ)"
  echo "s14tt done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

#!/usr/bin/env bash
# Issue 14, torchtitan's Llama 3.1 8B CP rows (Table 2, 8 H100 at a 500 W limit): does a 500 W
# limit slow FlashAttention-2 as the twin assumes? The twin applies one clock factor, derived from
# a sustained BF16 GEMM (calibration/power_cap.py: 713 W at 1,350 MHz at our 700 W limit -> 0.863 at
# 500 W), to every compute-bound kernel; on these rows the attention calls are 53-90% of the step,
# and FA2 ran near the maximum clock in our CP records (1,890-1,950 MHz, cuDNN 1,365-1,665). This
# measures FA2's own board power and clock under sustained load (`--only cp_sustained`,
# real/bench/cp_sustained.py), one GPU only (ONE_GPU), no torchrun:
#   the three attention calls of a CP rank at 32K tokens a rank (causal 32K, 16K x 32K and
#   32K x 16K non-causal; 32 heads of 128; forward, recomputed forward and backward back to back),
#   the V3 BF16 GEMM of sustained.csv (ties this machine to that record) and the 8B w1 GEMM in
#   tensorwise FP8; each timed, then held 15 s with a row per 1 s window (power, SM clock, temperature).
# Writes OUTDIR/s11cp8b/{sustained.csv, env.json, log.txt}. Budget: <= 120 s of one GPU (the part
# under `timeout 115`; rows are flushed as written, so a cut run keeps its windows).
#   bash real/campaigns/s11cp8b.sh OUTDIR    (S11CP8B_QUICK=1: tiny shapes, a CPU dry run, ~15 s)
# Analysis: python -m calibration.power_cap --attention OUTDIR/s11cp8b
set -u
OUT="${1:?usage: real/campaigns/s11cp8b.sh OUTDIR}/s11cp8b"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S11CP8B_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
{
  echo "s11cp8b campaign $(date -u +%FT%TZ), $NGPU GPU(s), one-GPU part on GPU $ONE_GPU"
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,temperature.gpu --format=csv 2>&1 || echo "no nvidia-smi"
  CUDA_VISIBLE_DEVICES="$ONE_GPU" timeout -k 5 115 "$PY" -m real.bench --out "$OUT" --only cp_sustained \
    --budget-s 110 ${QUICK[@]+"${QUICK[@]}"}
  echo "part cp_sustained exit $? at $(date -u +%FT%TZ)"
  echo "s11cp8b done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

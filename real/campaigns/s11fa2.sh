#!/usr/bin/env bash
# Issue 14, FlashAttention-2's own sustained clock per call length (s11fa2). s11cp8b measured FA2 held
# 15 s at a torchtitan 8B CP rank's 32K calls: 680-687 W at 1,725-1,755 MHz at our 700 W limit, where
# the sustained BF16 GEMM the twin's power factor comes from draws 713 W at 1,350 MHz. torchtitan's
# other FA2 rows (8B/70B/405B at seq 8192) run 8K calls; this measures whether FA2's draw depends on
# the call length (`--only fa2_sustained`, real/bench/cp_sustained.py), one GPU only (ONE_GPU):
#   causal FA2 at 8K (batch 8), 32K (batch 2) and 16K (batch 4), 64K query tokens a call, 32 heads
#   of 128, BF16, the forward and the backward apart, then the V3 BF16 GEMM of sustained.csv (ties
#   this machine to that record); each after 2 s idle timed (burst), then held 10 s with a row per
#   1 s window (power, SM clock, temperature).
# Writes OUTDIR/s11fa2/{sustained.csv, env.json, log.txt}. Budget: <= 120 s of one GPU (the part
# under `timeout 115`, ~100 s expected; rows are flushed as written, so a cut run keeps its windows).
#   bash real/campaigns/s11fa2.sh OUTDIR    (S11FA2_QUICK=1: tiny shapes, a CPU dry run)
# Analysis: python -m calibration.power_cap OUTDIR/s11fa2   (per kernel: steady W, MHz, clock and time factor at 500 W)
set -u
OUT="${1:?usage: real/campaigns/s11fa2.sh OUTDIR}/s11fa2"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S11FA2_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
{
  echo "s11fa2 campaign $(date -u +%FT%TZ), $NGPU GPU(s), one-GPU part on GPU $ONE_GPU"
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,temperature.gpu --format=csv 2>&1 || echo "no nvidia-smi"
  CUDA_VISIBLE_DEVICES="$ONE_GPU" timeout -k 5 115 "$PY" -m real.bench --out "$OUT" --only fa2_sustained \
    --budget-s 110 ${QUICK[@]+"${QUICK[@]}"}
  echo "part fa2_sustained exit $? at $(date -u +%FT%TZ)"
  echo "s11fa2 done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

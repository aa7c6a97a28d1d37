#!/usr/bin/env bash
# Issue 13 (session s8dec: the decode target), one GPU (GPU 0): the batched GEMMs real/'s eager
# decode runs over the MLA latent cache, and repeated decode steps with the GPU's state per step
# (real/bench/decode_gemm.py):
#   decode_gemm   the absorbed attention's five einsums (cuBLAS batched GEMMs) at the model.csv
#                 decode rows' batches and cache lengths and around them, aligned and unaligned
#                 leading dimensions, each timed in a CUDA graph and its kernels named by the
#                 profiler (split fit|holdout), the decode projections (F.linear at m = batch)
#                 and the attention's elementwise kernels over the scores -> decode_gemm.csv
#   decode_drift  v3-slice-2l decode steps at batch 1 and 256 in rounds (back to back, after 2 s
#                 idle, after a 1 s GEMM burst), one row per step with NVML SM clock, power,
#                 temperature, P-state, clock-event reasons and the host's CPU clock -> decode_drift.csv
# Writes OUTDIR/s8dec/{decode_gemm.csv,decode_drift.csv,env.json,log.txt}; copy the CSVs to
# calibration/measurements/<gpu>/.
# Budget ~150 s: both sections in one process under --budget-s 125 (decode_gemm 68%, decode_drift
# 32% of it) inside `timeout 145`; rows are flushed one by one, so a cut-short run keeps them.
#   bash real/campaigns/s8dec.sh OUTDIR          (S8DEC_QUICK=1: tiny shapes, a CPU dry run)
set -u
OUT="${1:?usage: real/campaigns/s8dec.sh OUTDIR}/s8dec"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
QUICK=()
[ "${S8DEC_QUICK:-0}" = "1" ] && QUICK=(--quick)
{
  echo "s8dec campaign $(date -u +%FT%TZ) on GPU ${CUDA_VISIBLE_DEVICES}"
  nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,power.draw,power.limit,temperature.gpu,pstate --format=csv 2>/dev/null
  timeout -k 5 145 python3 -m real.bench --out "$OUT" --only decode_gemm,decode_drift --budget-s 125 --min-time-s 0.02 "${QUICK[@]}"
  echo "decode_gemm,decode_drift exit $?"
  echo "s8dec campaign done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

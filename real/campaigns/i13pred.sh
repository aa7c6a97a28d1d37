#!/usr/bin/env bash
# Issue 13 (twin side: the layer bias), on GPU 0 of the 2-GPU host: host dispatch time beside the
# kernels launched, for real/'s eager MoE and MLA layers (forward, backward), a training step's
# forward / backward / optimizer phases, a prefill and a decode step
# (real/bench/host_dispatch.py, with step_kernels.csv); then the pipeline's expert weight-gradient
# accumulation through the transposed view (real/bench/wgrad_accum.py, wgrad_accum.csv: what a
# pipeline W / BW op spends beyond its GEMMs). Writes OUTDIR/i13pred/{host_dispatch.csv,
# step_kernels.csv,env.json,log.txt} and OUTDIR/i13pred/wgrad_accum/{wgrad_accum.csv,env.json};
# copy the CSVs to calibration/measurements/<gpu>/.
# Budget 140 s: host_dispatch under --budget-s 80 inside `timeout 100`, wgrad_accum under
# --budget-s 25 inside `timeout 40` (rows are flushed one by one, so a cut-short run keeps what it wrote).
#   bash real/campaigns/i13pred.sh OUTDIR          (I13_QUICK=1: tiny shapes, a CPU dry run)
set -u
OUT="${1:?usage: real/campaigns/i13pred.sh OUTDIR}/i13pred"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
QUICK=()
[ "${I13_QUICK:-0}" = "1" ] && QUICK=(--quick)
{
  echo "i13pred campaign $(date -u +%FT%TZ) on GPU ${CUDA_VISIBLE_DEVICES}"
  timeout -k 5 100 python3 -m real.bench --out "$OUT" --only host_dispatch --budget-s 80 "${QUICK[@]}"
  echo "host_dispatch exit $?"
  timeout -k 5 40 python3 -m real.bench --out "$OUT/wgrad_accum" --only wgrad_accum --budget-s 25 "${QUICK[@]}"
  echo "wgrad_accum exit $?"
  echo "i13pred campaign done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

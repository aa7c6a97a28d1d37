#!/usr/bin/env bash
# Issue 14, Megatron-LM's TP 8 GPT rows (s24mlm): where the bubble is small (119B at V 23, 462B at V 7, the
# 177B layout on 96 GPUs) the twin reads 12-16% fast, i.e. its per-micro-batch work is cheaper than
# Megatron's, while its burst prediction of one GPU's TP 8 block slice is right (dense_block.csv). Two
# one-GPU facts no record holds (section mlm_sustained, real/bench/mlm_sustained.py):
#   chunks  the GEMMs TransformerEngine's userbuffers overlap splits (ring_exchange: 8 chunks of 512
#           rows; pipeline: 4 of 1,024) for 462B, 177B, 119B and 32B, whole, chunked on one stream and
#           chunked round-robin on 3 streams (TE v1.8's compute streams), CUDA-graph timed; no comm;
#   blocks  one GPU's TP 8 slice of the GPT block (fwd + bwd, 4,096 tokens) of the same four models in a
#           burst after 2 s idle, then held 8 s at the power limit (a row per 1 s window: time per call,
#           board power, SM clock, temperature); last the BF16 reference GEMM of sustained.csv held 6 s.
# GPU name, clocks, torch and CUDA versions in every row (records.py ENV_COLS); env.json beside.
# Writes OUTDIR/s24mlm/{gemm.csv, sustained.csv, env.json, s24mlm.log}. Budget: the part under
# `timeout 100` (~80 s expected, rows flushed as written so a cut run keeps what it measured).
# No GPU: records that and exits 0 having run nothing. An H200 substitute runs the same and is
# reported as its own card's figures (the rows are H100's).
#   bash real/campaigns/s24mlm.sh OUTDIR    (S24MLM_QUICK=1: tiny shapes, a CPU dry run)
set -u
OUT="${1:?usage: real/campaigns/s24mlm.sh OUTDIR}/s24mlm"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S24MLM_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
{
  echo "s24mlm campaign $(date -u +%FT%TZ), $NGPU GPU(s), one-GPU part on GPU $ONE_GPU"
  if [ "${S24MLM_QUICK:-0}" != "1" ] && [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing run"
    echo "s24mlm done $(date -u +%FT%TZ)"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,clocks.max.mem,temperature.gpu,driver_version --format=csv 2>&1 \
    || echo "no nvidia-smi"
  CUDA_VISIBLE_DEVICES="$ONE_GPU" timeout -k 5 100 "$PY" -m real.bench --out "$OUT" --only mlm_sustained \
    --budget-s 92 ${QUICK[@]+"${QUICK[@]}"}
  echo "part mlm_sustained exit $? at $(date -u +%FT%TZ)"
  echo "s24mlm done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/s24mlm.log"

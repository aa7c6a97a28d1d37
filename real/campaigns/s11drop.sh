#!/usr/bin/env bash
# Issue 14 (session s11drop): Megatron-LM's GPT block as Megatron runs it, with its default 0.1
# attention dropout and 0.1 hidden dropout (arguments.py @ core_r0.8.0) beside none, on ONE GPU
# (GPU 0): the GPT 1.7B block (TP1) and one GPU's TP2 slice of the 7.1B block, seq 4096,
# micro-batch 1, BF16, forward and forward+backward (real/bench/dense_dropout.py):
#   block      block_fwd / block_fwd_bwd, dropout (attn, hidden) (0,0) (0.1,0.1) (0.1,0) (0,0.1),
#              SDPA as torch picks ('auto'), then (0,0) and (0.1,0.1) held to FA2 and to cuDNN;
#   attention  the SDPA call alone, dropout_p 0 / 0.1, auto / flash / cudnn (efficient last);
#   dropadd    one hidden dropout + residual add beside the add alone (tokens x hidden).
# Each config's SDPA op (which backend ran) comes from one profiled repetition (sdpa_ran column,
# dense_dropout_kernels.csv). Split: 1.7B rows fit, 7.1B TP2 rows held out.
# Budget: one process, --budget-s 70 inside `timeout 90` (rows flushed one by one). One-GPU only:
# on a 2-GPU host it uses GPU 0 and runs nothing more.
# Writes OUTDIR/s11drop/{dense_dropout,dense_dropout_kernels}.csv, env.json, log.txt.
#   bash real/campaigns/s11drop.sh OUTDIR        (S11DROP_QUICK=1: tiny shapes, a CPU dry run)
set -u
OUT="${1:?usage: real/campaigns/s11drop.sh OUTDIR}/s11drop"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
PY=${PYTHON:-python3}
QUICK=()
[ "${S11DROP_QUICK:-0}" = "1" ] && QUICK=(--quick)
{
  echo "s11drop campaign $(date -u +%FT%TZ) on GPU ${CUDA_VISIBLE_DEVICES} ($(nvidia-smi -L 2>/dev/null | wc -l) GPUs on the host)"
  timeout -k 5 90 "$PY" -m real.bench.dense_dropout --out "$OUT" --budget-s 70 ${QUICK[@]+"${QUICK[@]}"}
  echo "dense_dropout exit $? at $(date -u +%FT%TZ)"
} 2>&1 | grep -v "SyncActivityProfilerHandler" | tee "$OUT/log.txt"

#!/usr/bin/env bash
# Issue 14, the long-context published rows (session s24long; rule docs/notes/s24long_rule.md, committed before
# any record): FlashAttention-2 (SDPA's flash, the rows' kernel) at the per-GPU call shapes those rows run that no
# record holds (`--only long_attn`, real/bench/long_attention.py), one GPU only (ONE_GPU), no torchrun:
#   the 8B 32K causal call (ties this GPU to h100/cp_chunks.csv); Llama 3.1 405B under TP 8 (16 heads, 1 KV head
#   repeated, head 128): 8K and 32K causal, the 32K x 16K and 16K x 32K non-causal calls of a load-balanced CP rank,
#   Llama 3's all-gather CP16 calls (4K queries over 64K and 68K keys, lower-right causal; 4K x 64K unmasked), a 64K
#   square; last, a 32-head 128K causal square past the longest call measured (64K).
#   Each forward and forward + backward, CUDA events, BF16; the SM clock per row.
# Writes OUTDIR/s24long/{long_attn.csv, env.json, gpu.txt, log.txt} (env.json and every row: GPU name, clocks,
# torch and CUDA versions). Budget: <= 75 s of one GPU (the part under `timeout 75`, ~40 s expected; rows are
# flushed as written, so a cut run keeps the cheaper cases, which come first).
#   bash real/campaigns/s24long.sh OUTDIR    (S24LONG_QUICK=1: tiny shapes, a CPU dry run, ~10 s)
# Analysis: PYTHONPATH=. python -m calibration.long_attention OUTDIR/s24long (predictions before the records:
#   PYTHONPATH=. python benchmarks/long_attention_predictions.py)
set -u
OUT="${1:?usage: real/campaigns/s24long.sh OUTDIR}/s24long"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S24LONG_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
{
  echo "s24long campaign $(date -u +%FT%TZ), $NGPU GPU(s), one-GPU part on GPU $ONE_GPU"
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,clocks.sm,temperature.gpu --format=csv > "$OUT/gpu.txt" 2>&1 \
    || echo "no nvidia-smi" > "$OUT/gpu.txt"
  cat "$OUT/gpu.txt"
  CUDA_VISIBLE_DEVICES="$ONE_GPU" timeout -k 5 75 "$PY" -m real.bench --out "$OUT" --only long_attn \
    --budget-s 68 ${QUICK[@]+"${QUICK[@]}"}
  echo "part long_attn exit $? at $(date -u +%FT%TZ)"
  echo "s24long done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

#!/usr/bin/env bash
# Issue 13 (s12mla: the H100 mla_layer P90), one GPU only (ONE_GPU). The worst held-out MLA layer,
# V2-Lite BF16 backward at 1 x 4,096 tokens (-15%), traces cuDNN's SDPA backward at 624 us where the
# twin says 528: its call (batch x heads 16, 4K tokens) is smaller than every attention.csv record
# (16,384 or 8,192 tokens a call), so the twin's attention curve extrapolates. Section attn_small
# (real/bench/attention.py, `--only attn_small`) times causal BF16 SDPA (qk 192 / v 128: the FP8
# layers' attention runs in BF16 too) on attention.csv's own path and timing (forward: CUDA graph of
# back-to-back calls; backward: CUDA events per call, its forward untimed):
#   1. the five MLA records' calls (16 heads 1x4096, 4x1024, 4x4096; 128 heads 1x4096, 4x1024) in
#      the operand layout real/'s MLA hands SDPA (q, k as (B, S, H, D) transposed, v a slice):
#      attention_layout.csv, a diagnostic beside the same calls in the grid (never fitted);
#   2. the grid heads 16/128/64/32 x batch 1/2/4/8 x seq 512..8,192 with batch x seq <= 16,384 and
#      batch x heads x seq >= 32,768 (84 calls, both passes): attention.csv rows, fit/holdout by
#      calibration/split.py's rule (seq 4,096 or 32 heads held out).
# Writes OUTDIR/s12mla/{attention.csv, attention_layout.csv, env.json, log.txt}; rows are flushed one
# by one, so a cut run keeps what it timed. Budget <= 90 s of one GPU (`timeout 85`, section
# deadline 68 s after start-up; ~55 s expected on an H100). Runs unchanged on an H200.
#   bash real/campaigns/s12mla.sh OUTDIR    (S12MLA_QUICK=1: tiny shapes, a CPU dry run)
# Analysis: python -m calibration.attn_small OUTDIR/s12mla [--gpu h100]
set -u
OUT="${1:?usage: real/campaigns/s12mla.sh OUTDIR}/s12mla"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S12MLA_QUICK:-0}" = "1" ] && QUICK=(--quick)
# S12MLA_FULL=1: attention.csv's first grid again after the small one (section attn_first, 36 calls,
# ~25 s), so both grids come from one board and may replace the committed attention-core rows
# (two boards' rows differ by ~4%, over the pooling rule's 3%); budget then <= 140 s
SECTIONS=attn_small BUDGET=68 LIMIT=85
[ "${S12MLA_FULL:-0}" = "1" ] && SECTIONS=attn_small,attn_first BUDGET=62 LIMIT=140
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
{
  echo "s12mla campaign $(date -u +%FT%TZ), $NGPU GPU(s), one-GPU part on GPU $ONE_GPU"
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,temperature.gpu --format=csv 2>&1 || echo "no nvidia-smi"
  CUDA_VISIBLE_DEVICES="$ONE_GPU" timeout -k 5 "$LIMIT" "$PY" -m real.bench --out "$OUT" --only "$SECTIONS" \
    --budget-s "$BUDGET" ${QUICK[@]+"${QUICK[@]}"}
  echo "part $SECTIONS exit $? at $(date -u +%FT%TZ)"
  echo "s12mla done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

#!/usr/bin/env bash
# Issue 13 (session s9mla: the H100 MLA-layer P90), one GPU (GPU 0): every MLA layer record beside a
# host probe taken right before it, in one process and interleaved rounds (real/bench/mla_paired.py):
# per round a probe block (no-grad, recording, engine and autograd.Function-backward chains of 64
# small ops) and the fitting split's MLA host rows (V3-slice b1 s1024, fwd / infer / bwd, BF16 and
# FP8), then for each of the 12 MLA layer records (V3-slice split fit, V2-Lite split holdout; BF16
# and FP8) a probe block and the record's forward and backward, and a closing probe block.
# Decides: whether the host's speed measured at the record's own moment (its `pair`'s probes)
# predicts the host-bound V2-Lite records that the run-wide host rate misses (the host's speed
# varies ~2x between rounds of one process, h100/s8mla_clean), and whether the FP8 backward
# record at 4,096 x 1 (-22%, its own P10-P90 4.6-7.2 ms) is noise. Run it on the H100 and the H200.
# Writes OUTDIR/s9mla/mla_paired.csv (every row with `round` and `pair`, flushed one by one), env.json,
# log.txt. Budget <= 100 s of GPU time: the section under --budget-s 85 inside `timeout 95` (a round,
# ~12-15 s, starts only if the last one's time still fits; a run cut short keeps its rows).
#   bash real/campaigns/s9mla.sh OUTDIR          (S9MLA_QUICK=1: tiny shapes, a CPU dry run)
set -u
OUT="${1:?usage: real/campaigns/s9mla.sh OUTDIR}/s9mla"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
QUICK=()
[ "${S9MLA_QUICK:-0}" = "1" ] && QUICK=(--quick)
{
  echo "s9mla campaign $(date -u +%FT%TZ) on GPU ${CUDA_VISIBLE_DEVICES} ($(nvidia-smi -L 2>/dev/null | wc -l) GPU(s) seen; one used)"
  nvidia-smi 2>/dev/null | head -20
  echo "load average: $(cat /proc/loadavg 2>/dev/null)"
  timeout -k 5 95 python3 -m real.bench --out "$OUT" --only mla_paired --budget-s 85 --min-time-s 0.05 "${QUICK[@]}"
  echo "mla_paired exit $?"
  echo "load average: $(cat /proc/loadavg 2>/dev/null)"
  echo "s9mla campaign done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

#!/usr/bin/env bash
# Issue 13 (session s8mla: the MLA-layer target), one GPU (GPU 0): the host time per launched kernel
# of real/'s eager MLA layers by op class, beside the MLA layer records, in one process and
# interleaved rounds (real/bench/mla_host.py): op-class probes (host_class.csv: no-grad, autograd
# recording, the autograd engine's backward, an autograd.Function's forward and backward), MLA
# layer host rows at the fitting split's V3-slice shapes (split fit) and the held-out V2-Lite
# records' shapes (split holdout, diagnostic: kernels and GPU time behind each record)
# (host_dispatch.csv), and the MLA layer records (attention.csv mla_layer_*). Why: the V2-Lite MLA
# layers are host-bound and their host time per kernel depends on the op mix (a BF16 backward's
# ~1.5x an FP8 one's on the H200, 2026-11-26 s7dec), which one host rate per phase cannot carry.
# Writes OUTDIR/s8mla/{host_class,host_dispatch,attention}.csv (the median round per record),
# step_kernels.csv (every MLA phase's kernels, first round),
# round<i>/*.csv (the raw rounds), env.json, log.txt.
# Budget <= 120 s of GPU time: the section under --budget-s 100 inside `timeout 115` (a round starts
# only if the last one's time still fits; the raw rounds' rows are flushed one by one, so a run cut
# short keeps them).
#   bash real/campaigns/s8mla.sh OUTDIR          (S8MLA_QUICK=1: tiny shapes, a CPU dry run)
set -u
OUT="${1:?usage: real/campaigns/s8mla.sh OUTDIR}/s8mla"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
QUICK=()
[ "${S8MLA_QUICK:-0}" = "1" ] && QUICK=(--quick)
{
  echo "s8mla campaign $(date -u +%FT%TZ) on GPU ${CUDA_VISIBLE_DEVICES} ($(nvidia-smi -L 2>/dev/null | wc -l) GPU(s) seen; one used)"
  timeout -k 5 115 python3 -m real.bench --out "$OUT" --only mla_host --budget-s 100 --min-time-s 0.05 "${QUICK[@]}"
  echo "mla_host exit $?"
  echo "s8mla campaign done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

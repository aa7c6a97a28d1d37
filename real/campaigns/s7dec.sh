#!/usr/bin/env bash
# Issue 13 (session s7dec: decode, prefill and MLA-layer whole-run targets), on GPU 0 of the
# 2-GPU host: the host-bound records re-taken beside their host calibration, in one process
# (real/bench/host_bound.py), in 3 interleaved rounds (the median round's row is written): the
# fitting split's layer host dispatch (host_dispatch.csv, split fit), the serve rows (model.csv
# prefill/decode), the MLA layer rows (attention.csv mla_layer_*); then, where time is left, every
# serve case's kernels (host_dispatch.csv phases prefill/decode and step_kernels.csv). Why: a
# host-bound step lasts as long as the host dispatches, and host speed differed 1.7x between the
# 2026-11-24 and 2026-11-26 runs of the same prefill (and ~30% between seconds of one run).
# Writes OUTDIR/s7dec/{host_dispatch,model,attention,step_kernels}.csv, round<i>/*.csv (the raw
# rounds), env.json, log.txt.
# Budget ~115 s: the section under --budget-s 100 inside `timeout 115` (a round starts only if the
# last one's time still fits; the raw rounds' rows are flushed one by one, so a run cut short keeps them).
#   bash real/campaigns/s7dec.sh OUTDIR          (S7DEC_QUICK=1: tiny shapes, a CPU dry run)
set -u
OUT="${1:?usage: real/campaigns/s7dec.sh OUTDIR}/s7dec"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
QUICK=()
[ "${S7DEC_QUICK:-0}" = "1" ] && QUICK=(--quick)
{
  echo "s7dec campaign $(date -u +%FT%TZ) on GPU ${CUDA_VISIBLE_DEVICES}"
  timeout -k 5 115 python3 -m real.bench --out "$OUT" --only host_bound --budget-s 100 --min-time-s 0.05 "${QUICK[@]}"
  echo "host_bound exit $?"
  echo "s7dec campaign done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

#!/usr/bin/env bash
# Issue 14, the 500 W law below the GEMM's own capped clock (s22tt). The twin runs torchtitan's H100s at
# their 500 W limit by a clock derived from our 700 W records under an assumed law (static part = idle
# power, dynamic power ~ f^3: calibration/power_cap.py). s14tt's duty sweep showed the law is not f^3
# above the BF16 GEMM's capped clock (1,395 MHz) and could not go below it, where the 500 W clock lies;
# the limit cannot be set on the lent machines. Dynamic power = activity x h(f), h the chip's voltage-
# frequency curve, the same for every kernel; the activity depends on the data. So the same GEMM on data
# of lower and higher activity runs at other clocks under the same 700 W limit, each a point of h.
# Section power_activity (real/bench/power_activity.py), one GPU only (ONE_GPU):
#   idle board power (3 s); the BF16 GEMM of sustained.csv (m=8192 n=4096 k=7168) on zeros, powers of
#   two, half-zero Gaussian and Gaussian data, then the FP8 tensorwise GEMM of the same shape on Gaussian
#   data (the heaviest: 1,275 MHz at 700 W in copy_load.csv); each at duty 1.0 (capped) and 0.35 / 0.25 /
#   0.15 (free: P = P_s + d D), each point held 4 s with a row per 1 s window (duty by CUDA events, board
#   power by the energy counter, SM clock, temperature, NVML clock-event reasons; GPU name, torch and
#   CUDA versions in every row).
# An H200 substitute is useful only as its own GPU's law (not for the H100 catalog entry: say so).
# Writes OUTDIR/s22tt/{duty_sweep.csv, env.json, s22tt.log}. Budget: <= 130 s of one GPU (the part under
# `timeout 125`, ~90 s expected; rows are flushed as written, so a cut run keeps its windows).
# No GPU: records that and exits 0 having run nothing.
#   bash real/campaigns/s22tt.sh OUTDIR    (S22TT_QUICK=1: tiny shapes, a CPU dry run)
set -u
OUT="${1:?usage: real/campaigns/s22tt.sh OUTDIR}/s22tt"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S22TT_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
{
  echo "s22tt campaign $(date -u +%FT%TZ), $NGPU GPU(s), one-GPU part on GPU $ONE_GPU"
  if [ "${S22TT_QUICK:-0}" != "1" ] && [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing run"
    echo "s22tt done $(date -u +%FT%TZ)"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,clocks.max.mem,temperature.gpu,driver_version --format=csv 2>&1 \
    || echo "no nvidia-smi"
  CUDA_VISIBLE_DEVICES="$ONE_GPU" timeout -k 5 125 "$PY" -m real.bench --out "$OUT" --only power_activity \
    --budget-s 120 ${QUICK[@]+"${QUICK[@]}"}
  echo "part power_activity exit $? at $(date -u +%FT%TZ)"
  echo "s22tt done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/s22tt.log"

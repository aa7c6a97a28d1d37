#!/usr/bin/env bash
# Issue 14, torchtitan's 500 W clock (s15tt, second campaign). The twin runs torchtitan's H100s at
# their 500 W limit by a clock fraction from our 700 W records under an assumed law (static part =
# idle power, dynamic power ~ f^3: calibration/power_cap.py). s14tt's duty sweep could only raise the
# clock above a kernel's continuous one; a 500 W limit lowers it. This lowers it under our own limit:
# section copy_load (real/bench/copy_load.py), one GPU only (ONE_GPU): a kernel back to back while
# 0/1/2/4 side streams copy 256 MiB device buffers (copy engines), whose HBM traffic takes part of the
# board's power from the SMs; the copies' own draw measured alone. Kernels: the BF16 GEMM of
# sustained.csv (clock_frac's record), the FP8 tensorwise GEMM of torchtitan's 8B w1, FA2's causal 8K
# forward; each point held 4 s, a row per 1 s window (time per call by CUDA events, copy bytes/s,
# board power by the energy counter, SM and memory clocks, temperature, NVML clock-event reasons;
# GPU name, torch and CUDA versions in every row).
# An H200 substitute is useful only as its own GPU's law (other HBM: not for the H100 catalog entry).
# Writes OUTDIR/s15ttpw/{copy_load.csv, env.json, s15ttpw.log}. Budget: <= 130 s of one GPU (the part
# under `timeout 125`, ~85 s expected; rows are flushed as written, so a cut run keeps its windows).
# No GPU: records that and exits 0 having run nothing.
#   bash real/campaigns/s15ttpw.sh OUTDIR    (S15TTPW_QUICK=1: tiny shapes, a CPU dry run)
set -u
OUT="${1:?usage: real/campaigns/s15ttpw.sh OUTDIR}/s15ttpw"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S15TTPW_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
{
  echo "s15ttpw campaign $(date -u +%FT%TZ), $NGPU GPU(s), one-GPU part on GPU $ONE_GPU"
  if [ "${S15TTPW_QUICK:-0}" != "1" ] && [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing run"
    echo "s15ttpw done $(date -u +%FT%TZ)"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,clocks.max.mem,temperature.gpu,driver_version --format=csv 2>&1 \
    || echo "no nvidia-smi"
  CUDA_VISIBLE_DEVICES="$ONE_GPU" timeout -k 5 125 "$PY" -m real.bench --out "$OUT" --only copy_load \
    --budget-s 120 ${QUICK[@]+"${QUICK[@]}"}
  echo "part copy_load exit $? at $(date -u +%FT%TZ)"
  echo "s15ttpw done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/s15ttpw.log"

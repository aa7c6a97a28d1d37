#!/usr/bin/env bash
# A fresh pre-registered run for session s25host2 (issue 13; docs/notes/s25host2_rule.md): s23hrate's protocol
# (real/bench/host_steps.py: the host calibration's fitting layer repetitions, then every prefill / decode record's timed
# steps on an idle device, control / probed alternating, a 3 ms launch probe right before each probed step and each
# fitting repetition) with the same probe also right AFTER every timed step and repetition (REAL_BENCH_STEP_AFTER_PROBE=1,
# table step_after), so each step is bracketed by the host's state before and after it. Why: a host flips between a fast
# and a slow state within seconds (docs/notes/s24probe_rule.md); the rule judges whether pricing each step at its
# bracketing probes (and the fitting ratio at its repetitions' brackets) predicts the records better than the committed
# probe-before-only step-input twin. Cases: v2-lite-slice (MLA + MoE) and megatron-gpt-7.1b (dense, 32 layers), models
# no prefill/decode record holds, host-bound at these shapes; 48 generated; BF16. No back-to-back steps.
# The twin's step-input grid was committed before this ran (calibration/measurements/prereg/s25host2_step_grid.csv.gz).
# One part (the cold process: the first Python process on the machine), <= 80 s wall; one GPU (the first of
# CUDA_VISIBLE_DEVICES); no GPU: exits 0 having run nothing.
# Outputs OUTDIR/s25host2/cold/: model.csv (prefill, decode: the probed steps), serve_steps.csv (every step and fitting
# repetition: block, probe before, event and host seconds), step_after.csv (the probe after each), host_dispatch.csv
# (infer, split fit), serve_kernels.csv, step_kernels.csv, env.json (GPU name, clocks, torch/CUDA versions; every row
# carries GPU name and versions); OUTDIR/s25host2/gpu.txt (nvidia-smi name, power limit, clocks, driver; uptime; nproc;
# CPU model), log.txt.
#   bash real/campaigns/s25host2.sh OUTDIR   (S25HOST2_QUICK=1: the tiny model on the CPU, a dry run;
#   S25HOST2_QUICK_GPUS=0: the dry run as a host without a GPU)
set -u
OUT="${1:?usage: real/campaigns/s25host2.sh OUTDIR}/s25host2"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 REAL_BENCH_STEP_AFTER_PROBE=1
PY=${PYTHON:-python3}
QUICK=()
CASES="v2-lite-slice:320:48:1,4:8,32;v2-lite-slice:640:48:1,4:8,32;megatron-gpt-7.1b:160:48:1:8,32;megatron-gpt-7.1b:320:48:1:8,32"
WALL_S=80
if [ "${S25HOST2_QUICK:-0}" = "1" ]; then
  QUICK=(--quick)
  CASES="tiny:16:10:2:2"
  WALL_S=40
fi
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S25HOST2_QUICK:-0}" = "1" ] && NGPU=${S25HOST2_QUICK_GPUS:-1}   # the CPU dry run
{
  echo "s25host2 campaign $(date -u +%FT%TZ), $NGPU GPU(s), cases $CASES"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,clocks.sm,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  uptime >> "$OUT/gpu.txt" 2>&1
  nproc >> "$OUT/gpu.txt" 2>&1
  grep -m1 "model name" /proc/cpuinfo >> "$OUT/gpu.txt" 2>&1
  mkdir -p "$OUT/cold"
  CUDA_VISIBLE_DEVICES=$ONE_GPU REAL_BENCH_SERVE_CASES="$CASES" \
    timeout -k 5 "$WALL_S" "$PY" -m real.bench --out "$OUT/cold" --only host_steps --budget-s $((WALL_S - 12)) \
    ${QUICK[@]+"${QUICK[@]}"}
  echo "cold exit $? at $(date -u +%FT%TZ)"
  echo "s25host2 done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

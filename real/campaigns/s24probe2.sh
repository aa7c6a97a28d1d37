#!/usr/bin/env bash
# Session s24probe, candidate 2 (issues 13 and 15; docs/notes/s24probe_rule.md "Candidate 2"): every timed eager step
# right after a short (3 ms) host probe whose kind rotates over launch / mix / refmodel / cpuop / py
# (real/serve/stepprobe.py each_probers; real/bench/step_probe.py bench_step_probe_each), so each kind samples the
# same moments of the host. Cases (prompt 384, BF16, 40 timed steps each, 8 a kind): tiny-gqa decode b8, b32 and
# prefill b1; megatron-gpt-1.7b decode b8, b32 and prefill b1; bench-small decode b8; tiny decode b8.
# Run right after real/campaigns/s24probe.sh on each single-GPU host (its second Python process).
# One part, <= 60 s wall; one GPU (the first of CUDA_VISIBLE_DEVICES); no GPU: exits 0 having run nothing.
# Outputs OUTDIR/s24probe2/each/: probe_steps.csv (every step: kind, probe, event and host seconds), env.json (GPU
# name, clocks, torch/CUDA versions; every row carries GPU name, clocks and versions); OUTDIR/s24probe2/gpu.txt
# (nvidia-smi name, power limit, clocks, driver; uptime; nproc; CPU model), log.txt.
#   bash real/campaigns/s24probe2.sh OUTDIR   (S24PROBE_QUICK=1: the tiny model on the CPU, a dry run;
#   S24PROBE_QUICK_GPUS=0: the dry run as a host without a GPU)
set -u
OUT="${1:?usage: real/campaigns/s24probe2.sh OUTDIR}/s24probe2"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
WALL_S=60
[ "${S24PROBE_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S24PROBE_QUICK:-0}" = "1" ] && NGPU=${S24PROBE_QUICK_GPUS:-1}   # the CPU dry run
{
  echo "s24probe2 campaign $(date -u +%FT%TZ), $NGPU GPU(s)"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,clocks.sm,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  uptime >> "$OUT/gpu.txt" 2>&1
  nproc >> "$OUT/gpu.txt" 2>&1
  grep -m1 "model name" /proc/cpuinfo >> "$OUT/gpu.txt" 2>&1
  mkdir -p "$OUT/each"
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$WALL_S" "$PY" -m real.bench --out "$OUT/each" --only step_probe_each \
    --budget-s $((WALL_S - 10)) ${QUICK[@]+"${QUICK[@]}"}
  echo "each exit $? at $(date -u +%FT%TZ)"
  echo "s24probe2 done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

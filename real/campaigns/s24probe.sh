#!/usr/bin/env bash
# Session s24probe (issues 13 and 15; docs/notes/s24probe_rule.md): host-speed probe candidates
# (real/serve/stepprobe.py: the old 3 ms launch chain, a longer launch window, a mixed-op chain, a fixed reference
# model's eager forward, the mix on CPU tensors, the pure-Python loop) beside a fixed set of eager one-GPU steps whose
# host time they must predict (real/bench/step_probe.py). Run first on every fresh single-GPU host of the session, so
# the data set spans hosts; the rule chooses a probe on the first host(s) and judges it on the later ones.
# Cases (s23hrate's shapes, prompt 384), in this order: tiny-gqa, megatron-gpt-1.7b, bench-small, tiny; prefill batches 1,4;
# decode batches 8,32; BF16; 40 generated positions (24 timed decode steps a case).
# One part (the cold process: the first Python process on the machine), <= 60 s wall; one GPU (the first of
# CUDA_VISIBLE_DEVICES); no GPU: exits 0 having run nothing.
# Outputs OUTDIR/s24probe/cold/: host_probes.csv (every candidate, every probe set), serve_steps.csv (every timed step:
# event and host seconds, the per-step 3 ms probe), env.json (GPU name, clocks, torch/CUDA versions; every row carries
# GPU name, clocks and versions); OUTDIR/s24probe/gpu.txt (nvidia-smi name, power limit, clocks, driver; uptime;
# nproc; lscpu model), log.txt.
#   bash real/campaigns/s24probe.sh OUTDIR   (S24PROBE_QUICK=1: tiny models on the CPU, a dry run;
#   S24PROBE_QUICK_GPUS=0: the dry run as a host without a GPU)
set -u
OUT="${1:?usage: real/campaigns/s24probe.sh OUTDIR}/s24probe"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
CASES="tiny-gqa:384:40:1,4:8,32;megatron-gpt-1.7b:384:40:1,4:8,32;bench-small:384:40:1,4:8,32;tiny:384:40:1,4:8,32"
WALL_S=60
if [ "${S24PROBE_QUICK:-0}" = "1" ]; then
  QUICK=(--quick)
  CASES="tiny:16:10:1:2;tiny-gqa:16:10:1:2"
  WALL_S=60
fi
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S24PROBE_QUICK:-0}" = "1" ] && NGPU=${S24PROBE_QUICK_GPUS:-1}   # the CPU dry run
{
  echo "s24probe campaign $(date -u +%FT%TZ), $NGPU GPU(s), cases $CASES"
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
    timeout -k 5 "$WALL_S" "$PY" -m real.bench --out "$OUT/cold" --only step_probe --budget-s $((WALL_S - 10)) \
    ${QUICK[@]+"${QUICK[@]}"}
  echo "cold exit $? at $(date -u +%FT%TZ)"
  echo "s24probe done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

#!/usr/bin/env bash
# s30dec (issue 13, round 3 of s29dec; docs/notes/s30dec_rule.md): a probed decode step as the run issues it.
# s29dec's probed harness (real/bench/host_steps.py, section host_steps) on fresh shapes: every timed step beside its
# own host probe, then per decode record one profiled step (serve_kernels.csv `kernels`: the kernels the step launches
# at that shape, the candidate's fitting count) and one aten-counted step; predictions
# calibration/measurements/prereg/s30dec_predictions.json (calibration/s30dec.py), committed before the run.
# One part, one GPU (the first the caller gives; GPU 0 where unset), the cold process: the fitting layer repetitions
# (v3-slice-1l infer, each after its own 3 ms launch probe), then each record's steps alternating control / probed.
# Cases (calibration/s30dec.py CASES, in order; a test holds them equal): llama3-8b-slice p768, dsv2-slice p768,
# phi35moe-slice p1280, olmoe-slice p1280, mixtral-slice p768, v2-lite-slice p1280 (no host_steps folder holds it);
# 64 generated, prefill batch 3, decode batches 6, 12, 40; 6 prefill and 18 decode records, BF16.
# Must run alone on the host, as the lease's first command (the host's speed is what is measured). Budget: one
# `timeout` of 150 s, expected ~50 s.
# Outputs OUTDIR/s30dec/cold/: model.csv, serve_steps.csv, host_dispatch.csv, serve_kernels.csv, step_kernels.csv,
# env.json (GPU name, clocks, power, torch/CUDA versions in every row); OUTDIR/s30dec/host_s30dec.txt (nvidia-smi,
# clocks, topology, CPU, uptime), s30dec.log.
#   bash real/campaigns/s30dec.sh OUTDIR
# Env: PY (python3), S30DEC_TINY (1: CPU dry run, the tiny model), S30DEC_TINY_GPUS (the dry run's GPU count, 1),
# S30DEC_TIMEOUT_SCALE (1); S30DEC_NAME (s30dec: the output folder, log and host file names) and S30DEC_CASES (CASES
# below) for a registration that reruns this campaign on its own cases (real/campaigns/s30dec2.sh).
set -u
name=${S30DEC_NAME:-s30dec}
root=${1:?usage: real/campaigns/s30dec.sh OUTDIR}/$name
mkdir -p "$root"
log="$root/$name.log"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} REAL_BENCH_BACK_TO_BACK_STEPS=29
PY=${PY:-python3}
tiny=${S30DEC_TINY:-0}
scale=${S30DEC_TIMEOUT_SCALE:-1}
CASES="llama3-8b-slice:768:64:3:6,12,40;dsv2-slice:768:64:3:6,12,40;phi35moe-slice:1280:64:3:6,12,40;olmoe-slice:1280:64:3:6,12,40;mixtral-slice:768:64:3:6,12,40;v2-lite-slice:1280:64:3:6,12,40"
CASES=${S30DEC_CASES:-$CASES}
wall_s=150
quick=()
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
if [ "$tiny" = "1" ]; then
  quick=(--quick)
  CASES="tiny:16:10:2:2"
  wall_s=60
  export REAL_BENCH_BACK_TO_BACK_STEPS=2
  NGPU=${S30DEC_TINY_GPUS:-1}
fi
wall_s=$((wall_s * scale))
{
  echo "$name campaign $(date -u +%FT%TZ), $NGPU GPU(s) visible, cases $CASES"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    echo "$name done $(date -u +%FT%TZ)"
    exit 0
  fi
  {
    echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}; this campaign's GPU: $ONE_GPU"
    nvidia-smi --query-gpu=index,name,pci.bus_id,power.limit,clocks.max.sm,clocks.sm,clocks.mem,driver_version --format=csv
    nvidia-smi -q -d CLOCK
    nvidia-smi topo -m
    echo "uptime: $(uptime)"
    echo "nproc: $(nproc)"
    lscpu | grep -E "Model name|^CPU\(s\)|MHz|NUMA node"
    ps -eo pid,pcpu,etime,comm --sort=-pcpu | head -8
  } > "$root/host_$name.txt" 2>&1
  mkdir -p "$root/cold"
  start=$(date +%s)
  CUDA_VISIBLE_DEVICES=$ONE_GPU REAL_BENCH_SERVE_CASES="$CASES" \
    timeout -k 5 "$wall_s" "$PY" -m real.bench --out "$root/cold" --only host_steps --budget-s $((wall_s - 20)) \
    ${quick[@]+"${quick[@]}"}
  rc=$?
  echo "$name part cold rc=$rc, $(( $(date +%s) - start )) s"
  echo "$name done $(date -u +%FT%TZ)"
} 2>&1 | tee "$log"

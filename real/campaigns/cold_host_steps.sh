#!/usr/bin/env bash
# The decode campaigns' one part (issue 13: s29dec, s29dec2, s30dec, s30dec2; each script names its cases and says why
# it ran): section host_steps (real/bench/host_steps.py) in the cold process (the campaign's first Python process), on
# one GPU (the first the caller gives; GPU 0 where unset): the fitting layer repetitions (v3-slice-1l infer, each after
# its own 3 ms launch probe), then each record's timed steps alternating control / probed (the device synchronised
# before each), per record a profiled and an aten-counted decode step, then 29 steps issued back to back (reported).
# Must run alone on the host (the host's speed is what is measured). Budget: one `timeout` of 150 s.
# Outputs OUTDIR/NAME/cold/: model.csv, serve_steps.csv, host_dispatch.csv, serve_kernels.csv, step_kernels.csv,
# env.json (GPU name, clocks, power, torch/CUDA versions in every row); OUTDIR/NAME/host_NAME.txt (nvidia-smi, clocks,
# topology, CPU, uptime), OUTDIR/NAME/NAME.log.
#   bash real/campaigns/cold_host_steps.sh NAME CASES OUTDIR   (CASES: REAL_BENCH_SERVE_CASES' syntax)
# Env, named by NAME upper-cased (S30DEC_TINY for s30dec): PY (python3), <NAME>_TINY (1: CPU dry run, the tiny model),
# <NAME>_TINY_GPUS (the dry run's GPU count, 1), <NAME>_TIMEOUT_SCALE (1).
set -u
usage="usage: real/campaigns/cold_host_steps.sh NAME CASES OUTDIR"
name=${1:?$usage}
CASES=${2:?$usage}
root=${3:?$usage}/$name
mkdir -p "$root"
log="$root/$name.log"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} REAL_BENCH_BACK_TO_BACK_STEPS=29
PY=${PY:-python3}
up=${name^^}
tiny_var=${up}_TINY scale_var=${up}_TIMEOUT_SCALE gpus_var=${up}_TINY_GPUS
tiny=${!tiny_var:-0}
scale=${!scale_var:-1}
wall_s=150
quick=()
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
if [ "$tiny" = "1" ]; then
  quick=(--quick)
  CASES="tiny:16:10:2:2"
  wall_s=60
  export REAL_BENCH_BACK_TO_BACK_STEPS=2
  NGPU=${!gpus_var:-1}
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

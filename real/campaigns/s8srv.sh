#!/usr/bin/env bash
# Is real/serve's speed set by where its host thread runs? (issue 15, branch s8srv; 2-GPU host,
# about 140 s in all):
#   real/campaigns/s8srv.sh OUTDIR
# 1. one GPU (GPU 0; every machine): plan gpu1-pin, the Poisson short-prompt runs whose TTFT the twin
#    misses (held-out r30, r40) and fit runs beside them (r10, r20, closed c1), 3 s of load each: first
#    as the engine comes, then again after it ran one eager forward of every flat batch size up to 640
#    tokens (is a size's first forward the run-to-run difference?), unpinned (timeout 55 s);
# 2. two GPUs (only where two exist): plan ep2-pin, all twelve EP2 configurations measured so far
#    (held-out first, original seeds and splits), each twice: each rank's main thread unpinned and
#    pinned to one CPU of its GPU's local ones, alternating; 1.75 s of load each, every flat
#    batch size up to 576 tokens run once before the first (timeout 93 s).
# Every iteration records its host / GPU split, the main thread's CPU id and clock and the GPU's SM
# clock and its clocks-event reasons (NVML; bit 1 = GPU idle) (--timing): the first 2xH100 round read
# SM clocks of 345-1980 MHz after EP2 runs.
# Writes OUTDIR/s8srv/{gpu1,ep2}/serve_{load,requests,iterations}.csv + env.json, the merged families
# in OUTDIR/s8srv/, the host's CPU/NUMA layout in host.txt, and log.txt. A part cut by its timeout
# keeps the runs it finished.
# CPU dry run (the test suite does this): PYTHON=... S8_DEVICE=cpu S8_PLAN1=tiny-pin S8_PLAN2=tiny-ep2-pin S8_FORCE_EP2=1
set -u
OUT=${1:?usage: real/campaigns/s8srv.sh OUTDIR}
DIR="$OUT/s8srv"
mkdir -p "$DIR/gpu1" "$DIR/ep2"
PY=${PYTHON:-python3}
DEVICE=${S8_DEVICE:-auto}
PLAN1=${S8_PLAN1:-gpu1-pin}
PLAN2=${S8_PLAN2:-ep2-pin}
export PYTHONUNBUFFERED=1
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
{
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== numactl -H"; numactl -H 2>/dev/null || cat /sys/devices/system/node/node*/cpulist 2>/dev/null
  echo "== nvidia-smi topo -m"; nvidia-smi topo -m 2>/dev/null
  echo "== cpufreq governor"; cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo "not exposed"
} > "$DIR/host.txt" 2>&1
{
  echo "s8srv start $(date -u +%FT%TZ), $NGPU GPU(s), CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}"
  nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,power.limit --format=csv 2>/dev/null || true
  # GPU 0 of what this shell may use (the first of an inherited CUDA_VISIBLE_DEVICES)
  GPU1=${S8_GPU1_DEVICES:-${CUDA_VISIBLE_DEVICES:-0}}
  CUDA_VISIBLE_DEVICES=${GPU1%%,*} timeout 55 "$PY" -m real.serve --out "$DIR/gpu1" \
    --plan "$PLAN1" --device "$DEVICE" --budget-s 46 --timing
  echo "gpu1 exit $? at $(date -u +%FT%TZ)"
  if [ "$NGPU" -ge 2 ] || [ -n "${S8_FORCE_EP2:-}" ]; then
    timeout 93 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m real.serve \
      --out "$DIR/ep2" --plan "$PLAN2" --device "$DEVICE" --budget-s 78 --timing
    echo "ep2 exit $? at $(date -u +%FT%TZ)"
  else
    echo "ep2 skipped: $NGPU GPU(s)"
  fi
  "$PY" -c "import sys; from real.serve.records import merge; print('merged', merge(sys.argv[2:], sys.argv[1]))" \
    "$DIR" "$DIR/gpu1" "$DIR/ep2"
  echo "s8srv end $(date -u +%FT%TZ)"
} 2>&1 | tee "$DIR/log.txt"

#!/usr/bin/env bash
# The host's speed as a measured input of the serving twin (issue 15, branch s13srv; budget 150 s a
# machine kind: one-GPU part ~60 s on GPU 0, EP2 part ~70 s on both GPUs, each cut by --budget-s and
# a hard timeout):
#   real/campaigns/s13srv.sh OUTDIR
# Every load run is bracketed by the host probe (real/serve/hostspeed.py, --host-probe: host time
# per small kernel launch, per CUDA-graph replay, per pure-Python pass, right before and right
# after the run in the engine's process), each rank's main thread pinned to one CPU of its GPU's.
# Plans gpu1-host / ep2-host (real/serve/plans.py): three fit configurations each twice, as the host
# comes and beside a busy co-runner on the main thread's CPU at nice 3 (a controlled ~1.5x slower
# host: how iteration time follows the probe, fit split), the held-out configurations (5 one-GPU,
# 3 EP2; original seeds and splits, 2.5 s of load) as the host comes, then held-out runs under the
# dose where time is left. --timing: each iteration's host / GPU split, CPU and SM clock.
# Writes OUTDIR/s13srv/{gpu1,ep2}/serve_{load,requests,iterations}.csv + env.json, host.txt and
# log.txt; a part cut by its timeout keeps the runs already finished. The EP2 part runs only where
# two GPUs exist (S13_FORCE_EP2=1: CPU dry run on two gloo ranks).
# CPU dry run (the test suite does this): PYTHON=... S13_DEVICE=cpu S13_PLAN1=tiny-host
#   S13_PLAN2=tiny-ep2-host S13_FORCE_EP2=1
set -u
OUT=${1:?usage: real/campaigns/s13srv.sh OUTDIR}
DIR="$OUT/s13srv"
mkdir -p "$DIR/gpu1" "$DIR/ep2"
PY=${PYTHON:-python3}
DEVICE=${S13_DEVICE:-auto}
PLAN1=${S13_PLAN1:-gpu1-host}
PLAN2=${S13_PLAN2:-ep2-host}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
{
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== cpufreq"; cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo "not exposed"
  echo "== loadavg"; cat /proc/loadavg
  echo "== nvidia-smi topo -m"; nvidia-smi topo -m 2>/dev/null
} > "$DIR/host.txt" 2>&1
SECONDS=0
{
  echo "s13srv start $(date -u +%FT%TZ), $NGPU GPU(s), one-GPU part on $ONE_GPU, plans $PLAN1 / $PLAN2"
  nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,power.limit --format=csv 2>/dev/null || true
  # no run starts after --budget-s; the hard timeout leaves the finished runs' rows
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 68 "$PY" -m real.serve --out "$DIR/gpu1" --plan "$PLAN1" \
    --device "$DEVICE" --budget-s 56 --timing --host-probe
  echo "gpu1 exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
  if [ "$NGPU" -ge 2 ] || [ -n "${S13_FORCE_EP2:-}" ]; then
    left=$((148 - SECONDS)); [ "$left" -gt 78 ] && left=78; [ "$left" -lt 30 ] && left=30
    timeout -k 5 "$left" "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m real.serve \
      --out "$DIR/ep2" --plan "$PLAN2" --device "$DEVICE" --budget-s $((left - 12)) --timing --host-probe
    echo "ep2 exit $? at $(date -u +%FT%TZ) (timeout $left s, ${SECONDS} s)"
  else
    echo "ep2 skipped: $NGPU GPU(s)"
  fi
  echo "s13srv end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | tee "$DIR/log.txt"

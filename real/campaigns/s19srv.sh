#!/usr/bin/env bash
# Does real/serve's EP2 prompt iteration get faster as its process runs short-prompt runs? (issue 15,
# group B, branch s19srv; two GPUs, about 50-70 s, budget 100 s; exits 0 doing nothing with fewer than 2):
#   real/campaigns/s19srv.sh OUTDIR
# Plan ep2-repeat (real/serve/plans.py): after the plan's untimed warm-up, fit ep2lo-poisson-r4-long's stream
# (the committed low-load session's first run), fit ep2lo-poisson-r20-short's stream (seed 22) four times back
# to back in one process, then fit ep2lo-closed-c4-short's (seed 23); 3 s of load each, unpinned; every run
# bracketed by the host probe (--host-probe) and every iteration's host / GPU split, CPU and SM clock
# (--timing). Read (calibration.serve_clock_idle / serve_engine_fit design with the committed
# real-serve-<gpu>-ep2 table): the prompt iterations' measured / predicted level per repeat, by whether
# their exact flat size was run before; still falling over repeats 2-4 = the process warming up (a term by
# the process's prompt work); flat from repeat 2 = first-met sizes alone; the probe says whether the host
# moved meanwhile. Fit configurations only: no held-out seed runs.
# Writes OUTDIR/s19srv/ep2/serve_{load,requests,iterations}.csv + env.json, OUTDIR/s19srv/host.txt and
# log.txt; a run cut by the timeout keeps the runs already finished.
# CPU dry run (the test suite does this): PYTHON=... S19_DEVICE=cpu S19_PLAN=tiny-ep2-repeat S19_FORCE_EP2=1
set -u
OUT=${1:?usage: real/campaigns/s19srv.sh OUTDIR}
DIR="$OUT/s19srv"
mkdir -p "$DIR/ep2"
PY=${PYTHON:-python3}
DEVICE=${S19_DEVICE:-auto}
PLAN=${S19_PLAN:-ep2-repeat}
BUDGET_S=${S19_BUDGET_S:-100}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
{
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== cpufreq"; cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo "not exposed"
  echo "== loadavg"; cat /proc/loadavg
  echo "== nvidia-smi"; nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,clocks.max.sm,power.limit,persistence_mode --format=csv 2>/dev/null
} > "$DIR/host.txt" 2>&1
SECONDS=0
{
  echo "s19srv start $(date -u +%FT%TZ), $NGPU GPU(s), plan $PLAN, budget ${BUDGET_S} s"
  if [ "$NGPU" -ge 2 ] || [ -n "${S19_FORCE_EP2:-}" ]; then
    # no run starts after BUDGET_S - 15 s; the hard timeout leaves the finished runs' rows
    timeout -k 5 "$BUDGET_S" "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m real.serve \
      --out "$DIR/ep2" --plan "$PLAN" --device "$DEVICE" --budget-s $((BUDGET_S - 15)) --timing --host-probe
    echo "ep2 exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
  else
    echo "ep2 skipped: $NGPU GPU(s)"
  fi
  echo "s19srv end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | tee "$DIR/log.txt"

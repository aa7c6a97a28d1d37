#!/usr/bin/env bash
# Does an eager pass that launches several GPU kernels new to its process pay ~2.6 ms for each? (issue 15,
# branch s17srv; about 60-90 s on one GPU; every part's timeout is cut to what is left of a 120 s budget):
#   real/campaigns/s17srv.sh OUTDIR
# Why: s16srv / s16srv2 found a first-met size's large cost to be ~2.6 ms per GPU kernel a process launches for
# the first time, measured on standalone calls (one weight, synchronised before and after). In real/serve's
# fit runs an iteration whose flat size launches k such kernels pays ~3.8 ms for the first and ~1-2 ms for each
# further one (docs/notes/s17srv_rule.md), and the twin's per-kernel charge at the standalone cost failed its
# rule on the single-request loops. Is the cost sub-additive when the calls are launched back to back with no
# synchronisation between them, as an eager forward launches them?
# Parts (one GPU, one after the other, each a fresh process; real/serve/shapeprobe.py --together: at each M
# every 2-D weight of v3-slice-2l as F.linear back to back, the pass timed on the host, then a repeat pass):
#   tshuf  M = 1..2048 shuffled  -> OUTDIR/s17srv/tshuf/shapeprobe.csv   (timeout 45 s)
#   tasc   M = 1..2048 ascending -> OUTDIR/s17srv/tasc/shapeprobe.csv    (timeout 45 s)
# What it decides (offline, calibration/kernel_map.py's map of the GPU counts each pass's new kernels): the
# pass excess (first - repeat) against its count of new kernels: linear at ~2.6 ms a kernel (additive: the
# fit runs' shortfall is elsewhere) or a first kernel's cost plus a smaller one per further kernel (a measured
# first/further form for the twin). An H200 is as useful as an H100 (its own map is committed).
# Rows are written as they are measured (a part cut by its timeout keeps them); every row carries the GPU
# name, clocks, torch / CUDA / NCCL versions (shapeprobe's env columns); host.txt the CPU (lscpu).
# Exits 0 doing nothing without a GPU unless S17SRV_DEVICE=cpu (the CPU dry run).
# CPU dry run: PYTHON=... S17SRV_DEVICE=cpu S17SRV_MODEL=tiny S17SRV_SHORT=1 (tests/real/test_real_campaign_s17srv.py)
set -u
OUT=${1:?usage: real/campaigns/s17srv.sh OUTDIR}
DIR="$OUT/s17srv"
PY=${PYTHON:-python3}
DEVICE=${S17SRV_DEVICE:-auto}
MODEL=${S17SRV_MODEL:-v3-slice-2l}
BUDGET_S=${S17SRV_BUDGET_S:-120}
if [ -n "${S17SRV_SHORT:-}" ]; then NSIZES=24; MAXSZ=24; SP_S=5
else NSIZES=2048; MAXSZ=2048; SP_S=38; fi
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
if [ "$NGPU" -lt 1 ] && [ "$DEVICE" != cpu ]; then echo "s17srv: no GPU, nothing run"; exit 0; fi
mkdir -p "$DIR"
{ echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null; } > "$DIR/host.txt" 2>&1

SECONDS=0
# a part's timeout: its own, cut to what is left of the campaign's budget (at least 5 s)
left() { local t=$1 rest=$((BUDGET_S - SECONDS - 2)); [ "$rest" -lt "$t" ] && t=$rest; [ "$t" -lt 5 ] && t=5; echo "$t"; }
{
  echo "s17srv start $(date -u +%FT%TZ), $NGPU GPU(s), GPU $ONE_GPU, budget ${BUDGET_S} s"
  nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,power.limit --format=csv 2>/dev/null || true
  for part in tshuf tasc; do
    order=shuffled; [ "$part" = tasc ] && order=ascending
    mkdir -p "$DIR/$part"
    t=$(left 45)
    CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$t" "$PY" -m real.serve.shapeprobe --out "$DIR/$part" --device "$DEVICE" \
      --model "$MODEL" --sizes "$NSIZES" --max-size "$MAXSZ" --seconds "$SP_S" --order "$order" --together \
      > "$DIR/$part/log.txt" 2>&1
    echo "$part exit $? at $(date -u +%FT%TZ) (timeout $t s)"
    tail -n 1 "$DIR/$part/log.txt"
  done
  echo "s17srv end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | tee "$DIR/log.txt"

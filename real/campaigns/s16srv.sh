#!/usr/bin/env bash
# Where does a first-met batch size's cost fall along M? (issue 15, branch s16srv; about 90-130 s on one
# GPU; every part's timeout is cut to what is left of a 150 s budget):
#   real/campaigns/s16srv.sh OUTDIR
# Why: real/serve's eager prompt iterations of a flat size the process never ran pay a one-off host cost
# that the engine fit carries as new_size_s (an exact new size) and new_bin_s (a new 16-token bin). s11srv
# found the exact size's part to be cuBLASLt's heuristics look-ups (+1.25 ms one GPU, +1.6 ms EP2) and the
# bin's (+8-11 ms, fading as the process meets sizes) a GEMM configuration used for the first time; s11srv2
# ruled out lazy module loading. s16srv (docs/notes/s16srv_rule.md) held new_size_s at the measured look-up
# cost and failed its rule: the EP2 fit runs' first short-prompt runs pay 3-6 ms per exact new size, more
# than the look-ups, and neither a 16-token bin nor a fade with sizes met separates it from the run's host
# phase. If the cost is per cuBLAS configuration first used, it falls only at the sizes where a weight's
# configuration changes (fixed boundaries in M of each (n, k)), which the twin could carry as a measured
# map instead of 16-token bins.
# Parts (one GPU, one after the other, each a fresh process; real/serve/shapeprobe.py, every 2-D weight of
# v3-slice-2l as F.linear at M = 1..2048, first call then repeat, host time of each call):
#   asc   sizes ascending  -> OUTDIR/s16srv/asc/shapeprobe.csv   (timeout 45 s)
#   desc  sizes descending -> OUTDIR/s16srv/desc/shapeprobe.csv  (timeout 45 s)
#   shuf  sizes shuffled   -> OUTDIR/s16srv/shuf/shapeprobe.csv  (timeout 45 s)
# What it decides: excess (first - repeat) only at a few M per weight, at the same M ascending and
# descending (the boundaries), with the shuffled sweep paying it once per region: configurations first
# used (a map of regions per weight for the twin); excess at every M alike: per-size look-ups only.
# Rows are written as they are measured (a part cut by its timeout keeps them); every row carries the GPU
# name, clocks, torch / CUDA / NCCL versions (shapeprobe's env columns); host.txt the CPU (lscpu).
# Exits 0 doing nothing without a GPU unless S16SRV_DEVICE=cpu (the CPU dry run).
# CPU dry run: PYTHON=... S16SRV_DEVICE=cpu S16SRV_MODEL=tiny S16SRV_SHORT=1 (tests/real/test_real_campaign_s16srv.py)
set -u
OUT=${1:?usage: real/campaigns/s16srv.sh OUTDIR}
DIR="$OUT/s16srv"
PY=${PYTHON:-python3}
DEVICE=${S16SRV_DEVICE:-auto}
MODEL=${S16SRV_MODEL:-v3-slice-2l}
BUDGET_S=${S16SRV_BUDGET_S:-150}
PARTS=" ${S16SRV_PARTS:-asc desc shuf} "
if [ -n "${S16SRV_SHORT:-}" ]; then NSIZES=24; MAXSZ=24; SP_S=5
else NSIZES=2048; MAXSZ=2048; SP_S=38; fi
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
if [ "$NGPU" -lt 1 ] && [ "$DEVICE" != cpu ]; then echo "s16srv: no GPU, nothing run"; exit 0; fi
mkdir -p "$DIR"
{ echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null; } > "$DIR/host.txt" 2>&1

SECONDS=0
# a part's timeout: its own, cut to what is left of the campaign's budget (at least 5 s)
left() { local t=$1 rest=$((BUDGET_S - SECONDS - 2)); [ "$rest" -lt "$t" ] && t=$rest; [ "$t" -lt 5 ] && t=5; echo "$t"; }
{
  echo "s16srv start $(date -u +%FT%TZ), $NGPU GPU(s), GPU $ONE_GPU, budget ${BUDGET_S} s"
  nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,power.limit --format=csv 2>/dev/null || true
  for part in asc desc shuf; do
    [[ "$PARTS" == *" $part "* ]] || continue
    order=shuffled; [ "$part" = asc ] && order=ascending; [ "$part" = desc ] && order=descending
    mkdir -p "$DIR/$part"
    t=$(left 45)
    CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$t" "$PY" -m real.serve.shapeprobe --out "$DIR/$part" --device "$DEVICE" \
      --model "$MODEL" --sizes "$NSIZES" --max-size "$MAXSZ" --seconds "$SP_S" --order "$order" --linear-only \
      > "$DIR/$part/log.txt" 2>&1
    echo "$part exit $? at $(date -u +%FT%TZ) (timeout $t s)"
    tail -n 1 "$DIR/$part/log.txt"
  done
  echo "s16srv end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | tee "$DIR/log.txt"

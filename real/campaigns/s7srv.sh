#!/usr/bin/env bash
# Low-load serving runs for the engine fit's per-iteration spread (issue 15, branch s7srv), on a
# 2-GPU host, 150 s in all:
#   real/campaigns/s7srv.sh OUTDIR
# 1. one GPU (GPU 0): plan gpu1-lowload (v3-slice-2l, BF16, CUDA-graph decode), 7 fit and 2 held-out runs at low
#    load of 3-7 s each after an untimed warm-up and graph capture (timeout 85 s);
# 2. two GPUs: plan ep2-lowload (expert parallel over both, data-parallel attention), 5 fit runs and 1 held-out
#    run of 3-6 s (timeout 60 s).
# Fit runs feed the engine fit; held-out runs (new configurations) check it; plans gpu1/ep2 held-out runs stay unseen.
# Writes OUTDIR/s7srv/{gpu1,ep2}/serve_{load,requests,iterations}.csv + env.json, the merged
# families in OUTDIR/s7srv/, and log.txt. A part cut by its timeout keeps the runs it finished.
# CPU dry run (the test suite does this): PYTHON=... S7_DEVICE=cpu S7_PLAN1=tiny S7_PLAN2=tiny-ep2
set -u
OUT=${1:?usage: real/campaigns/s7srv.sh OUTDIR}
DIR="$OUT/s7srv"
mkdir -p "$DIR/gpu1" "$DIR/ep2"
PY=${PYTHON:-python3}
DEVICE=${S7_DEVICE:-auto}
PLAN1=${S7_PLAN1:-gpu1-lowload}
PLAN2=${S7_PLAN2:-ep2-lowload}
export PYTHONUNBUFFERED=1
{
  echo "s7srv start $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,power.limit --format=csv 2>/dev/null || true
  CUDA_VISIBLE_DEVICES=${S7_GPU1_DEVICES:-0} timeout 85 "$PY" -m real.serve --out "$DIR/gpu1" \
    --plan "$PLAN1" --device "$DEVICE" --budget-s 62
  echo "gpu1 exit $? at $(date -u +%FT%TZ)"
  timeout 60 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m real.serve \
    --out "$DIR/ep2" --plan "$PLAN2" --device "$DEVICE" --budget-s 42
  echo "ep2 exit $? at $(date -u +%FT%TZ)"
  "$PY" -c "import sys; from real.serve.records import merge; print('merged', merge(sys.argv[2:], sys.argv[1]))" \
    "$DIR" "$DIR/gpu1" "$DIR/ep2"
  echo "s7srv end $(date -u +%FT%TZ)"
} 2>&1 | tee "$DIR/log.txt"

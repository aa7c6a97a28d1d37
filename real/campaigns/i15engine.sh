#!/usr/bin/env bash
# Serving-engine load campaign (issue 15), on a 2-GPU host, 150 s in all:
#   real/campaigns/i15engine.sh OUTDIR
# 1. one GPU (GPU 0): plan gpu1 (v3-slice-2l, BF16, CUDA-graph decode), 12 load runs of 2.5 s each
#    after an untimed warm-up and graph capture (timeout 75 s);
# 2. two GPUs: plan ep2 (expert parallel over both, data-parallel attention), 6 runs of 4 s
#    (timeout 70 s).
# Writes OUTDIR/i15engine/{gpu1,ep2}/serve_{load,requests,iterations}.csv + env.json, the merged
# families in OUTDIR/i15engine/, and log.txt. A part cut by its timeout keeps the runs it finished.
# CPU dry run (the test suite does this): PYTHON=... I15_DEVICE=cpu I15_PLAN1=tiny I15_PLAN2=tiny-ep2
set -u
OUT=${1:?usage: real/campaigns/i15engine.sh OUTDIR}
DIR="$OUT/i15engine"
mkdir -p "$DIR/gpu1" "$DIR/ep2"
PY=${PYTHON:-python3}
DEVICE=${I15_DEVICE:-auto}
PLAN1=${I15_PLAN1:-gpu1}
PLAN2=${I15_PLAN2:-ep2}
export PYTHONUNBUFFERED=1
{
  echo "i15engine start $(date -u +%FT%TZ)"
  nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,power.limit --format=csv 2>/dev/null || true
  CUDA_VISIBLE_DEVICES=${I15_GPU1_DEVICES:-0} timeout 75 "$PY" -m real.serve --out "$DIR/gpu1" \
    --plan "$PLAN1" --device "$DEVICE" --budget-s 60
  echo "gpu1 exit $? at $(date -u +%FT%TZ)"
  timeout 70 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m real.serve \
    --out "$DIR/ep2" --plan "$PLAN2" --device "$DEVICE" --budget-s 50
  echo "ep2 exit $? at $(date -u +%FT%TZ)"
  "$PY" -c "import sys; from real.serve.records import merge; print('merged', merge(sys.argv[2:], sys.argv[1]))" \
    "$DIR" "$DIR/gpu1" "$DIR/ep2"
  echo "i15engine end $(date -u +%FT%TZ)"
} 2>&1 | tee "$DIR/log.txt"

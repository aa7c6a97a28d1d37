#!/usr/bin/env bash
# Does real/serve's one-GPU eager prompt iteration get faster as its process runs prompt iterations,
# beyond the first-met sizes the serving twin tracks? (issue 15, branch s12srv; one GPU, about 40-60 s,
# budget 90 s; on a 2-GPU host GPU 0 alone):
#   real/campaigns/s12srv.sh OUTDIR
# Plan gpu1-repeat (real/serve/plans.py): after the plan's untimed warm-up and graph capture, held-out
# g1lo-poisson-r30-short's request stream (seed 18) four times back to back in one process, then once at
# r70's load (3 s of load each; each its configuration's split: r30 held out, r70 fit), with each iteration's host / GPU
# split, CPU ids and SM clock (--timing). Read: the prompt iterations' measured / predicted level per
# repeat (calibration/serve_engine_fit design + the committed real-serve-<gpu>-ep1 table): still falling
# over repeats 2-4 (every size already run) = the process warming up; flat from repeat 2 = first-met
# sizes alone; unordered spread = run-to-run noise of the size the held-out misses show (1.04-1.18x).
# Writes OUTDIR/s12srv/gpu1/serve_{load,requests,iterations}.csv + env.json and OUTDIR/s12srv/log.txt;
# a run cut by the timeout keeps the runs already finished.
# CPU dry run (the test suite does this): PYTHON=... S12_DEVICE=cpu S12_PLAN=tiny-repeat
set -u
OUT=${1:?usage: real/campaigns/s12srv.sh OUTDIR}
DIR="$OUT/s12srv"
mkdir -p "$DIR/gpu1"
PY=${PYTHON:-python3}
DEVICE=${S12_DEVICE:-auto}
PLAN=${S12_PLAN:-gpu1-repeat}
BUDGET_S=${S12_BUDGET_S:-90}
export PYTHONUNBUFFERED=1
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
{
  echo "s12srv start $(date -u +%FT%TZ), $NGPU GPU(s), one-GPU part on $ONE_GPU, plan $PLAN, budget ${BUDGET_S} s"
  nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,power.limit --format=csv 2>/dev/null || true
  # no run starts after BUDGET_S - 15 s; the hard timeout leaves the finished runs' rows
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$BUDGET_S" "$PY" -m real.serve --out "$DIR/gpu1" \
    --plan "$PLAN" --device "$DEVICE" --budget-s $((BUDGET_S - 15)) --timing
  echo "gpu1 exit $? at $(date -u +%FT%TZ)"
  echo "s12srv end $(date -u +%FT%TZ)"
} 2>&1 | tee "$DIR/log.txt"

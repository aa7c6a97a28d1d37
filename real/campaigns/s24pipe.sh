#!/usr/bin/env bash
# Session s24pipe (issue 15; docs/notes/s24pipe_rule.md, committed before this ran): fresh held-out records for the
# eager serving iteration priced as a launch/kernel pipeline. One GPU, about 65 s (hard caps 20 + 2 x 38 s).
#   real/campaigns/s24pipe.sh OUTDIR
# Part 1 (fresh, reported beside, never a criterion): real/serve/eagerhost.py on bench-small (no load run served it):
#   Engine.step at GPU1's settings on eagerhost's compositions, three rounds, the probe around them, the aten
#   operators a step dispatches counted -> OUTDIR/s24pipe/eager/eager_host.csv + env.json (host_s, duration_s: the
#   GPU tail after the last launch of a model no fit saw).
# Parts 2-3 (fresh, held out: the judged set E): real/serve plans gpu1-s24p-bench, gpu1-s24p-mixtral
#   (real/serve/plans.py S24P_PLANS: bench-small at Poisson 20/s and closed loops of 16 and 24; mixtral-mla-slice at
#   Poisson 20/s and closed loops of 12 and 32, configurations no record holds; the s21srvnew engine and mix, seeds
#   91-96), the host probe around every run, timing on -> OUTDIR/s24pipe/<model>/serve_{load,requests,iterations}.csv
#   + env.json.
# Also OUTDIR/s24pipe/host.txt (nproc, lscpu, nvidia-smi clocks) and log.txt. Every row carries GPU name, clocks,
# torch / CUDA / NCCL versions. Exits 0 doing nothing without a GPU.
# CPU dry run: S24P_DEVICE=cpu (the tiny model through every part: tests/real/test_real_campaign_s24pipe.py).
set -u
OUT=${1:?usage: real/campaigns/s24pipe.sh OUTDIR}
DIR="$OUT/s24pipe"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
DEVICE=${S24P_DEVICE:-auto}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
if [ "$DEVICE" = cpu ]; then
  EAGER_MODELS=tiny; PLANS="tiny-new"; EAGER_S=${S24P_PART_S:-120}; PART_S=${S24P_PART_S:-120}; REPS=1
else
  EAGER_MODELS=bench-small; PLANS="gpu1-s24p-bench gpu1-s24p-mixtral"; EAGER_S=20; PART_S=38; REPS=3
fi
{
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== loadavg"; cat /proc/loadavg
  echo "== nvidia-smi"; nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,clocks.max.sm,power.limit,persistence_mode --format=csv 2>/dev/null
} > "$DIR/host.txt" 2>&1
SECONDS=0
{
  echo "s24pipe start $(date -u +%FT%TZ), $NGPU GPU(s), GPU $ONE_GPU, eager models $EAGER_MODELS, plans $PLANS"
  if [ "$NGPU" -ge 1 ] || [ "$DEVICE" = cpu ]; then
    CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$EAGER_S" "$PY" -m real.serve.eagerhost --out "$DIR/eager" \
      --models "$EAGER_MODELS" --device "$DEVICE" --reps "$REPS" --budget-s $((EAGER_S - 12))
    echo "eager exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
    for plan in $PLANS; do
      model=$("$PY" -c "from real.serve.plans import PLANS; print(PLANS['$plan'].model)")
      CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$PART_S" "$PY" -m real.serve --out "$DIR/$model" --plan "$plan" \
        --device "$DEVICE" --budget-s $((PART_S - 12)) --timing --host-probe
      echo "$plan exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
    done
  else
    echo "skipped: no GPU"
  fi
  echo "s24pipe end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | tee "$DIR/log.txt"

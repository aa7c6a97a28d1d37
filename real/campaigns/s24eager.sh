#!/usr/bin/env bash
# Session s24eager (issue 15; docs/notes/s24eager_rule.md, committed before this ran): the serving engine's eager
# iteration host time per model, and fresh held-out load runs of models no record holds. One GPU, about 100 s
# (hard caps 45 + 2 x 42 s).
#   real/campaigns/s24eager.sh OUTDIR
# Part 1 (fitting): real/serve/eagerhost.py on the serve-fit models (v3-slice-2l and the three s21srvnew models):
#   Engine.step at GPU1's settings on compositions of 1-6 prompts of 192-768 tokens beside 0-48 decode rows, four
#   rounds each, the host probe right before and after each model's rounds, the operators a step dispatches counted
#   -> OUTDIR/s24eager/fit/eager_host.csv + env.json.
# Parts 2-3 (fresh, held out): real/serve plans gpu1-s24-v2lite, gpu1-s24-v3s1l (real/serve/plans.py S24_PLANS:
#   v2-lite-slice and v3-slice-1l, the s21srvnew engine and mix at Poisson 20/s and closed loops of 16 and 24, seeds
#   81-83), the host probe around every run, timing on -> OUTDIR/s24eager/<model>/serve_{load,requests,iterations}.csv
#   + env.json.
# Also OUTDIR/s24eager/host.txt (nproc, lscpu, nvidia-smi clocks) and log.txt. Every row carries GPU name, clocks,
# torch / CUDA / NCCL versions. Exits 0 doing nothing without a GPU.
# CPU dry run: S24_DEVICE=cpu (the tiny model through both parts: tests/real/test_real_campaign_s24eager.py).
set -u
OUT=${1:?usage: real/campaigns/s24eager.sh OUTDIR}
DIR="$OUT/s24eager"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
DEVICE=${S24_DEVICE:-auto}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
if [ "$DEVICE" = cpu ]; then
  FIT_MODELS=tiny; PLANS="tiny-new"; FIT_S=${S24_PART_S:-120}; PART_S=${S24_PART_S:-120}; REPS=1
else
  FIT_MODELS=v3-slice-2l,qwen3moe-mla-slice,qwen2moe-mla-slice,mixtral-mla-slice
  PLANS="gpu1-s24-v2lite gpu1-s24-v3s1l"; FIT_S=45; PART_S=42; REPS=4
fi
{
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== loadavg"; cat /proc/loadavg
  echo "== nvidia-smi"; nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,clocks.max.sm,power.limit,persistence_mode --format=csv 2>/dev/null
} > "$DIR/host.txt" 2>&1
SECONDS=0
{
  echo "s24eager start $(date -u +%FT%TZ), $NGPU GPU(s), GPU $ONE_GPU, fit models $FIT_MODELS, plans $PLANS"
  if [ "$NGPU" -ge 1 ] || [ "$DEVICE" = cpu ]; then
    CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$FIT_S" "$PY" -m real.serve.eagerhost --out "$DIR/fit" \
      --models "$FIT_MODELS" --device "$DEVICE" --reps "$REPS" --budget-s $((FIT_S - 12))
    echo "fit exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
    for plan in $PLANS; do
      model=$("$PY" -c "from real.serve.plans import PLANS; print(PLANS['$plan'].model)")
      CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$PART_S" "$PY" -m real.serve --out "$DIR/$model" --plan "$plan" \
        --device "$DEVICE" --budget-s $((PART_S - 14)) --timing --host-probe
      echo "$plan exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
    done
  else
    echo "skipped: no GPU"
  fi
  echo "s24eager end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | tee "$DIR/log.txt"

#!/usr/bin/env bash
# Session s27serve round 2 (issue 15; docs/notes/s27serve2_rule.md, committed before this ran): set K, fresh held-out
# load runs on one GPU that judge candidate V (a CUDA-graph decode replay's per-operator floor relative to the tables'
# fit model). About 80 s (hard caps 4 x 42 s).
#   real/campaigns/s27serve2.sh OUTDIR
# Parts 1-4 (the judged set K): real/serve plans gpu1-s27k-{bench,v2lite,v3s1l,mixtral} (real/serve/plans.py
#   S27K_PLANS: Poisson 11/s and a closed loop of 6, prompts uniform 256-768, outputs 64-256), without per-iteration
#   timing (the engine's own figures) -> OUTDIR/s27serve2/<model>/serve_{load,requests,iterations}.csv + env.json.
# Every part: the s21srvnew engine, the host probe around every run. Also OUTDIR/s27serve2/host.txt (nproc, lscpu,
# nvidia-smi clocks, topology) and log.txt. Every row carries GPU name, clocks, torch / CUDA / NCCL versions. Exits 0
# doing nothing without a GPU.
# CPU dry run: S27SERVE2_TINY=1 (the tiny model's tiny-new plan into the set's folder).
set -u
OUT=${1:?usage: real/campaigns/s27serve2.sh OUTDIR}
DIR="$OUT/s27serve2"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
if [ "${S27SERVE2_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PARTS="set:tiny-new"; PART_S=${S27SERVE2_PART_S:-120}
else
  DEVICE=auto; PART_S=42
  PARTS="set:gpu1-s27k-bench set:gpu1-s27k-v2lite set:gpu1-s27k-v3s1l set:gpu1-s27k-mixtral"
fi
{
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== loadavg"; cat /proc/loadavg
  echo "== nvidia-smi"; nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,clocks.max.sm,power.limit,persistence_mode --format=csv 2>/dev/null
  echo "== nvidia-smi -q -d CLOCK"; nvidia-smi -q -d CLOCK 2>/dev/null
  echo "== topology"; nvidia-smi topo -m 2>/dev/null
} > "$DIR/host.txt" 2>&1
SECONDS=0
{
  echo "s27serve2 start $(date -u +%FT%TZ), $NGPU GPU(s), GPU $ONE_GPU, parts $PARTS"
  if [ "$NGPU" -ge 1 ] || [ "$DEVICE" = cpu ]; then
    for part in $PARTS; do
      kind=${part%%:*}; plan=${part#*:}
      model=$("$PY" -c "from real.serve.plans import PLANS; print(PLANS['$plan'].model)")
      dest="$DIR/$model"
      CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$PART_S" "$PY" -m real.serve --out "$dest" --plan "$plan" \
        --device "$DEVICE" --budget-s $((PART_S - 6)) --host-probe
      echo "$kind $plan exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
    done
  else
    echo "skipped: no GPU"
  fi
  echo "s27serve2 end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | grep -v '^USDT:' | tee "$DIR/log.txt"

#!/usr/bin/env bash
# Session s28serve round 2 (issue 15; docs/notes/s28serve2_rule.md, committed before this ran): set N, fresh held-out
# load runs on one GPU that judge ADOPT_WARM_PASS_AND_BUDGET (calibration.serve_warm_budget: a warmed engine process has
# met the flat sizes 1..warm_shapes and its token budget's size, not the sizes between; a first-met size between them
# pays the table's first-met terms). About 70 s (hard caps 2 x 50 s).
#   real/campaigns/s28serve2.sh OUTDIR
# Parts set:* (judged): real/serve plans gpu1-s28n-{bench,v2lite} (real/serve/plans.py S28N_PLANS: closed loops of 2
#   and 4 and Poisson 7/s, prompts uniform 240-720, outputs 48-160, 3 s of load, the first run warmed to 672 flat
#   tokens), WITHOUT --timing -> OUTDIR/s28serve2/<model>/serve_{load,requests,iterations}.csv + env.json.
# Every part: the s21srvnew engine, the host probe around every run, one GPU (the first the caller gives; a larger host
# runs it on that GPU alone). Also OUTDIR/s28serve2/host.txt (nproc, lscpu, nvidia-smi clocks, topology) and log.txt.
# Every row carries GPU name, clocks, torch / CUDA / NCCL versions. Exits 0 doing nothing without a GPU.
# CPU dry run: S28SERVE2_TINY=1 (the tiny model's tiny-new plan once into the set's folder).
set -u
OUT=${1:?usage: real/campaigns/s28serve2.sh OUTDIR}
DIR="$OUT/s28serve2"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
if [ "${S28SERVE2_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PARTS="set:tiny-new"; PART_S=${S28SERVE2_PART_S:-120}
else
  DEVICE=auto; PART_S=50
  PARTS="set:gpu1-s28n-bench set:gpu1-s28n-v2lite"
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
  echo "s28serve2 start $(date -u +%FT%TZ), $NGPU GPU(s), GPU $ONE_GPU, parts $PARTS"
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
  echo "s28serve2 end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | grep -v '^USDT:' | tee "$DIR/log.txt"

#!/usr/bin/env bash
# Session s29serve (issue 15; docs/notes/s29serve_rule.md, committed before this ran): set O, fresh held-out load runs
# on one H200 that judge twin.serving.engine.ADOPT_IDLE_WAKE (calibration.serve_idle_wake: after an idle of 100 ms or
# more, the run's first iteration included, a warm-pass size first met pays the first-met terms and a prompt step pays
# the table's idle_prompt_s). About 160 s (hard caps 4 x 60 s).
#   real/campaigns/s29serve.sh OUTDIR
# Parts set:* (judged): real/serve plans gpu1-s29o-{bench,v2lite,v3s1l,mixtral} (real/serve/plans.py S29O_PLANS: a
#   closed loop of 1 and Poisson 3/s and 5/s, prompts uniform 224-608, outputs 40-152, 4 s of load, the first run
#   warmed to 256 flat tokens), WITHOUT --timing -> OUTDIR/s29serve/<model>/serve_{load,requests,iterations}.csv + env.json.
# Every part: the s21srvnew engine, the host probe around every run, one GPU (the first the caller gives; a larger host
# runs it on that GPU alone; judged blind: nothing else on the host). Also OUTDIR/s29serve/host.txt (nproc, lscpu,
# nvidia-smi clocks, topology) and log.txt. Every row carries GPU name, clocks, torch / CUDA / NCCL versions. Exits 0
# doing nothing without a GPU.
# CPU dry run: S29SERVE_TINY=1 (the tiny model's tiny-new plan once into the set's folder).
set -u
OUT=${1:?usage: real/campaigns/s29serve.sh OUTDIR}
DIR="$OUT/s29serve"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
. "$(dirname "$0")/serve_parts.sh"
if [ "${S29SERVE_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PARTS="set:tiny-new"; PART_S=${S29SERVE_PART_S:-120}
else
  DEVICE=auto; PART_S=60
  PARTS="set:gpu1-s29o-bench set:gpu1-s29o-v2lite set:gpu1-s29o-v3s1l set:gpu1-s29o-mixtral"
fi
{
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== loadavg"; cat /proc/loadavg
  echo "== nvidia-smi"; nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,clocks.max.sm,power.limit,persistence_mode --format=csv 2>/dev/null
  echo "== nvidia-smi -q -d CLOCK"; nvidia-smi -q -d CLOCK 2>/dev/null
  echo "== topology"; nvidia-smi topo -m 2>/dev/null
} > "$DIR/host.txt" 2>&1
serve_part() {   # KIND PLAN CAP_S
  local plan=$2 cap=$3 model
  model=$(serve_model "$plan")
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve --out "$DIR/$model" --plan "$plan" \
    --device "$DEVICE" --budget-s $((cap - 6)) --host-probe
}
serve_campaign s29serve "$DIR/log.txt" "$NGPU GPU(s), GPU $ONE_GPU, parts $PARTS" serve_parts "$PARTS"

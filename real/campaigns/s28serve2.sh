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
. "$(dirname "$0")/serve_parts.sh"
if [ "${S28SERVE2_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PARTS="set:tiny-new"; PART_S=${S28SERVE2_PART_S:-120}
else
  DEVICE=auto; PART_S=50
  PARTS="set:gpu1-s28n-bench set:gpu1-s28n-v2lite"
fi
serve_part() {   # KIND PLAN CAP_S
  local plan=$2 cap=$3 model
  model=$(serve_model "$plan")
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve --out "$DIR/$model" --plan "$plan" \
    --device "$DEVICE" --budget-s $((cap - 6)) --host-probe
}
serve_host "$DIR/host.txt" nproc lscpu loadavg smi-nodriver clock topology
serve_campaign s28serve2 "$DIR/log.txt" "$NGPU GPU(s), GPU $ONE_GPU, parts $PARTS" serve_parts "$PARTS"

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
. "$(dirname "$0")/serve_parts.sh"
if [ "${S27SERVE2_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PARTS="set:tiny-new"; PART_S=${S27SERVE2_PART_S:-120}
else
  DEVICE=auto; PART_S=42
  PARTS="set:gpu1-s27k-bench set:gpu1-s27k-v2lite set:gpu1-s27k-v3s1l set:gpu1-s27k-mixtral"
fi
serve_part() {   # KIND PLAN CAP_S
  local plan=$2 cap=$3 model
  model=$(serve_model "$plan")
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve --out "$DIR/$model" --plan "$plan" \
    --device "$DEVICE" --budget-s $((cap - 6)) --host-probe
}
serve_host "$DIR/host.txt" nproc lscpu loadavg smi-nodriver clock topology
serve_campaign s27serve2 "$DIR/log.txt" "$NGPU GPU(s), GPU $ONE_GPU, parts $PARTS" serve_parts "$PARTS"

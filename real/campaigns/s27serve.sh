#!/usr/bin/env bash
# Session s27serve (issue 15; docs/notes/s27serve_rule.md, committed before this ran): set J, fresh held-out load runs on
# one GPU that judge candidate U (a CUDA-graph decode replay priced by its captured operators and rows). About 140 s
# (hard caps 6 x 42 s).
#   real/campaigns/s27serve.sh OUTDIR
# Parts 1-3 (the judged set J): real/serve plans gpu1-s27j-{bench,v2lite,v3s1l} (real/serve/plans.py S27J_PLANS:
#   Poisson 22/s and a closed loop of 18, prompts uniform 160-640, outputs 48-208), WITHOUT --timing (the engine's own
#   figures) -> OUTDIR/s27serve/<model>/serve_{load,requests,iterations}.csv + env.json.
# Parts 4-6 (diagnostic, never judged): the same plans again with --timing (host_s, gpu_s per iteration)
#   -> OUTDIR/s27serve/timing/<model>/...
# Every part: the s21srvnew engine, the host probe around every run. Also OUTDIR/s27serve/host.txt (nproc, lscpu,
# nvidia-smi clocks, topology) and log.txt. Every row carries GPU name, clocks, torch / CUDA / NCCL versions. Exits 0
# doing nothing without a GPU.
# CPU dry run: S27SERVE_TINY=1 (the tiny model's tiny-new plan once into the set's folder and once into timing/).
set -u
OUT=${1:?usage: real/campaigns/s27serve.sh OUTDIR}
DIR="$OUT/s27serve"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
. "$(dirname "$0")/serve_parts.sh"
if [ "${S27SERVE_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PARTS="set:tiny-new timing:tiny-new"; PART_S=${S27SERVE_PART_S:-120}
else
  DEVICE=auto; PART_S=42
  PARTS="set:gpu1-s27j-bench set:gpu1-s27j-v2lite set:gpu1-s27j-v3s1l"
  PARTS="$PARTS timing:gpu1-s27j-bench timing:gpu1-s27j-v2lite timing:gpu1-s27j-v3s1l"
fi
serve_part() {   # KIND PLAN CAP_S
  local kind=$1 plan=$2 cap=$3 model dest extra
  model=$(serve_model "$plan")
  if [ "$kind" = timing ]; then dest="$DIR/timing/$model"; extra="--timing"; else dest="$DIR/$model"; extra=""; fi
  # shellcheck disable=SC2086
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve --out "$dest" --plan "$plan" \
    --device "$DEVICE" --budget-s $((cap - 6)) --host-probe $extra
}
serve_host "$DIR/host.txt" nproc lscpu loadavg smi-nodriver clock topology
serve_campaign s27serve "$DIR/log.txt" "$NGPU GPU(s), GPU $ONE_GPU, parts $PARTS" serve_parts "$PARTS"

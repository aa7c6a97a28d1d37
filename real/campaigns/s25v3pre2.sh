#!/usr/bin/env bash
# Session s25v3pre2 (issue 15; docs/notes/s25v3pre2_rule.md, committed before this ran): set G, fresh held-out load
# records for the eager engine's prompt terms on models whose head-layers differ from the one-GPU tables' fit model.
# One GPU, about 95 s (hard caps 3 x 42 s).
#   real/campaigns/s25v3pre2.sh OUTDIR
# Parts 1-3 (fresh, held out: the judged set G): real/serve plans gpu1-s25w-v3s2l, gpu1-s25w-qwen3moe,
#   gpu1-s25w-mixtral (real/serve/plans.py S25W_PLANS: v3-slice-2l at Poisson 14/s and a closed loop of 10,
#   qwen3moe-mla-slice at Poisson 18/s and a closed loop of 12, mixtral-mla-slice at Poisson 18/s and a closed loop
#   of 10, prompts uniform 448-1088 and outputs 24-120 tokens (lengths no load record holds); the s21srvnew engine,
#   each model's first run warmed to 1152 flat tokens; seeds 111-116), the host probe around every run, timing on
#   -> OUTDIR/s25v3pre2/<model>/serve_{load,requests,iterations}.csv + env.json.
# Also OUTDIR/s25v3pre2/host.txt (nproc, lscpu, nvidia-smi clocks) and log.txt. Every row carries GPU name, clocks,
# torch / CUDA / NCCL versions. Exits 0 doing nothing without a GPU.
# CPU dry run: S25W_DEVICE=cpu (the tiny model's tiny-new plan once, a few seconds).
set -u
OUT=${1:?usage: real/campaigns/s25v3pre2.sh OUTDIR}
DIR="$OUT/s25v3pre2"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
DEVICE=${S25W_DEVICE:-auto}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
. "$(dirname "$0")/serve_parts.sh"
if [ "$DEVICE" = cpu ]; then
  PLANS="tiny-new"; PART_S=${S25W_PART_S:-120}
else
  PLANS="gpu1-s25w-v3s2l gpu1-s25w-qwen3moe gpu1-s25w-mixtral"; PART_S=42
fi
serve_part() {   # KIND PLAN CAP_S
  local plan=$2 cap=$3 model
  model=$(serve_model "$plan")
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve --out "$DIR/$model" --plan "$plan" \
    --device "$DEVICE" --budget-s $((cap - 6)) --timing --host-probe
}
serve_host "$DIR/host.txt" nproc lscpu loadavg smi-nodriver
serve_campaign s25v3pre2 "$DIR/log.txt" "$NGPU GPU(s), GPU $ONE_GPU, plans $PLANS" serve_parts "$PLANS"

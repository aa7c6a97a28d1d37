#!/usr/bin/env bash
# Session s26start (issue 15; docs/notes/s26start_rule.md, committed before this ran): set H, fresh held-out load
# records for the eager prompt step's start and closing sync on models no set E-G held.
# One GPU, about 95 s (hard caps 3 x 42 s).
#   real/campaigns/s26start.sh OUTDIR
# Parts 1-3 (fresh, held out: the judged set H): real/serve plans gpu1-s26h-qwen2moe, gpu1-s26h-v2lite,
#   gpu1-s26h-v3s1l (real/serve/plans.py S26H_PLANS: qwen2moe-mla-slice at Poisson 14/s and a closed loop of 10,
#   v2-lite-slice and v3-slice-1l at Poisson 18/s and a closed loop of 12, prompts uniform 320-960 and outputs 20-100
#   tokens (lengths no load record holds); the s21srvnew engine, each model's first run warmed to 1088 flat tokens;
#   seeds 121-126), the host probe around every run, timing on
#   -> OUTDIR/s26start/<model>/serve_{load,requests,iterations}.csv + env.json.
# Also OUTDIR/s26start/host.txt (nproc, lscpu, nvidia-smi clocks) and log.txt. Every row carries GPU name, clocks,
# torch / CUDA / NCCL versions. Exits 0 doing nothing without a GPU.
# CPU dry run: S26H_DEVICE=cpu (the tiny model's tiny-new plan once, a few seconds).
set -u
OUT=${1:?usage: real/campaigns/s26start.sh OUTDIR}
DIR="$OUT/s26start"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
DEVICE=${S26H_DEVICE:-auto}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
. "$(dirname "$0")/serve_parts.sh"
if [ "$DEVICE" = cpu ]; then
  PLANS="tiny-new"; PART_S=${S26H_PART_S:-120}
else
  PLANS="gpu1-s26h-qwen2moe gpu1-s26h-v2lite gpu1-s26h-v3s1l"; PART_S=42
fi
serve_part() {   # KIND PLAN CAP_S
  local plan=$2 cap=$3 model
  model=$(serve_model "$plan")
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve --out "$DIR/$model" --plan "$plan" \
    --device "$DEVICE" --budget-s $((cap - 6)) --timing --host-probe
}
serve_host "$DIR/host.txt" nproc lscpu loadavg smi-nodriver clock topology
serve_campaign s26start "$DIR/log.txt" "$NGPU GPU(s), GPU $ONE_GPU, plans $PLANS" serve_parts "$PLANS"

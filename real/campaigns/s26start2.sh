#!/usr/bin/env bash
# Session s26start round 2 (issue 15; docs/notes/s26start2_rule.md, committed before this ran): one delivery on one GPU
# of (a) fitting load runs whose iterations fit the eager prompt step's host terms inside the serving loop and (b) set I,
# fresh held-out load runs that judge them. One GPU, about 160 s (hard caps 7 x 42 s).
#   real/campaigns/s26start2.sh OUTDIR
# Parts 1-4 (fitting, split "fit"): real/serve plans gpu1-s26f-{qwen3moe,qwen2moe,mixtral,v3s2l} (real/serve/plans.py
#   S26F_PLANS: Poisson 16/s and a closed loop of 8, prompts uniform 128-1152, outputs 16-128)
#   -> OUTDIR/s26start2/fit/<model>/serve_{load,requests,iterations}.csv + env.json.
# Parts 5-7 (fresh, held out: the judged set I): plans gpu1-s26i-{v2lite,v3s1l,bench} (S26I_PLANS: Poisson 26/s and a
#   closed loop of 14, prompts uniform 96-480, outputs 40-176) -> OUTDIR/s26start2/<model>/...
# Every part: the s21srvnew engine, the host probe around every run, timing on (host_s, gpu_s per iteration).
# Also OUTDIR/s26start2/host.txt (nproc, lscpu, nvidia-smi clocks, topology) and log.txt. Every row carries GPU name,
# clocks, torch / CUDA / NCCL versions. Exits 0 doing nothing without a GPU.
# CPU dry run: S26START2_TINY=1 (the tiny model's tiny-new plan once into fit/ and once into the set's folder).
set -u
OUT=${1:?usage: real/campaigns/s26start2.sh OUTDIR}
DIR="$OUT/s26start2"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
. "$(dirname "$0")/serve_parts.sh"
if [ "${S26START2_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PARTS="fit:tiny-new set:tiny-new"; PART_S=${S26START2_PART_S:-120}
else
  DEVICE=auto; PART_S=42
  PARTS="fit:gpu1-s26f-qwen3moe fit:gpu1-s26f-qwen2moe fit:gpu1-s26f-mixtral fit:gpu1-s26f-v3s2l"
  PARTS="$PARTS set:gpu1-s26i-v2lite set:gpu1-s26i-v3s1l set:gpu1-s26i-bench"
fi
serve_part() {   # KIND PLAN CAP_S
  local kind=$1 plan=$2 cap=$3 model dest
  model=$(serve_model "$plan")
  if [ "$kind" = fit ]; then dest="$DIR/fit/$model"; else dest="$DIR/$model"; fi
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve --out "$dest" --plan "$plan" \
    --device "$DEVICE" --budget-s $((cap - 6)) --timing --host-probe
}
serve_host "$DIR/host.txt" nproc lscpu loadavg smi-nodriver clock topology
serve_campaign s26start2 "$DIR/log.txt" "$NGPU GPU(s), GPU $ONE_GPU, parts $PARTS" serve_parts "$PARTS"

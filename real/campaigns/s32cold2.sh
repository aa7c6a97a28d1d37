#!/usr/bin/env bash
# Session s32cold, call 2 (issue 15; docs/notes/s32cold_rule.md, committed before this ran): set K, fresh held-out load
# runs on one H200 that judge twin.serving.engine.ADOPT_COLD_SIZES (calibration.s32cold: a warmed process's first sizes
# above its warm pass pay shapes x shape_s x h / (h + sizes met), from the s32cold probe). About 120 s (caps 4 x 60 s,
# the whole at 250 s).
#   real/campaigns/s32cold2.sh OUTDIR
# Parts, each its own engine process on one GPU, in this order: set:gpu1-s32k-<short> (real/serve/plans.py S32K_PLANS:
# Poisson 2.25/s first, warmed to 320 flat tokens, a closed loop of 11, Poisson 2.75/s late, prompts uniform 336-1008,
# outputs 20-104, 5 s of load a run) for mixtral-mla-slice, qwen3moe-mla-slice, v3-slice-1l, v3-slice-2l, WITHOUT
# --timing, with the host probe (as set Q ran) -> OUTDIR/s32cold2/<model>/serve_{load,requests,iterations}.csv + env.json
# (held out: judged). Also host.txt (nproc, lscpu, nvidia-smi clocks, topology) and s32cold2.log. Every row carries GPU
# name, clocks, power limit, driver, torch / CUDA / NCCL versions. One GPU (the first the caller gives; judged blind:
# nothing else on the host). Exits 0 doing nothing without a GPU.
# CPU dry run: S32COLD2_TINY=1 (the tiny-new plan as one set part); S32COLD2_TIMEOUT_SCALE scales the caps.
set -u
OUT=${1:?usage: real/campaigns/s32cold2.sh OUTDIR}
DIR="$OUT/s32cold2"
mkdir -p "$DIR"
PY=${PY:-${PYTHON:-python3}}
SCALE=${S32COLD2_TIMEOUT_SCALE:-1}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
. "$(dirname "$0")/serve_parts.sh"
if [ "${S32COLD2_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PART_S=$((60 * SCALE)); TOTAL_S=$((200 * SCALE)); PARTS="set:tiny-new"
else
  DEVICE=auto; PART_S=$((60 * SCALE)); TOTAL_S=$((250 * SCALE)); PARTS=""
  for short in mixtral qwen3moe v3s1l v3s2l; do PARTS="$PARTS set:gpu1-s32k-$short"; done
  PARTS="${PARTS# }"
fi
serve_part() {   # KIND PLAN CAP_S
  local model
  model=$(serve_model "$2")
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$3" "$PY" -m real.serve --out "$DIR/$model" --plan "$2" \
    --device "$DEVICE" --budget-s $(($3 - 6)) --host-probe
}
serve_host "$DIR/host.txt"
serve_campaign s32cold2 "$DIR/s32cold2.log" "$NGPU GPU(s), GPU $ONE_GPU, parts $PARTS" serve_parts "$PARTS"

#!/usr/bin/env bash
# Session s33loop (issue 15; docs/notes/s33loop.md): set T, diagnostic / fitting records only, judges nothing (no rule:
# the one candidate the records suggested, the eager path's warmth ADOPT_EAGER_WARMTH, already loses checks on seen sets
# G, H and I, so no fresh set judges it). What set T asks: does the engine's eager host run faster in a closed loop than
# in a Poisson run against the launch probe taken around each run (the two loops issue 15 over-prices ran their eager
# steps 9-24% faster than their probes said)? About 110 s (each part capped at 55 s, the whole at 170 s).
#   real/campaigns/s33loop.sh OUTDIR
# Parts, each its own engine process on one GPU, in this order (real/serve/plans.py S33T_PLANS):
#   gpu1-s33t-v2lite, gpu1-s33t-v3s1l, gpu1-s33t-bench: set J's engine, prompts 152-632 and outputs 44-204 (warmed to 704), four
#   runs in turn: Poisson 19/s, closed c15, Poisson 19/s (another stream), closed c8; seeds 421-432; --timing (host_s,
#   gpu_s per iteration) and --host-probe (the launch probe before and after every run)
# -> OUTDIR/s33loop/<model>/serve_*.csv + env.json, host.txt (nproc, lscpu, nvidia-smi clocks, topology), s33loop.log.
# Every row carries GPU name, clocks, power limit, driver, torch / CUDA / NCCL versions. One GPU (the first the caller
# gives); may share the host with another lane's part on another GPU (nothing here is judged blind). Exits 0 doing
# nothing without a GPU. Any card: filed by card. CPU dry run: S33LOOP_TINY=1 (the tiny-new plan, one part);
# S33LOOP_TIMEOUT_SCALE scales the caps.
set -u
OUT=${1:?usage: real/campaigns/s33loop.sh OUTDIR}
DIR="$OUT/s33loop"
mkdir -p "$DIR"
PY=${PY:-${PYTHON:-python3}}
SCALE=${S33LOOP_TIMEOUT_SCALE:-1}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
. "$(dirname "$0")/serve_parts.sh"
if [ "${S33LOOP_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PART_S=$((60 * SCALE)); TOTAL_S=$((200 * SCALE))
  PARTS="tiny-new"
else
  DEVICE=auto; PART_S=$((55 * SCALE)); TOTAL_S=$((170 * SCALE))
  PARTS="gpu1-s33t-v2lite gpu1-s33t-v3s1l gpu1-s33t-bench"
fi
serve_part() {   # KIND PLAN CAP_S
  local model
  model=$(serve_model "$2")
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$3" "$PY" -m real.serve --out "$DIR/$model" \
    --plan "$2" --device "$DEVICE" --budget-s $(($3 - 6)) --timing --host-probe
}
serve_host "$DIR/host.txt"
serve_campaign s33loop "$DIR/s33loop.log" "$NGPU GPU(s), GPU $ONE_GPU, parts $PARTS" serve_parts "$PARTS"

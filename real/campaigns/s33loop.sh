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
if [ "${S33LOOP_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PART_S=$((60 * SCALE)); TOTAL_S=$((200 * SCALE))
  PARTS="tiny-new"
else
  DEVICE=auto; PART_S=$((55 * SCALE)); TOTAL_S=$((170 * SCALE))
  PARTS="gpu1-s33t-v2lite gpu1-s33t-v3s1l gpu1-s33t-bench"
fi
{
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== loadavg"; cat /proc/loadavg
  echo "== nvidia-smi"; nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,clocks.max.sm,power.limit,persistence_mode,driver_version --format=csv 2>/dev/null
  echo "== nvidia-smi -q -d CLOCK"; nvidia-smi -q -d CLOCK 2>/dev/null
  echo "== topology"; nvidia-smi topo -m 2>/dev/null
} > "$DIR/host.txt" 2>&1
SECONDS=0
{
  echo "s33loop start $(date -u +%FT%TZ), $NGPU GPU(s), GPU $ONE_GPU, parts $PARTS"
  if [ "$NGPU" -ge 1 ] || [ "$DEVICE" = cpu ]; then
    for plan in $PARTS; do
      left=$((TOTAL_S - SECONDS))
      if [ "$left" -lt 20 ]; then echo "$plan skipped: ${SECONDS} s of ${TOTAL_S} spent"; continue; fi
      cap=$(( left < PART_S ? left : PART_S ))
      model=$("$PY" -c "from real.serve.plans import PLANS; print(PLANS['$plan'].model)")
      CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve --out "$DIR/$model" \
        --plan "$plan" --device "$DEVICE" --budget-s $((cap - 6)) --timing --host-probe
      echo "$plan exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
    done
  else
    echo "skipped: no GPU"
  fi
  echo "s33loop end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | grep -v '^USDT:' | tee "$DIR/s33loop.log"

#!/usr/bin/env bash
# Session s32cold (issue 15; docs/notes/s32cold.md): what a serving process's first prompt steps pay (set Q's early
# Poisson runs: prompt steps 1.2-2x the same model's later new-size steps). A probe on one H200: fitting records only,
# judges nothing. About 220 s (each part capped at 75 s, the whole at 280 s).
#   real/campaigns/s32cold.sh OUTDIR
# Parts, each its own engine process on one GPU, plans gpu1-s32c-* (real/serve/plans.py S32C_PLANS: set Q's lengths
# and rate, Poisson 2.5/s, 5 s of load: `cold` the process's first run warmed to 288 flat tokens, `fresh` a new stream,
# `again` cold's stream once more), in this order:
#   trace:<plan>        --kernel-trace (real/serve/coldtrace.py): per iteration the kernels first launched, the CUDA
#                       runtime calls (launches and their slow ones, cudaMalloc), GEMM host time; profiled
#   timed:<plan>        as set Q ran (--host-probe) plus --stall-trace (per iteration outside its timed window:
#                       cudaMalloc / segment counts, GC, page faults, context switches)
#   eager:<plan>        the same under CUDA_MODULE_LOADING=EAGER (every module loaded when the context is made)
#   trace-eager:<plan>  the trace under CUDA_MODULE_LOADING=EAGER
#   timed:gpu1-s32c-bench-w1024   the first run warmed to 1,024 flat tokens (every size of the stream met first)
#   timed:gpu1-s32c-v2lite        a second model
# -> OUTDIR/s32cold/<part>/<model>/serve_*.csv + env.json, host.txt (nproc, lscpu, nvidia-smi clocks, topology),
# s32cold.log. Every row carries GPU name, clocks, power limit, driver, torch / CUDA / NCCL versions. One GPU (the first
# the caller gives; on a larger host it runs on that GPU alone). Exits 0 doing nothing without a GPU.
# CPU dry run: S32COLD_TINY=1 (the tiny-new plan as a trace part); S32COLD_TIMEOUT_SCALE scales caps.
set -u
OUT=${1:?usage: real/campaigns/s32cold.sh OUTDIR}
DIR="$OUT/s32cold"
mkdir -p "$DIR"
PY=${PY:-${PYTHON:-python3}}
SCALE=${S32COLD_TIMEOUT_SCALE:-1}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
if [ "${S32COLD_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PART_S=$((60 * SCALE)); TOTAL_S=$((200 * SCALE))
  PARTS="trace:tiny-new"
else
  DEVICE=auto; PART_S=$((75 * SCALE)); TOTAL_S=$((280 * SCALE))
  PARTS="trace:gpu1-s32c-bench timed:gpu1-s32c-bench eager:gpu1-s32c-bench trace-eager:gpu1-s32c-bench"
  PARTS="$PARTS timed:gpu1-s32c-bench-w1024 timed:gpu1-s32c-v2lite"
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
  echo "s32cold start $(date -u +%FT%TZ), $NGPU GPU(s), GPU $ONE_GPU, parts $PARTS"
  if [ "$NGPU" -ge 1 ] || [ "$DEVICE" = cpu ]; then
    for part in $PARTS; do
      kind=${part%%:*}; plan=${part#*:}
      left=$((TOTAL_S - SECONDS))
      if [ "$left" -lt 20 ]; then echo "$kind $plan skipped: ${SECONDS} s of ${TOTAL_S} spent"; continue; fi
      cap=$(( left < PART_S ? left : PART_S ))
      model=$("$PY" -c "from real.serve.plans import PLANS; print(PLANS['$plan'].model)")
      case $kind in
        trace) flags="--kernel-trace"; loading="" ;;
        trace-eager) flags="--kernel-trace"; loading=EAGER ;;
        eager) flags="--host-probe --stall-trace"; loading=EAGER ;;
        *) flags="--host-probe --stall-trace"; loading="" ;;
      esac
      sub="$DIR/$kind/$model"
      [ "$plan" = gpu1-s32c-bench-w1024 ] && sub="$DIR/w1024/$model"
      # shellcheck disable=SC2086
      if [ -n "$loading" ]; then
        CUDA_MODULE_LOADING=$loading CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve --out "$sub" \
          --plan "$plan" --device "$DEVICE" $flags
      else
        CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve --out "$sub" \
          --plan "$plan" --device "$DEVICE" $flags
      fi
      echo "$kind $plan exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
    done
  else
    echo "skipped: no GPU"
  fi
  echo "s32cold end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | grep -v '^USDT:' | tee "$DIR/s32cold.log"

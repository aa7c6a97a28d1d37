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
. "$(dirname "$0")/serve_parts.sh"
if [ "${S32COLD_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PART_S=$((60 * SCALE)); TOTAL_S=$((200 * SCALE))
  PARTS="trace:tiny-new"
else
  DEVICE=auto; PART_S=$((75 * SCALE)); TOTAL_S=$((280 * SCALE))
  PARTS="trace:gpu1-s32c-bench timed:gpu1-s32c-bench eager:gpu1-s32c-bench trace-eager:gpu1-s32c-bench"
  PARTS="$PARTS timed:gpu1-s32c-bench-w1024 timed:gpu1-s32c-v2lite"
fi
serve_part() {   # KIND PLAN CAP_S
  local model flags loading sub
  model=$(serve_model "$2")
  case $1 in
    trace) flags="--kernel-trace"; loading="" ;;
    trace-eager) flags="--kernel-trace"; loading=EAGER ;;
    eager) flags="--host-probe --stall-trace"; loading=EAGER ;;
    *) flags="--host-probe --stall-trace"; loading="" ;;
  esac
  sub="$DIR/$1/$model"
  [ "$2" = gpu1-s32c-bench-w1024 ] && sub="$DIR/w1024/$model"
  # shellcheck disable=SC2086
  if [ -n "$loading" ]; then
    CUDA_MODULE_LOADING=$loading CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$3" "$PY" -m real.serve --out "$sub" \
      --plan "$2" --device "$DEVICE" $flags
  else
    CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$3" "$PY" -m real.serve --out "$sub" \
      --plan "$2" --device "$DEVICE" $flags
  fi
}
serve_host "$DIR/host.txt"
serve_campaign s32cold "$DIR/s32cold.log" "$NGPU GPU(s), GPU $ONE_GPU, parts $PARTS" serve_parts "$PARTS"

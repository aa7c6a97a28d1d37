#!/usr/bin/env bash
# Session s32kern2 (issue 15; docs/notes/s32kern2.md): why s32kern's first-used-kernel charge (C-k) over-pays the two
# closed loops it lost on guard sets I and J. Fitting / diagnostic records only: judges nothing (no rule; the exposure
# candidate C-kx already loses set J's check on the committed seen records, so no fresh set is run for it).
# About 230 s (each part capped at 85 s, the whole at 260 s).
#   real/campaigns/s32kern2.sh OUTDIR
# Parts, each its own engine process on one GPU, in this order:
#   trace:gpu1-s27j-v2lite   set J's v2-lite-slice plan (Poisson 22/s warmed to 704, closed c18: the lost loop) under
#                            --kernel-trace (real/serve/coldtrace.py): per iteration the GEMM kernels first launched, the
#                            dense GEMM ops' host time, the runtime calls; profiled
#   trace:gpu1-s26i-v3s1l    set I's v3-slice-1l plan (Poisson 26/s warmed to 544, closed c14: the other lost loop), traced
#   timed:gpu1-s27j-v2lite   set J's v2-lite plan again unprofiled (--host-probe): the same loop's step durations today
#   trace:gpu1-s32n-mixtral  set N's mixtral-mla-slice plan (early Poisson 2.4/s warmed to 336, closed c13, late Poisson)
#                            traced: the model whose first launches cost less than its map's count says (s32kern.md)
# -> OUTDIR/s32kern2/<kind>/<model>/serve_*.csv + env.json, host.txt (nproc, lscpu, nvidia-smi clocks, topology),
# s32kern2.log. Every row carries GPU name, clocks, power limit, driver, torch / CUDA / NCCL versions. One GPU (the
# first the caller gives). Exits 0 doing nothing without a GPU. Any card: filed by card (an H200 compares with the maps).
# CPU dry run: S32KERN2_TINY=1 (the tiny-new plan as a trace part); S32KERN2_TIMEOUT_SCALE scales the caps.
set -u
OUT=${1:?usage: real/campaigns/s32kern2.sh OUTDIR}
DIR="$OUT/s32kern2"
mkdir -p "$DIR"
PY=${PY:-${PYTHON:-python3}}
SCALE=${S32KERN2_TIMEOUT_SCALE:-1}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
. "$(dirname "$0")/serve_parts.sh"
if [ "${S32KERN2_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PART_S=$((60 * SCALE)); TOTAL_S=$((200 * SCALE))
  PARTS="trace:tiny-new"
else
  DEVICE=auto; PART_S=$((85 * SCALE)); TOTAL_S=$((260 * SCALE))
  PARTS="trace:gpu1-s27j-v2lite trace:gpu1-s26i-v3s1l timed:gpu1-s27j-v2lite trace:gpu1-s32n-mixtral"
fi
serve_part() {   # KIND PLAN CAP_S
  local model flags
  model=$(serve_model "$2")
  case $1 in
    trace) flags="--kernel-trace" ;;
    *) flags="--host-probe" ;;
  esac
  # shellcheck disable=SC2086
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$3" "$PY" -m real.serve --out "$DIR/$1/$model" \
    --plan "$2" --device "$DEVICE" $flags
}
serve_host "$DIR/host.txt"
serve_campaign s32kern2 "$DIR/s32kern2.log" "$NGPU GPU(s), GPU $ONE_GPU, parts $PARTS" serve_parts "$PARTS"

#!/usr/bin/env bash
# s18fp8: do the compiled tensorwise Float8 linears give the eager gradients on a GPU?
# Why: s18tt's compiled Float8 Llama block (inductor, full AC, one H100, torch 2.11) returned zero
# gradients through its linears and inductor's backward ran no FA2 backward (docs/notes/s18tt.md
# run 2); on the CPU (eager, aot_eager, inductor) the gradients are right. Session s18fp8 replaced
# s18tt's autograd.Function by torch.library custom ops (real.fp8 TENSORWISE_IMPL "custom_op") and a
# torchao-style autograd.Function in the graph whole that saves the high-precision inputs
# ("function"). One part (real.bench.fp8_grad_check, docstring there): per case (the tiny Llama
# block at 256 positions, one 4096 x 1024 x 1024 linear, a mid-size block: hidden 1024, 4096
# positions) and implementation (s18tt's, custom_op, function), every gradient of the module
# compiled (inductor, fullgraph, around the checkpoint wrapper as cp_block) against the same module
# eager; also the compiled and eager step times. Rows written per case (a cut run keeps them).
# Budget <= 60 s on one GPU (timeout 60 s; no case starts after 45 s). An H200 serves as well as an
# H100 (the failure is a compiler one). No GPU: exits 0 having run nothing.
# Outputs OUTDIR/s18fp8/: fp8_grad_check.csv (GPU name, clocks, torch/CUDA versions in every row),
# gpu.txt, log.txt.
#   bash real/campaigns/s18fp8.sh OUTDIR   (S18FP8_QUICK=1: CPU-sized cases, a dry run;
#   S18FP8_QUICK_GPUS=0: the dry run as a host without a GPU; S18FP8_CASES="tiny/s18tt,...": only those)
set -u
OUT="${1:?usage: real/campaigns/s18fp8.sh OUTDIR}/s18fp8"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S18FP8_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S18FP8_QUICK:-0}" = "1" ] && NGPU=${S18FP8_QUICK_GPUS:-1}   # the CPU dry run
{
  echo "s18fp8 campaign $(date -u +%FT%TZ), $NGPU GPU(s)"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.sm,clocks.max.sm --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 60 "$PY" -m real.bench.fp8_grad_check --out "$OUT" --budget-s 45 \
    --cases "${S18FP8_CASES:-}" ${QUICK[@]+"${QUICK[@]}"}
  echo "part fp8_grad_check exit $? at $(date -u +%FT%TZ)"
  echo "s18fp8 done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

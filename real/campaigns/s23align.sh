#!/usr/bin/env bash
# s23align: GEMMs whose dimensions are not multiples of 8 elements (cuBLAS / cutlass alignment).
#
# Why: megatron-gpt-1.7b's prefill at batch 4 x prompt 768 is GPU-bound and measured 43.6-44.7 ms on
# every fresh H100 run against the twin's ~24 ms floor (s23hrate, docs/notes/s23hrate_rule.md). Its
# FFN is 5461 wide (fused gate/up 10922): the profiled steps run cutlass align1/align2 kernels of the
# sm75/sm80 generations for it, and the twin's GEMM efficiency does not price operand alignment.
# One part (real.bench.gemm_align, docstring there): the three GEMMs of a linear layer (forward,
# input gradient, weight gradient) in BF16, and the forward in FP8 (torch._scaled_mm, tensor-wise and
# row-wise; a shape it refuses is recorded as refused), over tokens 3072 / 8192 / 768 and layers whose
# widths are multiples of 8, 4, 2 and 1 (megatron-gpt-1.7b's FFN 5456/5460/5462/5461, 7.1b's
# 10920/10924/10922/10923, 2048 vs 2049, vocabulary 50304 vs 50257); CUDA-graph timed after warm-up,
# the kernels of each case named by the profiler. Fit / held-out split: docs/notes/s23align_rule.md.
#
# Budget <= 90 s on one GPU (timeout 85 s; no case starts after 65 s of the bench; rows are written
# as they go, so a cut run keeps what it measured). H100 first; an H200 is useful too (same SMs and
# kernels, faster HBM). No GPU: exits 0 having run nothing.
# Outputs OUTDIR/s23align/: gemm_align.csv (GPU name, clocks, driver, torch/CUDA versions in every
# row), env.json, gpu.txt, log.txt.
#   bash real/campaigns/s23align.sh OUTDIR
#   (S23ALIGN_QUICK=1: tiny shapes, a CPU dry run; S23ALIGN_QUICK_GPUS=0: the dry run as a host without a GPU)
set -u
OUT="${1:?usage: real/campaigns/s23align.sh OUTDIR}/s23align"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S23ALIGN_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S23ALIGN_QUICK:-0}" = "1" ] && NGPU=${S23ALIGN_QUICK_GPUS:-1}   # the CPU dry run
{
  echo "s23align campaign $(date -u +%FT%TZ), $NGPU GPU(s)"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.sm,clocks.max.sm,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 85 "$PY" -m real.bench.gemm_align --out "$OUT" --budget-s 65 \
    ${QUICK[@]+"${QUICK[@]}"}
  echo "part gemm_align exit $? at $(date -u +%FT%TZ)"
  echo "s23align done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"
exit 0

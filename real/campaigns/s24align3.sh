#!/usr/bin/env bash
# s24align3: misaligned GEMMs priced by each cutlass kernel family's own rate curve, judged on fresh
# shapes (docs/notes/s24align3_rule.md).
#
# Why: s23align's factor per class and s23align2's factor per operand pattern (both on the aligned
# time) failed their held-out ratio criteria: the cutlass align1 / align2 kernels that cuBLAS runs for
# rows not a multiple of 8 elements have their own shape dependence (tile waves, contraction length,
# output size). The third form prices them from a rate curve per (family, pass, misaligned operands)
# fitted on every s23align / s23align2 record, so every shape here is fresh and held out: vocabulary
# heads 50277 x 2560 and 64001 x 5120, hidden 3072 with FFN 8191 / 8190, hidden 1536 with FFN 4097, a
# TP-2 shard 4097 (hidden 4096) and a TP-4 shard 3586 (hidden 3584), each beside its aligned neighbour;
# tokens 4096 and 1000; each GEMM alone and each linear layer's training triple (pass "layer").
# One part: real.bench.gemm_align --set s24align3 (BF16, CUDA-graph timed, kernels named by the profiler).
#
# Budget <= 60 s on one GPU (timeout 55 s; no case starts after 40 s of the bench; rows are written as
# they go, so a cut run keeps what it measured). H100 (the curves are H100's); an H200 is reported but
# does not judge the rule. No GPU: exits 0 having run nothing.
# Outputs OUTDIR/s24align3/: gemm_align.csv (GPU name, clocks, driver, torch/CUDA versions in every
# row), env.json, gpu.txt, log.txt. The whole folder is held out.
#   bash real/campaigns/s24align3.sh OUTDIR
#   (S24ALIGN3_QUICK=1: tiny shapes, a CPU dry run; S24ALIGN3_QUICK_GPUS=0: the dry run as a host without a GPU)
set -u
OUT="${1:?usage: real/campaigns/s24align3.sh OUTDIR}/s24align3"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S24ALIGN3_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S24ALIGN3_QUICK:-0}" = "1" ] && NGPU=${S24ALIGN3_QUICK_GPUS:-1}   # the CPU dry run
{
  echo "s24align3 campaign $(date -u +%FT%TZ), $NGPU GPU(s)"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.sm,clocks.max.sm,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 55 "$PY" -m real.bench.gemm_align --out "$OUT" --budget-s 40 \
    --set s24align3 ${QUICK[@]+"${QUICK[@]}"}
  echo "part gemm_align exit $? at $(date -u +%FT%TZ)"
  echo "s24align3 done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"
exit 0

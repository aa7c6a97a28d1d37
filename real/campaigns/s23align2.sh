#!/usr/bin/env bash
# s23align2: the GEMM alignment term's second form, judged on fresh shapes (docs/notes/s23align2_rule.md).
#
# Why: s23align's one-factor-per-class form failed its held-out criterion (layers whose output width
# alone is odd ran 31-45% off); the second form keys the factor by which operands are misaligned and the
# kernel family that selects, fitted on every s23align record. Every s23align shape is now seen, so the
# form is judged on shapes never measured: vocabularies 32001 (hidden 4096) and 151655 (1536), hidden
# 2560 with FFN 6827 / 6828, 3000 x 2049 and 2049 x 3000, 2049 x 2049, a TP-2 shard 6849 of FFN 13698 at
# hidden 5120, each beside its aligned neighbour; tokens 3072 / 3001 / 768 (real.bench.gemm_align LAYERS2).
# One part: real.bench.gemm_align --set s23align2 (BF16, the three passes of each linear layer, CUDA-graph
# timed, kernels named by the profiler; no FP8: torch refuses odd widths, s23align recorded it).
#
# Budget <= 40 s on one GPU (timeout 38 s; no case starts after 26 s of the bench; rows are written as
# they go, so a cut run keeps what it measured). H100 (the factors are H100's); an H200 is reported
# but does not judge the rule. No GPU: exits 0 having run nothing.
# Outputs OUTDIR/s23align2/: gemm_align.csv (GPU name, clocks, driver, torch/CUDA versions in every
# row), env.json, gpu.txt, log.txt.
#   bash real/campaigns/s23align2.sh OUTDIR
#   (S23ALIGN_QUICK=1: tiny shapes, a CPU dry run; S23ALIGN_QUICK_GPUS=0: the dry run as a host without a GPU)
set -u
OUT="${1:?usage: real/campaigns/s23align2.sh OUTDIR}/s23align2"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S23ALIGN_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S23ALIGN_QUICK:-0}" = "1" ] && NGPU=${S23ALIGN_QUICK_GPUS:-1}   # the CPU dry run
{
  echo "s23align2 campaign $(date -u +%FT%TZ), $NGPU GPU(s)"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.sm,clocks.max.sm,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 38 "$PY" -m real.bench.gemm_align --out "$OUT" --budget-s 26 \
    --set s23align2 ${QUICK[@]+"${QUICK[@]}"}
  echo "part gemm_align exit $? at $(date -u +%FT%TZ)"
  echo "s23align2 done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"
exit 0

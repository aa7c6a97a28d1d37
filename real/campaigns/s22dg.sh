#!/usr/bin/env bash
# s22dg (issue 15): DeepGEMM's masked grouped FP8 GEMM, the kernel DeepSeek decodes its routed experts
# with, measured beside torch's grouped GEMMs on one card.
#
# Why: the twin costs the EP144 decode unit's routed-expert GEMMs with torch._grouped_mm's 256-row tile
# from our H100 fit; DeepSeek runs DeepGEMM's masked kernel (block_m 64 at <= 64 expected rows, else
# 128: jit_kernels/gemm.py get_best_configs of the Feb 2025 release), never measured here
# (docs/notes/s21dec.md §2). One part (real.bench.deepgemm_masked, docstring there): the masked kernel
# at V3's expert N/K (gate/up 4096 x 7168, down 7168 x 2048), 2/4/9 groups (EP144/EP72/EP32 local
# experts), 8..512 expected rows per group in fine steps around 64/128/192/256, equal rows and
# Binomial-scattered rows; torch._grouped_mm (BF16) and torch._scaled_grouped_mm (FP8 row-wise) at
# the same groups and rows; each timed back to back in a CUDA graph and with L2 flushed before each call.
#
# DeepGEMM is third-party and not in our tree: DEEPGEMM_DIR (or the 2nd argument; default _camp/ at
# the repository root, else _camp_deepgemm/) holds its deep_gemm package (6c5da03 + a CUDA 13 typedef
# shim, cutlass headers) and dg_cache/ (the grid's kernels precompiled with nvcc 13.0 for sm_90a; a
# kernel not found there is compiled on the card with nvcc, 16 in parallel). A failed import or build
# skips the DeepGEMM rows (logged) and still runs the torch rows; exit 0 either way.
#
# Budget <= 240 s on one GPU (timeout 230 s; no case starts after 190 s of the bench). H100 (the
# H800's silicon) first; an H200 serves too (same 132 SMs, so the same kernel configs; faster HBM).
# No GPU: exits 0 having run nothing.
# Outputs OUTDIR/s22dg/: deepgemm_masked.csv (GPU name, clocks, torch/CUDA/nvcc versions, DeepGEMM
# commit in every row), env.json, gpu.txt, log.txt (with any build log).
#   bash real/campaigns/s22dg.sh OUTDIR [DEEPGEMM_DIR]
#   (S22DG_QUICK=1: CPU-sized shapes, a dry run; S22DG_QUICK_GPUS=0: the dry run as a host without a GPU)
set -u
OUT="${1:?usage: real/campaigns/s22dg.sh OUTDIR [DEEPGEMM_DIR]}/s22dg"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
root=$(cd "$(dirname "$0")/../.." && pwd)
DG=${2:-${DEEPGEMM_DIR:-}}
if [ -z "$DG" ]; then
  if [ -d "$root/_camp/deep_gemm" ]; then DG="$root/_camp"; else DG="$root/_camp_deepgemm"; fi
fi
QUICK=()
[ "${S22DG_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S22DG_QUICK:-0}" = "1" ] && NGPU=${S22DG_QUICK_GPUS:-1}   # the CPU dry run
{
  # the DeepGEMM folder without the machine's prefix (a log is filed as a record: no absolute temp path, s27walk)
  shown=${DG/#$root/<repo>}
  case "$shown" in /tmp/*|"${TMPDIR:-/tmp}"/*) shown="TMPDIR/${shown##*/}" ;; esac
  echo "s22dg campaign $(date -u +%FT%TZ), $NGPU GPU(s), DeepGEMM dir $shown"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.sm,clocks.max.sm,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  # the JIT's cache: a writable copy of the carried precompiled kernels; the nvcc path is part of
  # each kernel's cache key, so name the one the cache was built with
  export DG_CACHE_DIR="${TMPDIR:-/tmp}/s22dg_dg_cache"
  mkdir -p "$DG_CACHE_DIR"
  [ -d "$DG/dg_cache" ] && cp -r "$DG/dg_cache/." "$DG_CACHE_DIR/"
  export DG_NVCC_COMPILER=${DG_NVCC_COMPILER:-/usr/local/cuda/bin/nvcc}
  "$DG_NVCC_COMPILER" --version 2>&1 | tail -1
  cat "$DG/DEEPGEMM_COMMIT" 2>/dev/null
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 230 "$PY" -m real.bench.deepgemm_masked --out "$OUT" \
    --deepgemm "$DG" --budget-s 190 --workers 16 ${QUICK[@]+"${QUICK[@]}"}
  echo "part deepgemm_masked exit $? at $(date -u +%FT%TZ)"
  echo "s22dg done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"
exit 0

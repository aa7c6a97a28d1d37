#!/usr/bin/env bash
# s14gl (issue 13): dense, FP8 and grouped GEMMs and the memory kernels inside the one-GPU layers
# against the same calls alone, each with its SM clock.
#
# Why: gemm.csv's GEMM curves are timed in long CUDA-graph loops at the power limit (1,400-1,600 MHz)
# and run slower than GEMMs inside eager layers (~1,700-1,980 MHz); memory kernels run slower inside
# layers than alone (docs/notes/s14gemm_rule.md). Two refits failed because only grouped GEMMs had an
# in-layer vs alone pair (s14epl). This measures the pairs for every kernel class on one GPU,
# section gemm_in_layer (real/bench/gemm_in_layer.py), fitting-split layer shapes, BF16 and FP8:
#   gl_layer  MoE (v3-slice-1l, 64 experts, 4,096 / 16,384 tokens, skew 0) and MLA (v3-slice-1l,
#             4 x 1,024 / 1 x 4,096) forward and backward, eager, NVML SM clock sampled every 2 ms
#   gl_ops    per aten op and input shapes: in the layer (torch profiler), alone as a short eager
#             burst (3 calls, profiled) and alone as gemm.csv times it (CUDA graph loop), each with
#             its sampled clock: dense / FP8 / grouped GEMMs, gathers, index_put, sort, elementwise
# One GPU (ONE_GPU); an H100 and an H200 are both useful (each GPU's own pairs). Budget: <= 140 s
# (the part under `timeout 135`, the section's own budget 120 s: no configuration or alone call
# starts after it; configurations in priority order). Rows are flushed as written.
# Writes OUTDIR/s14gl/{gl_layer.csv, gl_ops.csv, env.json, log.txt}.
#   bash real/campaigns/s14gl.sh OUTDIR    (S14GL_QUICK=1: tiny shapes, a CPU dry run)
# Reading: python -m calibration.gemm_in_layer OUTDIR/s14gl
set -u
OUT="${1:?usage: real/campaigns/s14gl.sh OUTDIR}/s14gl"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S14GL_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
{
  echo "s14gl campaign $(date -u +%FT%TZ), $NGPU GPU(s), one-GPU part on GPU $ONE_GPU"
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,temperature.gpu,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
  CUDA_VISIBLE_DEVICES="$ONE_GPU" timeout -k 5 135 "$PY" -m real.bench --out "$OUT" --only gemm_in_layer \
    --budget-s 120 ${QUICK[@]+"${QUICK[@]}"}
  echo "part gemm_in_layer exit $? at $(date -u +%FT%TZ)"
  echo "s14gl done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

#!/usr/bin/env bash
# s15gl2 (issues 13, 14): the memory kernels whose costing terms the layers share, timed ALONE at
# fitting-split shapes.
#
# Why: candidate G (docs/notes/s15gl_rule.md) failed because stage 2 of the fit sets gather_eff
# (strided elementwise, row gathers) and quant_bytes_per_elem (real/fp8.py's eager quantization) from
# the layers, which the alone memory records share; G2 measures both terms from alone rows instead,
# and the fitting split had none (calibration/split.py holds out every swiglu and fp8_quant_* row).
# One part, section memory_alone (real/bench/memory.py bench_memory_alone), timed as bench_memory
# times its rows (CUDA-graph loop): swiglu, silu / mul on strided chunk views (widths 4,096, 2,816),
# fp8_quant_1x128 / fp8_quant_rowwise (7,168, 2,048), index gather, index_copy_, index_put_
# (accumulate) at 7,168, each at 2,048 / 8,192 / 32,768 tokens: counts no memory row has; rows
# bench=memory_alone, split=fit (calibration/split.py: fitting split).
# One GPU (ONE_GPU); an H100 and an H200 are each useful alone (each GPU's own terms). Budget:
# <= 120 s (the part under `timeout 115`, the section's own budget 100 s). Rows are flushed as written.
# Writes OUTDIR/s15gl2/{memory_alone.csv, env.json, log.txt}; every row has the GPU name, SM and
# memory clocks, torch and CUDA versions.
#   bash real/campaigns/s15gl2.sh OUTDIR    (S15GL2_QUICK=1: tiny shapes, a CPU dry run)
set -u
OUT="${1:?usage: real/campaigns/s15gl2.sh OUTDIR}/s15gl2"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S15GL2_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
{
  echo "s15gl2 campaign $(date -u +%FT%TZ), $NGPU GPU(s), one-GPU part on GPU $ONE_GPU"
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,temperature.gpu,driver_version --format=csv 2>&1 || echo "no nvidia-smi"
  CUDA_VISIBLE_DEVICES="$ONE_GPU" timeout -k 5 115 "$PY" -m real.bench --out "$OUT" --only memory_alone \
    --budget-s 100 ${QUICK[@]+"${QUICK[@]}"}
  echo "part memory_alone exit $? at $(date -u +%FT%TZ)"
  echo "s15gl2 done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

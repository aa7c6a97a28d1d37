#!/usr/bin/env bash
# Issue 14, Megatron-LM's TP 8 GPT rows, round 2 of s24mlm (docs/notes/s24mlm_rule.md, "Round 2"): the GEMMs
# TransformerEngine's userbuffers split at TP 8 (ring_exchange: 8 chunks of 512 rows; pipeline: 4 of 1,024),
# whole, chunked on one stream and chunked round-robin on 3 streams, CUDA-graph timed, no communication
# (section mlm_chunks, real/bench/mlm_sustained.py). Round 1 ran the forwards in a dgrad's layout; here the
# forwards run as x W^T with W stored [out, in] (F.linear's and TE's layout), the 70B and 314B slices are
# added (462B, 177B, 119B, 32B, 70B, 314B), and each GEMM's variants are timed twice in the order whole, one
# stream, three streams, three streams, one stream, whole (shape_tag suffix /a, /b).
# GPU name, clocks, torch and CUDA versions in every row; env.json beside.
# Writes OUTDIR/s24mlm2/{gemm.csv, env.json, s24mlm2.log}. Budget: the part under `timeout 80` (~30 s
# expected). No GPU: records that and exits 0 having run nothing.
#   bash real/campaigns/s24mlm2.sh OUTDIR    (S24MLM2_QUICK=1: tiny shapes, a CPU dry run)
set -u
OUT="${1:?usage: real/campaigns/s24mlm2.sh OUTDIR}/s24mlm2"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S24MLM2_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
{
  echo "s24mlm2 campaign $(date -u +%FT%TZ), $NGPU GPU(s), one-GPU part on GPU $ONE_GPU"
  if [ "${S24MLM2_QUICK:-0}" != "1" ] && [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing run"
    echo "s24mlm2 done $(date -u +%FT%TZ)"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,clocks.max.mem,temperature.gpu,driver_version --format=csv 2>&1 \
    || echo "no nvidia-smi"
  CUDA_VISIBLE_DEVICES="$ONE_GPU" timeout -k 5 80 "$PY" -m real.bench --out "$OUT" --only mlm_chunks \
    --budget-s 75 ${QUICK[@]+"${QUICK[@]}"}
  echo "part mlm_chunks exit $? at $(date -u +%FT%TZ)"
  echo "s24mlm2 done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/s24mlm2.log"

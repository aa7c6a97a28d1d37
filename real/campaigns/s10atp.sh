#!/usr/bin/env bash
# Issue 14, torchtitan's 405B 3D rows (s10atp): the kernels torch's micro-pipelined TP is made of at
# the 405B TP8 shapes, and its fused ops on as many GPUs as the host has (4 where it has them).
#   1. one GPU (the first of CUDA_VISIBLE_DEVICES, else GPU 0), `--only atp_parts` (wall <= 50 s):
#      the partial-sum reduction the fused reduce-scatter ends with (torch.sum over W stacked
#      partials, W = 2, 4, 8, flat and torchtitan's sequence-sharded layout, 405B and 70B outputs)
#      and the 405B TP8 linears' GEMMs whole (M = 32,768) beside the 8 chunk GEMMs of 4,096 rows the
#      fused ops issue, on one and on two alternating streams, BF16 and tensorwise FP8 (atp_parts.csv);
#   2. only where >= 2 GPUs exist, `--only async_tp_405b` under torchrun on 4 GPUs (else 2)
#      (wall <= 65 s): GEMM alone, NCCL collective alone, both in sequence, the fused symmetric-memory
#      op, the partials' reduction, one shard's copy-engine pull from a peer alone and beside the GEMM
#      (ops p2p_copy, mm_beside_copy) at the 405B TP8 per-GPU linears (w1, wq all-gathers; w2, wo
#      reduce-scatters), each rank's shard 4,096 rows as in a TP8 405B micro-batch (async_tp.csv,
#      all held out). An op this torch cannot run writes a row with status 'unavailable'.
# Budget: <= 120 s of wall. Each part keeps the rows already written when `timeout` cuts it short.
# Writes OUTDIR/s10atp/{atp_parts.csv, env_atp_parts.json, async_tp.csv, env_async_tp_405b.json, topo.txt, log.txt}.
#   bash real/campaigns/s10atp.sh OUTDIR     (S10ATP_QUICK=1: tiny shapes, a CPU dry run on two gloo ranks)
# NVLink SHARP (multicast) stays off, as in the EP campaign (calibration/measurements/README.md).
set -u
OUT="${1:?usage: real/campaigns/s10atp.sh OUTDIR}/s10atp"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S10ATP_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S10ATP_QUICK:-0}" = "1" ] && NGPU=2   # the CPU dry run: two gloo ranks
NPROC=0
[ "$NGPU" -ge 2 ] && NPROC=2
[ "$NGPU" -ge 4 ] && NPROC=4
{
  echo "s10atp campaign $(date -u +%FT%TZ), $NGPU GPU(s), multi-GPU part on $NPROC"
  nvidia-smi topo -m > "$OUT/topo.txt" 2>&1 || echo "no nvidia-smi topo" > "$OUT/topo.txt"
  d="$OUT/part_atp_parts"; mkdir -p "$d"
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 50 "$PY" -m real.bench --out "$d" --only atp_parts --budget-s 40 \
    ${QUICK[@]+"${QUICK[@]}"}
  echo "part atp_parts exit $? at $(date -u +%FT%TZ)"
  for f in "$d"/*.csv; do [ -e "$f" ] && mv "$f" "$OUT/"; done
  [ -e "$d/env.json" ] && mv "$d/env.json" "$OUT/env_atp_parts.json"
  rm -rf "$d"
  if [ "$NPROC" -ge 2 ]; then
    d="$OUT/part_async_tp_405b"; mkdir -p "$d"
    timeout -k 5 65 "$PY" -m torch.distributed.run --standalone --nproc-per-node "$NPROC" -m real.bench --out "$d" \
      --only async_tp_405b --budget-s 50 ${QUICK[@]+"${QUICK[@]}"}
    echo "part async_tp_405b exit $? at $(date -u +%FT%TZ)"
    for f in "$d"/*.csv; do [ -e "$f" ] && mv "$f" "$OUT/"; done
    [ -e "$d/env.json" ] && mv "$d/env.json" "$OUT/env_async_tp_405b.json"
    rm -rf "$d"
  else
    echo "one GPU: the multi-GPU part (async_tp_405b) skipped"
  fi
  echo "s10atp done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

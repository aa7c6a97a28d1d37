#!/usr/bin/env bash
# Issue 14, TransformerEngine's userbuffers TP overlap (s11tpo): a TP GEMM of Megatron's GPT 177B TP8
# rank with an NCCL collective beside it on a second stream (real/bench/tp_beside.py, section
# tp_beside): the GEMM alone, the collective alone, and both from a common start with enough
# collectives to outlast the GEMM, the GEMM's span and the collectives' span (tp_beside.csv, all held
# out). It checks the twin's charge for TE's 16-SM 'bulk' and 'pipeline' kernels beside the GEMMs
# (the untold slowdown of Profile.sm_reserve, twin/costs/tp_overlap.py) on a real communication kernel.
# Two parts, only where >= 2 GPUs exist, each under torchrun on 2 GPUs (wall <= 40 s each):
#   1. NCCL's default channels;
#   2. NCCL_MIN_NCHANNELS = NCCL_MAX_NCHANNELS = 16 (one SM a channel: TE's num_sm = 16).
# Budget: <= 90 s of wall. Each part keeps the rows already written when `timeout` cuts it short.
# Writes OUTDIR/s11tpo/{tp_beside.csv, env_tp_beside_default.json, env_tp_beside_16ch.json, log.txt}.
#   bash real/campaigns/s11tpo.sh OUTDIR     (S11TPO_QUICK=1: tiny shapes, a CPU dry run on two gloo ranks)
# NVLink SHARP (multicast) stays off, as in the EP campaign (calibration/measurements/README.md).
set -u
OUT="${1:?usage: real/campaigns/s11tpo.sh OUTDIR}/s11tpo"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S11TPO_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S11TPO_QUICK:-0}" = "1" ] && NGPU=2   # the CPU dry run: two gloo ranks
{
  echo "s11tpo campaign $(date -u +%FT%TZ), $NGPU GPU(s)"
  if [ "$NGPU" -ge 2 ]; then
    for variant in default 16ch; do
      d="$OUT/part_$variant"; mkdir -p "$d"
      if [ "$variant" = "16ch" ]; then CH=(env NCCL_MIN_NCHANNELS=16 NCCL_MAX_NCHANNELS=16); else CH=(env); fi
      "${CH[@]}" timeout -k 5 40 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m real.bench --out "$d" \
        --only tp_beside --budget-s 30 ${QUICK[@]+"${QUICK[@]}"}
      echo "part tp_beside ($variant channels) exit $? at $(date -u +%FT%TZ)"
      if [ -e "$d/tp_beside.csv" ]; then   # one CSV: the second part's rows after the first's
        if [ -e "$OUT/tp_beside.csv" ]; then tail -n +2 "$d/tp_beside.csv" >> "$OUT/tp_beside.csv"
        else mv "$d/tp_beside.csv" "$OUT/tp_beside.csv"; fi
      fi
      [ -e "$d/env.json" ] && mv "$d/env.json" "$OUT/env_tp_beside_$variant.json"
      rm -rf "$d"
    done
  else
    echo "fewer than 2 GPUs: tp_beside skipped"
  fi
  echo "s11tpo done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

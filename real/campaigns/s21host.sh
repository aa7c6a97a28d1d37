#!/usr/bin/env bash
# The host's measured speed beside one-GPU prefill and decode of models no record holds (session
# s21host, issue 13). Why: s20new2's cold H100 missed its decode rows by ~35% (host-bound steps: the
# host dispatched ~26-30 us an op against the ~19.6 us the profile carries) while the same H100 a
# minute later ran them 14-37% faster: the step's time is the host's speed, which the twin did not
# take. This times real/'s serving (real/bench/whole_model.py bench_serve, BF16, prompt 512, 32
# generated, prefill batches 2,8, decode batches 2,16,64) on two MLA slices (qwen2moe-mla-slice,
# mixtral-mla-slice) and two GQA slices (qwen3moe-slice, mixtral-slice; real/model.py keeps cuDNN's
# SDPA out of cached decode), with a short fixed host probe (real/serve/hostspeed.py launch_probe,
# 40 ms) in the same process right before every record, and before them the fitting split's
# host_dispatch `infer` layer rows, each beside a probe too (the fitting rows of the probe -> host
# time per kernel relation, calibration/host_input.py). Section host_input (real/bench/host_input.py).
# Parts (each a fresh Python process, rows written as they go):
#   1. cold: the first process on the machine (the case that missed in s20new2); <= 70 s wall
#   2. repeat: the same again in a new process a moment later (warm); <= 60 s wall
# The twin's predictions (plain, and host-input as a function of the host time per kernel) were
# committed before this ran (calibration/measurements/prereg/s21host_*); compared by
# calibration/prereg.py --registration s21host (s21host_repeat), fitted to nothing else.
# One GPU (the first of CUDA_VISIBLE_DEVICES); no GPU: exits 0 having run nothing. Budget <= 140 s.
# Outputs OUTDIR/s21host/{cold,repeat}/: model.csv (prefill, decode), host_dispatch.csv (infer, split
# fit), host_probe.csv (one probe per row above), env.json, log.txt (GPU name, clocks, torch/CUDA
# versions in every row); OUTDIR/s21host/gpu.txt, log.txt.
#   bash real/campaigns/s21host.sh OUTDIR   (S21HOST_QUICK=1: the tiny models on the CPU, a dry run;
#   S21HOST_QUICK_GPUS=0: the dry run as a host without a GPU; S21HOST_CASES overrides the cases)
set -u
OUT="${1:?usage: real/campaigns/s21host.sh OUTDIR}/s21host"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
CASES="qwen2moe-mla-slice:512:32:2,8:2,16,64;mixtral-mla-slice:512:32:2,8:2,16,64;qwen3moe-slice:512:32:2,8:2,16,64;mixtral-slice:512:32:2,8:2,16,64"
COLD_S=70
REPEAT_S=60
if [ "${S21HOST_QUICK:-0}" = "1" ]; then
  QUICK=(--quick)
  CASES="tiny:16:8:2:2;tiny-gqa:16:8::2"
  COLD_S=40
  REPEAT_S=40
fi
CASES=${S21HOST_CASES:-$CASES}
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S21HOST_QUICK:-0}" = "1" ] && NGPU=${S21HOST_QUICK_GPUS:-1}   # the CPU dry run
{
  echo "s21host campaign $(date -u +%FT%TZ), $NGPU GPU(s), cases $CASES"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,clocks.sm --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  uptime >> "$OUT/gpu.txt" 2>&1
  for part in cold:$COLD_S repeat:$REPEAT_S; do
    name=${part%%:*}
    wall=${part##*:}
    mkdir -p "$OUT/$name"
    CUDA_VISIBLE_DEVICES=$ONE_GPU REAL_BENCH_SERVE_CASES="$CASES" \
      timeout -k 5 "$wall" "$PY" -m real.bench --out "$OUT/$name" --only host_input --budget-s $((wall - 12)) \
      ${QUICK[@]+"${QUICK[@]}"}
    echo "$name exit $? at $(date -u +%FT%TZ)"
  done
  echo "s21host done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

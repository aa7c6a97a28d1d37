#!/usr/bin/env bash
# Diagnostic beside s21host2 (session s21host2, issue 13; not a registration, nothing judged): does synchronising the
# device before every timed step (s21host2's protocol: control / probed steps, each started on an idle device)
# change a host-bound decode step's time against steps issued back to back as bench_serve's Timer issues them (the
# protocol of every other decode record)? s21host2's cold H100 and H200 ran its decode steps ~1.9x the plain
# twin's (s21host's cold runs: ~1.2-1.3x). Section host_steps with REAL_BENCH_BACK_TO_BACK_STEPS=29: after each
# decode record's alternating control / probed steps and its profiled step, 29 more steps back to back (block
# back_to_back in serve_steps.csv). Cases: the four slices at prompt 256, decode batches 4 and 32, 64 generated.
# One part (one Python process) <= 60 s wall; one GPU; no GPU: exits 0 having run nothing. Budget <= 75 s.
# Outputs OUTDIR/s21host2b/cold/ (as s21host2's), OUTDIR/s21host2b/gpu.txt, log.txt.
#   bash real/campaigns/s21host2b.sh OUTDIR   (S21HOST2B_QUICK=1: the tiny models on the CPU, a dry run;
#   S21HOST2B_QUICK_GPUS=0: the dry run as a host without a GPU)
set -u
OUT="${1:?usage: real/campaigns/s21host2b.sh OUTDIR}/s21host2b"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 REAL_BENCH_BACK_TO_BACK_STEPS=29
PY=${PYTHON:-python3}
QUICK=()
CASES="qwen2moe-mla-slice:256:64::4,32;mixtral-mla-slice:256:64::4,32;qwen3moe-slice:256:64::4,32;mixtral-slice:256:64::4,32"
WALL_S=60
if [ "${S21HOST2B_QUICK:-0}" = "1" ]; then
  QUICK=(--quick)
  CASES="tiny-gqa:16:10::2"
  WALL_S=40
  export REAL_BENCH_BACK_TO_BACK_STEPS=4
fi
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S21HOST2B_QUICK:-0}" = "1" ] && NGPU=${S21HOST2B_QUICK_GPUS:-1}   # the CPU dry run
{
  echo "s21host2b campaign $(date -u +%FT%TZ), $NGPU GPU(s), cases $CASES"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,clocks.sm --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  uptime >> "$OUT/gpu.txt" 2>&1
  mkdir -p "$OUT/cold"
  CUDA_VISIBLE_DEVICES=$ONE_GPU REAL_BENCH_SERVE_CASES="$CASES" \
    timeout -k 5 "$WALL_S" "$PY" -m real.bench --out "$OUT/cold" --only host_steps --budget-s $((WALL_S - 12)) \
    ${QUICK[@]+"${QUICK[@]}"}
  echo "cold exit $? at $(date -u +%FT%TZ)"
  echo "s21host2b done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

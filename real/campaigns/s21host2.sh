#!/usr/bin/env bash
# Every timed prefill/decode step beside its own host probe (session s21host2, issue 13). Why: s21host's
# one 40 ms probe before each ~0.1 s record caught the host's level but not its moment (within a process
# the probe moved 7-17 us a launch, the fitting rows' host time per kernel 12-50 us, a decode record's
# steps p90/p10 1.3-3.4x). Here (section host_steps, real/bench/host_steps.py) a short fixed probe
# (real/serve/hostspeed.py launch_probe, 3 ms) runs right before each timed step: every fitting
# host_dispatch `infer` repetition (the probe -> host-time-per-kernel relation), and every other step of
# each prefill/decode record (steps alternate control / probed; the control steps, same moments without
# the probe, tell whether the probe changes the step). Cases: two MLA slices (qwen2moe-mla-slice,
# mixtral-mla-slice), two GQA slices (qwen3moe-slice, mixtral-slice), prompts 256 and 2048 (no record
# holds them), 64 generated, prefill batches 1,4, decode batches 4,32,128, BF16. After each decode record
# one step under the torch profiler (the kernels a cached decode step launches: the twin's decode op
# list is checked against them).
# Parts (each a fresh Python process, rows written as they go):
#   1. cold: the first process on the machine (judged); <= 80 s wall
#   2. repeat: the same again in a new process (reported, not judged); <= 60 s wall
# The twin's predictions (plain, and per-step host-input as a function of the host time per kernel) were
# committed before this ran (calibration/measurements/prereg/s21host2_*); compared by calibration/prereg.py
# --registration s21host2 (s21host2_repeat), fitted to nothing else.
# One GPU (the first of CUDA_VISIBLE_DEVICES); no GPU: exits 0 having run nothing. Budget <= 150 s.
# Outputs OUTDIR/s21host2/{cold,repeat}/: model.csv (prefill, decode: the probed steps), serve_steps.csv
# (every step and fitting repetition: block, probe, event and host seconds), host_dispatch.csv (infer,
# split fit), serve_kernels.csv, step_kernels.csv, env.json, log.txt (GPU name, clocks, torch/CUDA
# versions in every row); OUTDIR/s21host2/gpu.txt, log.txt.
#   bash real/campaigns/s21host2.sh OUTDIR   (S21HOST2_QUICK=1: the tiny models on the CPU, a dry run;
#   S21HOST2_QUICK_GPUS=0: the dry run as a host without a GPU; S21HOST2_CASES overrides the cases;
#   S21HOST2_PARTS="cold" runs that part only)
set -u
OUT="${1:?usage: real/campaigns/s21host2.sh OUTDIR}/s21host2"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
CASES="qwen2moe-mla-slice:256:64:1,4:4,32,128;qwen2moe-mla-slice:2048:64:1,4:4,32,128;mixtral-mla-slice:256:64:1,4:4,32,128;mixtral-mla-slice:2048:64:1,4:4,32,128;qwen3moe-slice:256:64:1,4:4,32,128;qwen3moe-slice:2048:64:1,4:4,32,128;mixtral-slice:256:64:1,4:4,32,128;mixtral-slice:2048:64:1,4:4,32,128"
COLD_S=80
REPEAT_S=60
if [ "${S21HOST2_QUICK:-0}" = "1" ]; then
  QUICK=(--quick)
  CASES="tiny:16:10:2:2;tiny-gqa:16:10::2"
  COLD_S=40
  REPEAT_S=40
fi
CASES=${S21HOST2_CASES:-$CASES}
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S21HOST2_QUICK:-0}" = "1" ] && NGPU=${S21HOST2_QUICK_GPUS:-1}   # the CPU dry run
{
  echo "s21host2 campaign $(date -u +%FT%TZ), $NGPU GPU(s), cases $CASES"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,clocks.sm --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  uptime >> "$OUT/gpu.txt" 2>&1
  nproc >> "$OUT/gpu.txt" 2>&1
  for part in cold:$COLD_S repeat:$REPEAT_S; do
    name=${part%%:*}
    case " ${S21HOST2_PARTS:-cold repeat} " in *" $name "*) ;; *) continue ;; esac
    wall=${part##*:}
    mkdir -p "$OUT/$name"
    CUDA_VISIBLE_DEVICES=$ONE_GPU REAL_BENCH_SERVE_CASES="$CASES" \
      timeout -k 5 "$wall" "$PY" -m real.bench --out "$OUT/$name" --only host_steps --budget-s $((wall - 12)) \
      ${QUICK[@]+"${QUICK[@]}"}
    echo "$name exit $? at $(date -u +%FT%TZ)"
  done
  echo "s21host2 done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

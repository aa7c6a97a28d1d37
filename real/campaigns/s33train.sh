#!/usr/bin/env bash
# s33train (issue 13): where a train step spends the time the twin does not price (s33blind: 12 of 12 train steps
# under-predicted, -0.9 to -6.6%). A diagnostic, FITTING set (no rule judges it; s33blind's shapes, now seen):
# real.bench --only train_trace (real/bench/train_trace.py) on one GPU:
#   olmoe-slice s3072 b1, b2 BF16; llama3-8b-slice s2048 b3 BF16; phi35moe-slice s3072 b1 BF16; olmoe-slice s3072
#   b1 FP8 (the device's FP8 label)
# each: 3 warm-up steps, 5 steps timed as bench_train times them, then 2 steps under torch.profiler with the CUDA
# activity only and 2 with CPU + CUDA and a record_function range a phase (fwd, bwd, opt, tail).
# One `timeout` of 150 s, the bench's own budget 120 s (expected ~60 s: model builds ~5 s a model, the profiled
# steps' trace export ~1-3 s each). Run alone on its GPU is not needed (a diagnostic), but another lane's GPU work on
# the same GPU would move the gaps: run it on a GPU of its own.
# Outputs OUTDIR/s33train/: trace/ (train_trace_steps.csv, train_kernels.csv: GPU name, clocks, power limit, driver,
# torch / CUDA / NCCL versions in every row; env.json), host_s33train.txt (nvidia-smi, clocks, topology, CPU),
# s33train.log. Exits 0 doing nothing without a GPU.
#   bash real/campaigns/s33train.sh OUTDIR
# Env: PY (python3), S33TRAIN_TINY (1: CPU dry run, the tiny model at BF16), S33TRAIN_TINY_GPUS (the dry run's GPU
# count, 1), S33TRAIN_TIMEOUT_SCALE (1).
set -u
out=${1:?usage: real/campaigns/s33train.sh OUTDIR}
root=$out/s33train
CASES="olmoe-slice:3072:1,2:bf16;llama3-8b-slice:2048:3:bf16;phi35moe-slice:3072:1:bf16;olmoe-slice:3072:1:fp8"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-python3}
tiny=${S33TRAIN_TINY:-0}
scale=${S33TRAIN_TIMEOUT_SCALE:-1}
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
quick=()
if [ "$tiny" = "1" ]; then
  quick=(--quick)
  CASES="tiny:32:2:bf16"
  NGPU=${S33TRAIN_TINY_GPUS:-1}
fi
mkdir -p "$root"
{
  echo "s33train $(date -u +%FT%TZ), $NGPU GPU(s) visible, GPU $ONE_GPU, cases $CASES"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
  else
    if [ "$tiny" != "1" ]; then
      { nvidia-smi; nvidia-smi -q -d CLOCK,POWER; nvidia-smi topo -m; nproc; lscpu | head -20; } \
        > "$root/host_s33train.txt" 2>&1
    fi
    mkdir -p "$root/trace"
    start=$(date +%s)
    CUDA_VISIBLE_DEVICES=$ONE_GPU REAL_BENCH_TRAIN_TRACE_CASES="$CASES" timeout -k 5 $((150 * scale)) \
      "$PY" -m real.bench --out "$root/trace" --only train_trace --budget-s 120 ${quick[@]+"${quick[@]}"} \
      2>&1 | grep -v "ActivityProfilerHandler"
    echo "s33train part trace rc=${PIPESTATUS[0]}, $(( $(date +%s) - start )) s"
  fi
  echo "s33train done $(date -u +%FT%TZ)"
} 2>&1 | tee -a "$root/s33train.log"

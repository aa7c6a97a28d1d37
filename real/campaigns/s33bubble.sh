#!/usr/bin/env bash
# s33bubble (issue 13): the fresh blind one-H200 train set U that judges the candidate ADOPT_TRAIN_KERNEL_BUBBLE
# (docs/notes/s33bubble_rule.md). One part on one GPU (the first the caller gives; GPU 0 where unset), alone on its
# host (the rule judges blind; another lane's GPU work would move the steps):
#   train  real.bench --only train (bench_train, AdamW step, BF16 + the device's FP8) on TRAIN: olmoe-slice s1536 b2,
#          s2560 b1; mixtral-slice s2048 b1; qwen3moe-slice s3072 b1; v2-lite-slice s3072 b1; v3-slice-1l s3072 b1;
#          phi35moe-slice s2048 b1; llama3-8b-slice s3072 b1 (16 rows). `timeout` 100 s, the bench's own budget 80 s
#          (expected ~45 s).
# The twin's predictions of every row, in force and with the candidate, were committed before this ran
# (calibration/measurements/prereg/s33bubble_train_predictions.csv, `python -m calibration.s33bubble write`); the cases
# are calibration/s33bubble.py's TRAIN_CASES (a test holds them equal). No GPU: exits 0, nothing run.
# Outputs OUTDIR/s33bubble/: train/ (model.csv, env.json; GPU name, clocks, power, torch/CUDA versions in every row),
# host_s33bubble.txt (nvidia-smi, clocks, topology, CPU), s33bubble.log.
#   bash real/campaigns/s33bubble.sh OUTDIR
# Env: PY (python3), S33BUBBLE_TINY (1: CPU dry run, the tiny model), S33BUBBLE_TINY_GPUS (the dry run's GPU count, 1),
# S33BUBBLE_TIMEOUT_SCALE (1).
set -u
out=${1:?usage: real/campaigns/s33bubble.sh OUTDIR}
root=$out/s33bubble
TRAIN="olmoe-slice:1536:2;olmoe-slice:2560:1;mixtral-slice:2048:1;qwen3moe-slice:3072:1;v2-lite-slice:3072:1;v3-slice-1l:3072:1;phi35moe-slice:2048:1;llama3-8b-slice:3072:1"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-python3}
tiny=${S33BUBBLE_TINY:-0}
scale=${S33BUBBLE_TIMEOUT_SCALE:-1}
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
quick=()
if [ "$tiny" = "1" ]; then
  quick=(--quick)
  TRAIN="tiny:32:2"
  NGPU=${S33BUBBLE_TINY_GPUS:-1}
fi
mkdir -p "$root"
{
  echo "s33bubble $(date -u +%FT%TZ), $NGPU GPU(s) visible, GPU $ONE_GPU, cases $TRAIN"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
  else
    if [ "$tiny" != "1" ]; then
      { nvidia-smi; nvidia-smi -q -d CLOCK,POWER; nvidia-smi topo -m; nproc; lscpu | head -20; } \
        > "$root/host_s33bubble.txt" 2>&1
    fi
    mkdir -p "$root/train"
    start=$(date +%s)
    CUDA_VISIBLE_DEVICES=$ONE_GPU REAL_BENCH_TRAIN_CASES="$TRAIN" timeout -k 5 $((100 * scale)) \
      "$PY" -m real.bench --out "$root/train" --only train --budget-s 80 ${quick[@]+"${quick[@]}"}
    echo "s33bubble part train rc=$?, $(( $(date +%s) - start )) s"
  fi
  echo "s33bubble done $(date -u +%FT%TZ)"
} 2>&1 | tee -a "$root/s33bubble.log"

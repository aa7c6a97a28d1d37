#!/usr/bin/env bash
# s33blind (issue 13): a blind, pre-registered judgement of today's twin on fresh one-GPU runs (docs/notes/s33blind_rule.md).
# Two parts on one GPU (the first the caller gives; GPU 0 where unset), each bounded by `timeout`:
#   serve  real/campaigns/cold_host_steps.sh (section host_steps, the harness of the adopted decode pricing) on CASES:
#          6 slices at prompt lengths no record holds, 64 generated, prefill b5, decode b10, 28, 44: 6 prefill + 18
#          decode records, BF16; this campaign's first Python process (s33cold's parts may have run before it in the
#          same device call, in their own processes). One `timeout` of 150 s (expected ~50 s).
#   train  real.bench --only train (bench_train, AdamW step, BF16 + the device's FP8) on TRAIN: olmoe-slice s3072 b1,2;
#          phi35moe-slice s3072 b1,2; llama3-8b-slice s2048 b3; dsv2-slice s2048 b3 (12 rows). `timeout` 100 s, the
#          bench's own budget 80 s (expected ~60 s).
# The twin's predictions of every row were committed before this ran (calibration/measurements/prereg/
# s33blind_{train_predictions.csv,serve_predictions.json}, `python -m calibration.s33blind write`); the cases are
# calibration/s33blind.py's TRAIN_CASES and CASES (a test holds them equal). No GPU: exits 0, nothing run.
# Outputs OUTDIR/s33blind/: cold/ (model.csv, serve_steps.csv, host_dispatch.csv, serve_kernels.csv, step_kernels.csv,
# env.json), train/ (model.csv, env.json; GPU name, clocks, power, torch/CUDA versions in every row),
# host_s33blind.txt (nvidia-smi, clocks, topology, CPU), s33blind.log (the serve part's, then the train part's).
#   bash real/campaigns/s33blind.sh OUTDIR
# Env: PY (python3), S33BLIND_TINY (1: CPU dry run, the tiny model), S33BLIND_TINY_GPUS (the dry run's GPU count, 1),
# S33BLIND_TIMEOUT_SCALE (1), S33BLIND_PARTS (default "serve train").
set -u
out=${1:?usage: real/campaigns/s33blind.sh OUTDIR}
root=$out/s33blind
CASES="llama3-8b-slice:3072:64:5:10,28,44;dsv2-slice:1792:64:5:10,28,44;phi35moe-slice:3072:64:5:10,28,44;olmoe-slice:1792:64:5:10,28,44;mixtral-slice:1792:64:5:10,28,44;v2-lite-slice:1792:64:5:10,28,44"
TRAIN="olmoe-slice:3072:1,2;phi35moe-slice:3072:1,2;llama3-8b-slice:2048:3;dsv2-slice:2048:3"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-python3}
tiny=${S33BLIND_TINY:-0}
scale=${S33BLIND_TIMEOUT_SCALE:-1}
parts=" ${S33BLIND_PARTS:-serve train} "
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
quick=()
if [ "$tiny" = "1" ]; then
  quick=(--quick)
  TRAIN="tiny:32:2"
  NGPU=${S33BLIND_TINY_GPUS:-1}
fi
mkdir -p "$root"
if [[ "$parts" == *" serve "* ]]; then
  bash "$(dirname "$0")/cold_host_steps.sh" s33blind "$CASES" "$out" > /dev/null 2>&1
  tail -2 "$root/s33blind.log"
fi
{
  echo "s33blind train $(date -u +%FT%TZ), $NGPU GPU(s) visible, GPU $ONE_GPU, cases $TRAIN"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
  elif [[ "$parts" == *" train "* ]]; then
    mkdir -p "$root/train"
    start=$(date +%s)
    CUDA_VISIBLE_DEVICES=$ONE_GPU REAL_BENCH_TRAIN_CASES="$TRAIN" timeout -k 5 $((100 * scale)) \
      "$PY" -m real.bench --out "$root/train" --only train --budget-s 80 ${quick[@]+"${quick[@]}"}
    echo "s33blind part train rc=$?, $(( $(date +%s) - start )) s"
  fi
  echo "s33blind train done $(date -u +%FT%TZ)"
} 2>&1 | tee -a "$root/s33blind.log"

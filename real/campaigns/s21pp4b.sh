#!/usr/bin/env bash
# s21pp4b: the second delivery of s21pp4's PP2 x EP2 rows (docs/notes/s21pp4_rule.md, addendum A).
# Why: in s21pp4's first delivery (4xH200) the pp2ep2 configurations came last and met the bench's
# budget: qwen3moe's dualpipe was skipped, and four configurations were timed on 1-2 steps, too few
# for the ranking's rank-sum test (its parts also reached their `timeout` at the bench's end: ~13 s
# to the bench's start on that host, not the ~10 s assumed). This times every pp2ep2 configuration
# again, alone, on exactly 4 timed steps each (--whole-reps: a configuration whose 4 steps do not fit
# the budget is skipped, never shortened), the same command otherwise:
#   pp2ep2  pp 2, ep 2, dp 2, 4 micro-batches of one 4096-token sequence, BF16, schedules 1f1b, zb1p,
#           dualpipev, dualpipe (the first delivery's order), warm-up 2
# on qwen3moe-mla-slice, qwen2moe-mla-slice, mixtral-mla-slice at 8 layers. The predictions are the
# ones committed before the first delivery (calibration/measurements/prereg/s21pp4_predictions.csv);
# nothing is predicted anew and nothing is fitted to these rows.
# Run it alone on a 4-GPU host (4xH200 or 4xH100):
#   bash real/campaigns/s21pp4b.sh OUTDIR
# Budget: one part per model on GPUs 0-3 under `timeout` 45, 45, 55 s (<= 145 s in all; expected
# ~30, 29, 36 s from the first delivery's steps); the bench's own budget 28, 28, 38 s from its start.
# Rows are written per configuration, so a part cut short keeps what it measured. Stops cleanly
# (exit 0, nothing run) on fewer than 4 GPUs.
# Outputs OUTDIR/s21pp4b/<model>/: pipeline_step.csv (GPU name, clocks, torch/CUDA/NCCL versions in
# every row), pipeline_ops.csv, pipeline_routing.csv, pipeline_trace_<schedule>.json,
# env_pipeline_pp2ep2.json; OUTDIR/s21pp4b/s21pp4b.log, host_s21pp4b.txt (nvidia-smi, topology, clocks).
# Env: PY (python3), S21PP4B_PARTS (default: the three models), S21PP4B_TINY (1: CPU dry run on four
# gloo ranks, the tiny model at 8 layers, two schedules, one timed step), S21PP4B_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s21pp4b.sh OUTDIR}/s21pp4b
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S21PP4B_TINY:-0}
scale=${S21PP4B_TIMEOUT_SCALE:-1}
# model:layers:part timeout s:bench budget s, in calibration/prereg_pp4.py CASES's order (a test holds them equal)
MODELS="qwen3moe-mla-slice:8:45:28 qwen2moe-mla-slice:8:45:28 mixtral-mla-slice:8:55:38"
parts=" ${S21PP4B_PARTS:-qwen3moe-mla-slice qwen2moe-mla-slice mixtral-mla-slice} "
campaign=s21pp4b
gpus=4
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU check, part(), torchrun (4 ranks)
[ "$tiny" = "1" ] || { nvidia-smi -q -d CLOCK; } >> "$root/host_$campaign.txt" 2>&1

runs=(--warmup 2 --min-time-s 0 --reps-min 4 --reps-max 4 --whole-reps --schedules 1f1b,zb1p,dualpipev,dualpipe
      --layout-microbatches pp2ep2=4)
[ "$tiny" = "1" ] && runs=(--warmup 1 --min-time-s 0 --reps-min 1 --reps-max 1 --whole-reps --schedules zb1p,dualpipe
                           --layout-microbatches pp2ep2=4)
for case in $MODELS; do
  IFS=: read -r model layers limit budget <<< "$case"
  shape=(--model "$model" --num-layers "$layers" --seq-len 4096 --mb-seqs 1)
  [ "$tiny" = "1" ] && shape=(--tiny --num-layers "$layers") && budget=600
  mkdir -p "$root/$model"
  part "$model" "$limit" "${torchrun[@]}" -m real.pipeline --out "$root/$model" "${shape[@]}" --precision bf16 \
    --layouts pp2ep2 "${runs[@]}" --holdout 4,8,16 --trace-microbatches 4 --budget-s "$budget"
done
echo "s21pp4b done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s21pp4: a pre-registered prediction of whole FOUR-GPU pipeline steps of models the twin has never
# seen, on layouts no record holds for them (issue 13). Why: the four-GPU pipeline records hold only
# v2-lite-slice at PP2 x EP2; s20ppnew met issue 13's pipeline_step target on PP2 steps of three slices
# of other MoE families (twin/data/models.toml). This times real/pipeline's step on four GPUs in two
# layouts under the four schedules (1f1b, zb1p, dualpipev, dualpipe):
#   pp4     pp 4, ep 1, dp 1: one stage a GPU, activations and gradients point to point; 8 and 16
#           micro-batches (DualPipe at pp 4 needs >= 8)
#   pp2ep2  pp 2, ep 2, dp 2: two pipelines of two stages, each stage's experts over its two replicas
#           (all-to-all); 4 micro-batches (the budget: 8 and 16 at pp2ep2 would double the campaign)
# on (8 layers each: DualPipeV cuts pp 4 into 8 model stages, one layer each):
#   qwen3moe-mla-slice  Qwen3-30B-A3B's MoE: 128 experts of width 768, top-8, vocabulary 151,936
#   qwen2moe-mla-slice  Qwen1.5-MoE-A2.7B's: 60 of width 1408, top-4, 4-wide shared
#   mixtral-mla-slice   Mixtral-8x7B's: 8 of width 14336, top-2, hidden 4096
# One 4096-token sequence a micro-batch, BF16. The twin's predictions of these rows (steps and each
# rank's idle) were committed before this ran (calibration/measurements/prereg/s21pp4_predictions.csv,
# python -m calibration.prereg_pp4 write); the records are compared with them and fitted to nothing.
# Run it alone on a 4-GPU host (4xH200 or 4xH100, the same script):
#   bash real/campaigns/s21pp4.sh OUTDIR
# Budget: one part per model on GPUs 0-3, under `timeout` 60, 58, 82 s (<= 200 s in all); the bench's
# own budget 48, 46, 68 s from its start (no configuration starts after it; sized on the twin's own
# 4xH200 step predictions plus s20ppnew's per-part and per-configuration overheads on 2xH200: ~10 s
# to the bench's start, ~1.3 s a configuration); warm-up 2, 4 timed steps a configuration (4 against
# 4 is the fewest whose exact rank-sum p can fall below 0.05: the ranking's pairs). Order in a part:
# pp4 first (each schedule at 8 then 16), then pp2ep2: a part cut short loses pp2ep2's last
# schedules first. Rows are written per configuration, so a part cut short keeps what it measured.
# Stops cleanly (exit 0, nothing run) on fewer than 4 GPUs.
# Outputs OUTDIR/s21pp4/<model>/: pipeline_step.csv (GPU name, clocks, torch/CUDA/NCCL versions in
# every row), pipeline_ops.csv, pipeline_routing.csv, pipeline_trace_<schedule>.json,
# env_pipeline_pp4_pp2ep2.json; OUTDIR/s21pp4/s21pp4.log, host_s21pp4.txt (nvidia-smi, topology,
# clocks).
# Env: PY (python3), S21PP4_PARTS (default: the three models), S21PP4_TINY (1: CPU dry run on four
# gloo ranks, the tiny model at 8 layers, two schedules, one timed step), S21PP4_TIMEOUT_SCALE (1; the dry run more).
set -u
root=${1:?usage: s21pp4.sh OUTDIR}/s21pp4
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S21PP4_TINY:-0}
scale=${S21PP4_TIMEOUT_SCALE:-1}
# model:layers:part timeout s:bench budget s, in calibration/prereg_pp4.py CASES's order (a test holds them equal)
MODELS="qwen3moe-mla-slice:8:60:48 qwen2moe-mla-slice:8:58:46 mixtral-mla-slice:8:82:68"
parts=" ${S21PP4_PARTS:-qwen3moe-mla-slice qwen2moe-mla-slice mixtral-mla-slice} "
campaign=s21pp4
gpus=4
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU check, part(), torchrun (4 ranks)
[ "$tiny" = "1" ] || { nvidia-smi -q -d CLOCK; } >> "$root/host_$campaign.txt" 2>&1

runs=(--warmup 2 --min-time-s 0 --reps-min 4 --reps-max 4 --schedules 1f1b,zb1p,dualpipev,dualpipe
      --layout-microbatches pp4=8/16,pp2ep2=4)
# the CPU dry run: the same command on the tiny model at 8 layers, the two schedules that need them and
# the pairs' groups (dualpipev, dualpipe), one count a layout, one warm-up and one timed step
[ "$tiny" = "1" ] && runs=(--warmup 1 --min-time-s 0 --reps-min 1 --reps-max 1 --schedules dualpipev,dualpipe
                           --layout-microbatches pp4=8,pp2ep2=4)
for case in $MODELS; do
  IFS=: read -r model layers limit budget <<< "$case"
  shape=(--model "$model" --num-layers "$layers" --seq-len 4096 --mb-seqs 1)
  [ "$tiny" = "1" ] && shape=(--tiny --num-layers "$layers") && budget=600
  mkdir -p "$root/$model"
  part "$model" "$limit" "${torchrun[@]}" -m real.pipeline --out "$root/$model" "${shape[@]}" --precision bf16 \
    --layouts pp4,pp2ep2 "${runs[@]}" --holdout 4,8,16 --trace-microbatches 8 --budget-s "$budget"
done
echo "s21pp4 done $(date -u +%FT%TZ)" | tee -a "$log"

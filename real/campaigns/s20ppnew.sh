#!/usr/bin/env bash
# s20ppnew: a pre-registered prediction of whole two-GPU PIPELINE steps (PP2) of models the twin has
# never seen. Why: issue 13's pipeline_step target (held-out median |error| <= 5%, P90 <= 10%; each
# rank's idle; schedules ranked as measured) is met on the DeepSeek slices only; s20new and s20epnew
# met the one-GPU train_step and EP2 targets on three slices of other MoE families
# (twin/data/models.toml). This times real/pipeline's PP2 step (pp 2, ep 1, dp 1: each stage on its
# own GPU, activations and gradients sent point to point) under the schedules of the committed
# two-GPU pipeline rows (1f1b, zb1p, dualpipev, dualpipe; real/campaigns/i13pp.sh) on:
#   qwen3moe-mla-slice  4 layers (Qwen3-30B-A3B's MoE: 128 experts of width 768, top-8)
#   qwen2moe-mla-slice  4 layers (Qwen1.5-MoE-A2.7B's: 60 of width 1408, top-4, 4-wide shared)
#   mixtral-mla-slice   4 layers (Mixtral-8x7B's: 8 of width 14336, top-2, hidden 4096)
# 4 layers each: DualPipeV cuts pp 2 into 4 model stages. 4 and 8 micro-batches of one 4096-token
# sequence, BF16. The twin's predictions of these rows (steps and each rank's idle) were committed
# before this ran (calibration/measurements/prereg/s20ppnew_predictions.csv, calibration/prereg_pp.py
# write); the records are compared with them and fitted to nothing.
# Run it alone on a 2-GPU host (2xH200 or 2xH100, the same script):
#   bash real/campaigns/s20ppnew.sh OUTDIR
# One part per model, GPUs 0 and 1, under `timeout` 38, 38, 44 s (<= 120 s in all; the bench's own
# budget 30, 30, 36 s from its start: no configuration starts after it); warm-up 2, 4 timed steps a
# configuration (4 against 4 is the fewest whose exact rank-sum p can fall below 0.05: the ranking's
# pairs). Rows are written per configuration, so a part cut short keeps what it measured. Stops
# cleanly (exit 0, nothing run) on fewer than 2 GPUs.
# Outputs OUTDIR/s20ppnew/<model>/: pipeline_step.csv (GPU name, clocks, torch/CUDA/NCCL versions in
# every row), pipeline_ops.csv, env_pipeline_pp2.json; OUTDIR/s20ppnew/s20ppnew.log, host_s20ppnew.txt.
# Env: PY (python3), S20PPNEW_PARTS (default: the three models), S20PPNEW_TINY (1: CPU dry run on
# gloo ranks, the tiny model), S20PPNEW_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s20ppnew.sh OUTDIR}/s20ppnew
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S20PPNEW_TINY:-0}
scale=${S20PPNEW_TIMEOUT_SCALE:-1}
# model:layers:part timeout s:bench budget s, in calibration/prereg_pp.py CASES's order (a test holds them equal)
MODELS="qwen3moe-mla-slice:4:38:30 qwen2moe-mla-slice:4:38:30 mixtral-mla-slice:4:44:36"
parts=" ${S20PPNEW_PARTS:-qwen3moe-mla-slice qwen2moe-mla-slice mixtral-mla-slice} "
campaign=s20ppnew
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

reps=(--min-time-s 0 --reps-min 4 --reps-max 4)
[ "$tiny" = "1" ] && reps=(--min-time-s 0 --reps-min 1 --reps-max 1)
for case in $MODELS; do
  IFS=: read -r model layers limit budget <<< "$case"
  shape=(--model "$model" --num-layers "$layers" --seq-len 4096 --mb-seqs 1)
  [ "$tiny" = "1" ] && shape=(--tiny)
  mkdir -p "$root/$model"
  part "$model" "$limit" "${torchrun[@]}" -m real.pipeline --out "$root/$model" "${shape[@]}" --precision bf16 \
    --warmup 2 "${reps[@]}" --layouts pp2 --schedules 1f1b,zb1p,dualpipev,dualpipe --microbatches 4,8 \
    --holdout 4,8 --trace-microbatches 8 --budget-s "$budget"
done
echo "s20ppnew done $(date -u +%FT%TZ)" | tee -a "$log"

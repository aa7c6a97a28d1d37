#!/usr/bin/env bash
# s20epnew: a pre-registered prediction of whole EP2 training steps (2 GPUs, expert parallel) of
# models the twin has never seen. Why: issue 13's ep_step target (each held-out step's |error| <= 5%;
# 1.1% on 2xH100, 1.8% on 2xH200) is met on v2-lite-slice only; s20new met the one-GPU train_step
# target on three slices of other MoE families (twin/data/models.toml, docs/notes/s20new.md). This
# times real/pipeline's EP2 step (pp 1, ep 2, dp 2: forward and backward of each micro-batch, the
# dispatch and combine all-to-alls of real/ep.py, the replicated weights' gradient all-reduce) on:
#   qwen3moe-mla-slice  4 layers (Qwen3-30B-A3B's MoE: 128 experts of width 768, top-8; 64 a rank)
#   qwen2moe-mla-slice  4 layers (Qwen1.5-MoE-A2.7B's: 60 of width 1408, top-4, 4-wide shared; 30 a rank)
#   mixtral-mla-slice   2 layers (Mixtral-8x7B's: 8 of width 14336, top-2, hidden 4096; 4 a rank)
# each at 1, 2, 4 micro-batches of one 4096-token sequence, BF16, as s12ep / s13ep's ep2 part times
# v2-lite-slice. The twin's predictions of these rows were committed before this ran
# (calibration/measurements/prereg/s20epnew_predictions.csv, calibration/prereg.py write-ep); the
# records are compared with them and fitted to nothing.
# Run it alone on a 2-GPU host (2xH200 or 2xH100, the same script):
#   bash real/campaigns/s20epnew.sh OUTDIR
# One part per model, GPUs 0 and 1, each under `timeout` 30 s (the bench's own budget 18 s: no
# configuration starts after it), <= 100 s in all; warm-up 2, >= 3 timed steps (0.5 s, at most 5).
# Rows are written per configuration, so a part cut short keeps what it measured. Stops cleanly
# (exit 0, nothing run) on fewer than 2 GPUs.
# Outputs OUTDIR/s20epnew/<model>/: pipeline_step.csv (GPU name, clocks, torch/CUDA/NCCL versions in
# every row), pipeline_ops.csv, env_pipeline_ep2.json; OUTDIR/s20epnew/s20epnew.log, host_s20epnew.txt.
# Env: PY (python3), S20EPNEW_PARTS (default: the three models), S20EPNEW_TINY (1: CPU dry run on
# gloo ranks, the tiny model), S20EPNEW_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s20epnew.sh OUTDIR}/s20epnew
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S20EPNEW_TINY:-0}
scale=${S20EPNEW_TIMEOUT_SCALE:-1}
# model:layers, in calibration/prereg.py EP_CASES's order (a test holds them equal)
MODELS="qwen3moe-mla-slice:4 qwen2moe-mla-slice:4 mixtral-mla-slice:2"
parts=" ${S20EPNEW_PARTS:-qwen3moe-mla-slice qwen2moe-mla-slice mixtral-mla-slice} "
campaign=s20epnew
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

quick=(--min-time-s 0.5 --reps-min 3 --reps-max 5)
[ "$tiny" = "1" ] && quick=(--min-time-s 0 --reps-min 2 --reps-max 2)
for case in $MODELS; do
  model=${case%%:*}
  shape=(--model "$model" --num-layers "${case##*:}" --seq-len 4096 --mb-seqs 1)
  [ "$tiny" = "1" ] && shape=(--tiny)
  mkdir -p "$root/$model"
  part "$model" 30 "${torchrun[@]}" -m real.pipeline --out "$root/$model" "${shape[@]}" --precision bf16 \
    --warmup 2 "${quick[@]}" --layouts ep2 --ep-microbatches 1,2,4 --ep-holdout 2 --trace-microbatches 4 \
    --budget-s 18
done
echo "s20epnew done $(date -u +%FT%TZ)" | tee -a "$log"

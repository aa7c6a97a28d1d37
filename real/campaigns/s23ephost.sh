#!/usr/bin/env bash
# s23ephost (issue 13): the EP layer's post-sync host time, marked per segment, and fresh EP2 steps.
#
# Why: s22epq (docs/notes/s22epq_rule.md) found the Qwen slices' EP forward kernels priced within ~10-15%
# a class, but the GPU idle 0.85-1.14 ms a layer call (twin 0.16-0.41) after dispatch's two blocking
# .tolist() while the host issues the rest of the layer behind an empty GPU; the 2xH100 host loses twice
# what the 2xH200 one does. No record marks the host per segment on these shapes (s22epq's are event-
# timed calls and profiles; s13ep's marks are v2-lite-slice's). Two kinds of part, one torchrun each:
#   fit_<model>   real.pipeline EP2 steps (pp 1, ep 2, dp 2) at 1 and 4 micro-batches and PP2 1f1b at 4
#                 (the run's own forward host rate, the twin's per-launch host input), each configuration
#                 under real/ep.py's host marks: `host` (perf_counter_ns at each MARK_SEGMENTS point) and
#                 `events` (plus a CUDA event there: when the stream reached it, i.e. the GPU's idle after
#                 each .tolist()); qwen2moe-mla-slice:4, qwen3moe-mla-slice:4, mixtral-mla-slice:2 (the
#                 s20epnew shapes). Split fit: the post-sync host term is measured on these only.
#   ho_<model>    fresh whole EP2 steps no record holds (held out, unmarked): bench-small:4 (hidden 1,024,
#                 16 experts of width 256, top-4: kernels far shorter than their issue), qwen3moe-slice:4
#                 and mixtral-slice:2 (grouped-query attention with the Qwen3 / Mixtral MoE) at 1, 2, 4
#                 micro-batches, split holdout (docs/notes/s23ephost_rule.md judges the change on them).
# Model shapes as s20epnew: seq 4096, one sequence a micro-batch, BF16, warm-up 2, >= 3 timed steps.
# Run it alone on a 2-GPU host (2xH100 asked; 2xH200 useful: the same script, its own records):
#   bash real/campaigns/s23ephost.sh OUTDIR
# Budget: <= 150 s wall: fit parts under `timeout` 26 s (bench budget 10 s: no configuration starts
# after it), held-out parts 22 s (budget 8 s); torchrun start and CUDA/NCCL init ~10 s a part. Rows are
# written per configuration and mode, so a part cut short keeps what it measured. Stops cleanly (exit 0,
# nothing run) on fewer than 2 GPUs. Every pipeline_step row carries the GPU name, SM/memory clocks,
# torch/CUDA/NCCL versions; env_pipeline_*.json the full environment.
# Outputs: OUTDIR/s23ephost/fit/<model>/{marks_host,marks_events}/{pipeline_step,pipeline_ops,
# ep_host_marks,...}.csv, OUTDIR/s23ephost/holdout/<model>/{pipeline_step,pipeline_ops,...}.csv,
# s23ephost.log, host_s23ephost.txt.
# Env: PY (python3), S23EPHOST_PARTS (default: every part), S23EPHOST_TINY (1: CPU dry run on gloo
# ranks, the tiny model), S23EPHOST_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s23ephost.sh OUTDIR}/s23ephost
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S23EPHOST_TINY:-0}
scale=${S23EPHOST_TIMEOUT_SCALE:-1}
# model:layers (calibration/ep_postsync.py FIT_MODELS / HOLDOUT_MODELS restate them; a test keeps them equal)
FIT_MODELS="qwen2moe-mla-slice:4 qwen3moe-mla-slice:4 mixtral-mla-slice:2"
HOLDOUT_MODELS="bench-small:4 qwen3moe-slice:4 mixtral-slice:2"
all_parts=""
for c in $FIT_MODELS; do all_parts="$all_parts fit_${c%%:*}"; done
for c in $HOLDOUT_MODELS; do all_parts="$all_parts ho_${c%%:*}"; done
parts=" ${S23EPHOST_PARTS:-$all_parts} "
campaign=s23ephost
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

quick=(--min-time-s 0.3 --reps-min 3 --reps-max 4)
[ "$tiny" = "1" ] && quick=(--min-time-s 0 --reps-min 2 --reps-max 2)
# the bench budgets scale with the parts' timeouts (scale 1 on a GPU: the budgets that ran; the dry run's 4 gives a
# loaded CPU the time to reach the PP2 configuration, which a 10 s budget on a slow host did not: session 30's CI)
fit_budget_s=$(( 10 * scale )) ho_budget_s=$(( 8 * scale ))
shape_of() {   # model:layers -> the bench's shape arguments (the tiny model in the dry run)
  if [ "$tiny" = "1" ]; then echo "--tiny"; else echo "--model ${1%%:*} --num-layers ${1##*:} --seq-len 4096 --mb-seqs 1"; fi
}
for case in $FIT_MODELS; do
  model=${case%%:*}
  out="$root/fit/$model"
  mkdir -p "$out"
  # shellcheck disable=SC2046
  part "fit_$model" 26 "${torchrun[@]}" -m real.pipeline --out "$out" $(shape_of "$case") --precision bf16 \
    --warmup 2 "${quick[@]}" --layouts ep2,pp2 --ep-microbatches 1,4 --ep-holdout 0 \
    --schedules 1f1b --microbatches 4 --holdout 0 --host-marks host,events --budget-s $fit_budget_s
done
for case in $HOLDOUT_MODELS; do
  model=${case%%:*}
  out="$root/holdout/$model"
  mkdir -p "$out"
  # shellcheck disable=SC2046
  part "ho_$model" 22 "${torchrun[@]}" -m real.pipeline --out "$out" $(shape_of "$case") --precision bf16 \
    --warmup 2 "${quick[@]}" --layouts ep2 --ep-microbatches 1,2,4 --ep-holdout 1,2,4 \
    --budget-s $ho_budget_s
done
echo "s23ephost done $(date -u +%FT%TZ)" | tee -a "$log"

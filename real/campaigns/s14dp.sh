#!/usr/bin/env bash
# s14dp (issue 13): is the schedule ranking on a 4-GPU PP2 x EP2 host decidable, and which way?
#
# Why: the twin ranks DualPipe ahead of DualPipeV at 4 and 8 micro-batches and ZB1P ahead of 1F1B at
# 8 on the 4xH100 records (s13pp, 00:19 UTC); measured, DualPipeV ran 1.0% / 2.7% faster than
# DualPipe (at 8 on ONE timed step: the budget was spent) and 1F1B 1.1% faster than ZB1P, gaps of
# 2.5-14 ms against steps that move 10-80 ms from one to the next (DualPipe at 8: 499-580 ms over
# its 5 steps; at 16: 922-1059) and whole-host stalls that lengthen one op on all four GPUs at once
# (docs/notes/s14dp_rule.md). On the committed records the measured order of those pairs is not
# resolved (too few steps). This campaign times the four schedules at 8 and 4 micro-batches with
# 10 timed steps each, twice, the second time in the reverse order (so a drift of the host over the
# minute shows as a difference between the rounds, not as a schedule's gap):
#   round_a  dualpipe, dualpipev, 1f1b, zb1p (each at 8, then 4)      -> OUTDIR/s14dp/x4_a/
#   round_b  zb1p, 1f1b, dualpipev, dualpipe (each at 4, then 8)      -> OUTDIR/s14dp/x4_b/
# Each: real.pipeline on PP2 x EP2, warm-up 2, exactly 10 timed steps a configuration (--whole-reps:
# a configuration whose 10 steps do not fit the budget left is skipped, never shortened), unpinned
# (s13pp rule P: pinning did not steady the idle), host marks in pipeline_ops.csv as every bench.
# Outputs per round: pipeline_step.csv, pipeline_ops.csv, pipeline_routing.csv,
# pipeline_trace_*.json, env_pipeline_pp2ep2.json (GPU name, clocks, torch / CUDA / NCCL versions;
# every row carries the GPU's name, clocks and timestamp). The records decide the ranking target's
# decidability (calibration.pipeline_judgement.ranking_noise); they are kept out of validation.
#
# Run it alone on a 4-GPU host (4xH100 asked; a 4xH200 serves as well: its ranking misses the same
# pair at 8, and every row records the GPU):
#   bash real/campaigns/s14dp.sh OUTDIR
# Budget: <= 170 s in all (timeouts 82 + 82 s; the bench's own budget 58 s a round: no configuration
# starts after it; s13pp's unpinned part, 11 configurations x 5 steps, took 72 s on 4xH100).
# Model and shapes as s13pp/s10pp/s9ep: v2-lite-slice, 8 layers, seq 4096, one sequence per
# micro-batch, BF16, the same tokens and weights. Rows are written per configuration, so a round cut
# short by `timeout` keeps what it measured. Stops cleanly (exit 0, nothing run) on fewer than 4 GPUs.
# Env: PY (python3), S14DP_PARTS (default "round_a round_b"), S14DP_TINY (1: the CPU dry run on four
# gloo ranks, the tiny model, fewer configurations), S14DP_TIMEOUT_SCALE (1; the CPU dry run gives more).
set -u
root=${1:?usage: s14dp.sh OUTDIR}/s14dp
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S14DP_TINY:-0}
scale=${S14DP_TIMEOUT_SCALE:-1}
parts=" ${S14DP_PARTS:-round_a round_b} "
campaign=s14dp
gpus=4
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU check, part(), torchrun (4 ranks)
{ lscpu; numactl -H; nvidia-smi -q -d CLOCK; } >> "$root/host_$campaign.txt" 2>&1

shape=(--model v2-lite-slice --num-layers 8 --seq-len 4096 --mb-seqs 1)
round_a=(--schedules dualpipe,dualpipev,1f1b,zb1p --microbatches 8,4)
round_b=(--schedules zb1p,1f1b,dualpipev,dualpipe --microbatches 4,8)
reps=10
budget=58   # s, per round: no configuration starts after it
if [ "$tiny" = "1" ]; then   # the same commands on the tiny model, two schedules at 4
  shape=(--tiny)
  round_a=(--schedules dualpipe,dualpipev --microbatches 4)
  round_b=(--schedules dualpipev,dualpipe --microbatches 4)
  reps=3
  budget=600
fi
mkdir -p "$root/x4_a" "$root/x4_b"
for round in a b; do
  if [ "$round" = "a" ]; then configs=("${round_a[@]}"); else configs=("${round_b[@]}"); fi
  part "round_$round" 82 "${torchrun[@]}" -m real.pipeline --out "$root/x4_$round" "${shape[@]}" --precision bf16 \
    --layouts pp2ep2 "${configs[@]}" --holdout 8 --trace-microbatches 8 --warmup 2 --min-time-s 0 \
    --reps-min "$reps" --reps-max "$reps" --whole-reps --budget-s "$budget"
done
echo "s14dp done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s16idle (issue 13): the records that judge each pipeline rank's idle on a measurement that holds
# still (docs/notes/s16idle_rule.md).
#
# Why: a GPU's idle is the step less its compute, and on every multi-GPU host the step's host-paced
# ops move from configuration to configuration and step to step: on the current folders (3-5 timed
# steps a configuration, one pass) single steps idle 2-4x their medians, and in the two 10-step
# rounds of s14dp a GPU's round medians differ by up to 1.5 times the 10% band the target allows. The
# rule judges each GPU's idle as the pooled median of two rounds run in reverse order (>= 10 timed
# steps a round, >= 20 pooled), the twin predicting each round from its own fitting split.
# Parts, by the GPUs of the host:
#   >= 4 GPUs  real/campaigns/s15rank.sh unchanged (PP2 x EP2, its two rounds, 11 timed steps a
#              configuration; the same delivery then judges the ranking too)  -> OUTDIR/s15rank/
#   2-3 GPUs   the same two rounds on PP2 (GPUs 0 and 1):
#                round_a  dualpipe, dualpipev, 1f1b, zb1p (each at 8, then 4)  -> OUTDIR/s16idle/round_a/
#                round_b  zb1p, 1f1b, dualpipev, dualpipe (each at 4, then 8)  -> OUTDIR/s16idle/round_b/
#              each: real.pipeline --layouts pp2, warm-up 2, exactly 11 timed steps a configuration
#              (--whole-reps: a configuration whose steps do not fit the budget left is skipped,
#              never shortened), unpinned, host marks in pipeline_ops.csv as every bench; the
#              8-micro-batch rows held out (--holdout 8), as on the host's current folder.
#   < 2 GPUs   nothing (exit 0).
# With S16IDLE_SET=16 (rule addendum A), 2-3 GPUs: the same two rounds at 16 micro-batches only
# (round_a dualpipe, dualpipev, 1f1b, zb1p; round_b the reverse; every row in the fitting split, as 16
# is on the host's current folder) -> OUTDIR/s16idle16/round_a, round_b; ~145 s (timeouts 76 + 76 s,
# the bench's budget 62 s a round: 4 x 13 steps of 0.86-0.99 s on 2xH200 and ~8 s of set-up).
# Outputs per round: pipeline_step.csv, pipeline_ops.csv, pipeline_routing.csv,
# pipeline_trace_*.json, env_pipeline_pp2.json (GPU name, clocks, torch / CUDA / NCCL versions; every
# row carries the GPU's name, clocks and timestamp); s16idle.log, host_s16idle.txt (nvidia-smi,
# topology, lscpu, numactl, clocks).
#
# Run it alone: on 2xH200 and 2xH100 (the 2-GPU rounds), and on 4xH100 (s15rank.sh's rounds):
#   bash real/campaigns/s16idle.sh OUTDIR
# Budget: <= 150 s a host (2 GPUs: timeouts 75 + 75 s, the bench's own budget 58 s a round, every
# configuration ending within it; s15rank's rounds of the same eight configurations and steps took
# 63-64 s on 4xH200, their benches 49 s; PP2's steps are as long as PP2 x EP2's within ~10%). Model
# and shapes as the current 2-GPU folders: v2-lite-slice, 8 layers, seq 4096, one sequence per
# micro-batch, BF16, the same tokens and weights. Rows are written per configuration, so a round cut
# short by `timeout` keeps what it measured.
# Env: PY (python3), S16IDLE_SET (4,8 by default; 16: addendum A, 2-GPU hosts only, nothing run on 4), S16IDLE_PARTS (default "round_a round_b"), S16IDLE_TINY (1: the CPU dry run on
# gloo ranks, the tiny model, two schedules at 4), S16IDLE_GPUS (the dry run's ranks, default 2; 4
# runs s15rank.sh's dry run), S16IDLE_TIMEOUT_SCALE (1; the dry run more).
set -u
out=${1:?usage: s16idle.sh OUTDIR}
PY=${PY:-python3}
tiny=${S16IDLE_TINY:-0}
scale=${S16IDLE_TIMEOUT_SCALE:-1}
if [ "$tiny" = "1" ]; then
  host_gpus=${S16IDLE_GPUS:-2}
else
  host_gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
fi
set16=0
[ "${S16IDLE_SET:-4,8}" = "16" ] && set16=1
if [ "$host_gpus" -ge 4 ] && [ "$set16" = "1" ]; then   # addendum A is for 2-GPU hosts
  mkdir -p "$out/s16idle16"
  echo "s16idle16: $host_gpus GPUs, the 16-micro-batch set is for 2-GPU hosts: nothing run" | tee -a "$out/s16idle16/s16idle16.log"
  exit 0
fi
if [ "$host_gpus" -ge 4 ]; then   # a 4-GPU host: the ranking's rounds, the same code and commands
  S15RANK_TINY=$tiny S15RANK_TIMEOUT_SCALE=$scale PY=$PY exec bash "$(dirname "$0")/s15rank.sh" "$out"
fi

campaign=s16idle
[ "$set16" = "1" ] && campaign=s16idle16
root=$out/$campaign
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
parts=" ${S16IDLE_PARTS:-round_a round_b} "
gpus=2
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU check (exit 0 under 2), part(), torchrun
{ lscpu; numactl -H; nvidia-smi -q -d CLOCK; } >> "$root/host_$campaign.txt" 2>&1

shape=(--model v2-lite-slice --num-layers 8 --seq-len 4096 --mb-seqs 1)
round_a=(--schedules dualpipe,dualpipev,1f1b,zb1p --microbatches 8,4)
round_b=(--schedules zb1p,1f1b,dualpipev,dualpipe --microbatches 4,8)
reps=11
trace=8
budget=58   # s, per round: the last configuration ends within it (--whole-reps)
limit=75    # s, each round's timeout
if [ "$set16" = "1" ]; then   # addendum A: 16 micro-batches only
  round_a=(--schedules dualpipe,dualpipev,1f1b,zb1p --microbatches 16)
  round_b=(--schedules zb1p,1f1b,dualpipev,dualpipe --microbatches 16)
  trace=16
  budget=62
  limit=76
fi
if [ "$tiny" = "1" ]; then   # the same commands on the tiny model, two schedules at 4 (16 with S16IDLE_SET=16)
  n=4
  [ "$set16" = "1" ] && n=16
  shape=(--tiny)
  round_a=(--schedules dualpipe,dualpipev --microbatches $n)
  round_b=(--schedules dualpipev,dualpipe --microbatches $n)
  reps=3
  budget=600
fi
for round in a b; do
  mkdir -p "$root/round_$round"
  if [ "$round" = "a" ]; then configs=("${round_a[@]}"); else configs=("${round_b[@]}"); fi
  part "round_$round" "$limit" "${torchrun[@]}" -m real.pipeline --out "$root/round_$round" "${shape[@]}" --precision bf16 \
    --layouts pp2 "${configs[@]}" --holdout 8 --trace-microbatches "$trace" --warmup 2 --min-time-s 0 \
    --reps-min "$reps" --reps-max "$reps" --whole-reps --budget-s "$budget"
done
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s15rank (issue 13): the records that judge the 4-GPU schedule ranking (docs/notes/s15rank_rule.md).
#
# Why: on the current 4-GPU validation folders (s13pp, 5 timed steps a schedule) no pair the twin
# orders otherwise than measured is resolved by the steps (exact rank-sum p 0.33-1.00), so the
# ranking target can be neither met nor missed on them. The rule judges each pair of schedules on
# the steps of two rounds pooled (resolved pairs by order, unresolved ones by the Hodges-Lehmann 95%
# interval of the gap) and needs >= 10 timed steps a schedule in each round, >= 20 pooled; from the
# step spread of earlier runs (sigma ~1.5% of a step) 22 pooled steps resolve a 1.3% gap at 80% power.
# Parts (the same code as s14dp.sh, 11 timed steps a configuration instead of 10):
#   round_a  dualpipe, dualpipev, 1f1b, zb1p (each at 8, then 4)      -> OUTDIR/s15rank/round_a/
#   round_b  zb1p, 1f1b, dualpipev, dualpipe (each at 4, then 8)      -> OUTDIR/s15rank/round_b/
# Each: real.pipeline on PP2 x EP2, warm-up 2, exactly 11 timed steps a configuration (--whole-reps:
# a configuration whose steps do not fit the budget left is skipped, never shortened), unpinned,
# host marks in pipeline_ops.csv as every bench; the 8-micro-batch rows held out (--holdout 8).
# Outputs per round: pipeline_step.csv, pipeline_ops.csv, pipeline_routing.csv,
# pipeline_trace_*.json, env_pipeline_pp2ep2.json (GPU name, clocks, torch / CUDA / NCCL versions;
# every row carries the GPU's name, clocks and timestamp); s15rank.log, host_s15rank.txt (nvidia-smi,
# topology, lscpu, numactl, clocks).
#
# Run it alone on a 4-GPU host, once on 4xH100 and once on 4xH200 (each useful on its own: each
# host kind's ranking target is judged on its own run):
#   bash real/campaigns/s15rank.sh OUTDIR
# Budget: <= 170 s in all (timeouts 84 + 84 s; the bench's own budget 62 s a round: no configuration
# starts after it; s14dp's rounds at 10 steps took 64-69 s on 4xH100, their benches 51-52 s; 11 steps
# add ~3.3 s a round). Model and shapes as s14dp/s13pp: v2-lite-slice, 8 layers, seq 4096, one
# sequence per micro-batch, BF16, the same tokens and weights. Rows are written per configuration,
# so a round cut short by `timeout` keeps what it measured. Stops cleanly (exit 0, nothing run) on
# fewer than 4 GPUs.
# Env: PY (python3), S15RANK_PARTS (default "round_a round_b"), S15RANK_TINY (1: the CPU dry run on
# four gloo ranks, the tiny model, fewer configurations), S15RANK_TIMEOUT_SCALE (1; the dry run more).
set -u
root=${1:?usage: s15rank.sh OUTDIR}/s15rank
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S15RANK_TINY:-0}
scale=${S15RANK_TIMEOUT_SCALE:-1}
parts=" ${S15RANK_PARTS:-round_a round_b} "
campaign=s15rank
gpus=4
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU check, part(), torchrun (4 ranks)
{ lscpu; numactl -H; nvidia-smi -q -d CLOCK; } >> "$root/host_$campaign.txt" 2>&1

shape=(--model v2-lite-slice --num-layers 8 --seq-len 4096 --mb-seqs 1)
round_a=(--schedules dualpipe,dualpipev,1f1b,zb1p --microbatches 8,4)
round_b=(--schedules zb1p,1f1b,dualpipev,dualpipe --microbatches 4,8)
reps=11
budget=62   # s, per round: no configuration starts after it
if [ "$tiny" = "1" ]; then   # the same commands on the tiny model, two schedules at 4
  shape=(--tiny)
  round_a=(--schedules dualpipe,dualpipev --microbatches 4)
  round_b=(--schedules dualpipev,dualpipe --microbatches 4)
  reps=3
  budget=600
fi
for round in a b; do
  mkdir -p "$root/round_$round"
  if [ "$round" = "a" ]; then configs=("${round_a[@]}"); else configs=("${round_b[@]}"); fi
  part "round_$round" 84 "${torchrun[@]}" -m real.pipeline --out "$root/round_$round" "${shape[@]}" --precision bf16 \
    --layouts pp2ep2 "${configs[@]}" --holdout 8 --trace-microbatches 8 --warmup 2 --min-time-s 0 \
    --reps-min "$reps" --reps-max "$reps" --whole-reps --budget-s "$budget"
done
echo "s15rank done $(date -u +%FT%TZ)" | tee -a "$log"

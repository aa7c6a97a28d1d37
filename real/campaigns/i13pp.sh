#!/usr/bin/env bash
# i13pp: whole pipeline-parallel and expert-parallel training steps of real/ on a 2-GPU host
# (issue 13), for the twin's pipeline_step validation. Budget: 150 s in all.
#   bash real/campaigns/i13pp.sh OUTDIR
# Writes OUTDIR/i13pp/: pipeline_step.csv, pipeline_ops.csv, pipeline_trace_<schedule>.json
# (1f1b, zb1p, dualpipev, dualpipe, ep2), env_pipeline_*.json, i13pp.log.
#   part 1 (<= 95 s): PP2 under 1f1b, zb1p, dualpipev, dualpipe at 4, 8, 16 micro-batches (8 held out)
#   part 2 (<= 45 s): EP2 (one stage, experts split over both GPUs, so DP2) at 1, 2, 4 (2 held out)
# Model: v2-lite-slice shapes with 8 layers (1 dense + 7 MoE, 64 experts top-6), seq 4096, one
# sequence per micro-batch, BF16. PP2 with EP is not run: with two GPUs each pipeline stage owns one
# GPU, so its experts cannot be split further (EP spans the replicas of one stage); the code runs
# PP2 x EP2 on four ranks (tested on CPU).
# Env: PY (python, default python3), I13PP_ARGS (appended to every run, e.g. "--tiny
# --microbatches 4 --ep-microbatches 1" for the CPU dry run).
set -u
out=${1:?usage: i13pp.sh OUTDIR}/i13pp
mkdir -p "$out"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
extra=${I13PP_ARGS:-}
log="$out/i13pp.log"
common=(--model v2-lite-slice --num-layers 8 --seq-len 4096 --mb-seqs 1 --precision bf16
        --warmup 2 --min-time-s 1.0 --reps-min 3 --reps-max 8)
start=$(date +%s)
# shellcheck disable=SC2086
timeout --kill-after=5 95 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m real.pipeline \
  --out "$out" "${common[@]}" --layouts pp2 --schedules 1f1b,zb1p,dualpipev,dualpipe \
  --microbatches 4,8,16 --holdout 8 --trace-microbatches 8 --budget-s 70 $extra >> "$log" 2>&1
echo "i13pp part pp2 rc=$? wall_s=$(( $(date +%s) - start ))" | tee -a "$log"
start=$(date +%s)
# shellcheck disable=SC2086
timeout --kill-after=5 45 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m real.pipeline \
  --out "$out" "${common[@]}" --layouts ep2 --ep-microbatches 1,2,4 --ep-holdout 2 --budget-s 25 \
  --append $extra >> "$log" 2>&1
echo "i13pp part ep2 rc=$? wall_s=$(( $(date +%s) - start ))" | tee -a "$log"

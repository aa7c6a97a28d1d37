#!/usr/bin/env bash
# s17alt (issue 13): the schedules' steps timed side by side, interleaved in one process group
# (docs/notes/s17alt_rule.md).
#
# Why: the ranking target judges each pair of schedules by their measured steps, and s16dpv found the
# 4xH200 DualPipe / DualPipeV gap at 4 micro-batches (+1.87%, s15rank) set by host pace: the two
# configurations were timed a minute or more apart, and within round_a DualPipe's first five steps
# caught a fast host stretch (18.0 us a launch against 26.3). Here the schedules of one micro-batch count
# are stepped in turn (real.pipeline --interleave: cycle c one step of each, in row c of a Williams
# design, position and predecessor balanced), so the steps of one cycle are seconds apart and each pair
# of schedules is judged on differences of steps that saw the same host pace.
# Parts, by the GPUs of the host:
#   >= 4 GPUs  interleaved  PP2 x EP2: dualpipe, dualpipev, 1f1b, zb1p interleaved at 4, then at 8
#                           micro-batches                                     -> OUTDIR/s17alt/interleaved/
#   2-3 GPUs   interleaved  PP2 (GPUs 0 and 1): the same                      -> OUTDIR/s17alt/interleaved/
#   < 2 GPUs   nothing (exit 0).
# Each: real.pipeline, warm-up 2 cycles, 12-24 timed cycles a count (--whole-reps: a count whose 12
# cycles do not fit the budget left is skipped, never shortened; whole periods of the design where they
# fit), unpinned, as s15rank / s16idle otherwise (v2-lite-slice, 8 layers, seq 4096, one sequence per
# micro-batch, BF16, the same tokens and weights; the 8-micro-batch rows held out: --holdout 8).
# Outputs: pipeline_step.csv (one row per configuration, medians of its timed steps), pipeline_ops.csv
# (rep = the cycle), pipeline_routing.csv, pipeline_interleaved.csv (one row per timed step: cycle,
# position, step_index, pair_key), pipeline_trace_*.json, env_pipeline_<layout>.json (GPU name, clocks,
# torch / CUDA / NCCL versions; every row carries the GPU's name, clocks and timestamp); s17alt.log,
# host_s17alt.txt (nvidia-smi, topology, lscpu, numactl, clocks).
#
# Run it alone on 4xH200 and on 4xH100 (each judges its own host kind's ranking), and on a 2-GPU host:
#   bash real/campaigns/s17alt.sh OUTDIR
# Budget: <= 150 s a host (timeout 140 s; the bench's own budget 118 s: no count's timed cycles start
# unless 12 fit within it). Estimate from s15rank's 4xH200 steps (n4 232-291 ms, n8 438-540 ms: a cycle
# ~1.03 s at 4, ~1.94 s at 8) and its ~14 s of start-up outside the bench: 14 + 2 warm-up cycles a count
# (~6 s) + 24 cycles at 4 (~25 s) + 24 at 8 (~47 s) + writing (~6 s) = ~100 s. Rows are written as
# each count ends, so a run cut short keeps the counts it finished.
# Env: PY (python3), S17ALT_TINY (1: the CPU dry run on gloo ranks, the tiny model, two schedules at 4),
# S17ALT_GPUS (the dry run's ranks, default 2), S17ALT_TIMEOUT_SCALE (1; the dry run more); S17ALT_NAME
# (the campaign's name, its log's and output folder's: s17alt) and S17ALT_EXTRA (further real.pipeline
# flags), which real/campaigns/s18probe.sh sets to run this command under its name with --host-probe.
set -u
campaign=${S17ALT_NAME:-s17alt}
root=${1:?usage: $campaign.sh OUTDIR}/$campaign
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S17ALT_TINY:-0}
scale=${S17ALT_TIMEOUT_SCALE:-1}
parts=" interleaved "
if [ "$tiny" = "1" ]; then
  host_gpus=${S17ALT_GPUS:-2}
else
  host_gpus=$(nvidia-smi -L 2>/dev/null | wc -l)
fi
gpus=2
layout=pp2
if [ "$host_gpus" -ge 4 ]; then
  gpus=4
  layout=pp2ep2
fi
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU check (exit 0 under 2), part(), torchrun
{ lscpu; numactl -H; nvidia-smi -q -d CLOCK; } >> "$root/host_$campaign.txt" 2>&1

shape=(--model v2-lite-slice --num-layers 8 --seq-len 4096 --mb-seqs 1)
configs=(--schedules dualpipe,dualpipev,1f1b,zb1p --microbatches 4,8)
reps=(--reps-min 12 --reps-max 24)
budget=118   # s: no count's timed cycles start unless 12 fit within it
if [ "$tiny" = "1" ]; then   # the same command on the tiny model, two schedules at 4
  shape=(--tiny)
  configs=(--schedules dualpipe,dualpipev --microbatches 4)
  reps=(--reps-min 3 --reps-max 4)
  budget=600
fi
mkdir -p "$root/interleaved"
part interleaved 140 "${torchrun[@]}" -m real.pipeline --out "$root/interleaved" "${shape[@]}" --precision bf16 \
  --layouts "$layout" "${configs[@]}" --interleave ${S17ALT_EXTRA:-} --holdout 8 --trace-microbatches 8 --warmup 2 \
  --min-time-s 1000 "${reps[@]}" --whole-reps --budget-s "$budget"
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

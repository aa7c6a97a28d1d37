#!/usr/bin/env bash
# s13pp (issue 13): PP2 x EP2 on a 4-GPU host, complete with the host's own probe, then with each
# rank's main thread pinned, enough timed steps to judge the per-rank idle.
#
# Why: the 4xH200 folder (s10pp, 20:44 UTC) has no probe of its own host, so the GPU's gap between
# queued kernels is taken as 0 there (each folder takes its own host's probe: calibration.pipeline.
# measured_device_gap_s); the 4xH100 folder's probe (s8ppep, 09:02) ran three hours before its
# steps (s9ep, 12:06). Per-rank idle misses the 10% target on both (4xH100 11 of 48 GPUs, 4xH200 14
# of 44), mostly DualPipe's GPUs, whose bubble is ~0 by design and whose idle is the other rank's
# host-paced forwards; pinned, the 4xH200's DualPipe idled 0.6-3.0 ms a step on every GPU, but on 3
# timed steps, and the 4xH100 pinned part never got more than 3. What it decides: the device gap
# and host rates of each host from the same run; whether pinning makes a GPU's idle reproducible
# (spread over >= 8 steps) and predictable (the pinned part has its own fitting split, 4
# micro-batches, so it can be judged as a validation folder: docs/notes/s13pp_rule.md says by what
# rule, written before these records).
#
# Run it alone on a 4-GPU host (it measures the host's dispatch speed); on fewer GPUs it runs
# nothing. Asked as 4xH100 or 4xH200, served by either: every row records the GPU's name.
#   bash real/campaigns/s13pp.sh OUTDIR
# Parts (GPUs 0-3; <= 170 s in all: timeouts 42 + 80 + 48 s):
#   probe     real.pipeline.probe on PP2 x EP2 (1f1b, zb1p, dualpipev at 4 micro-batches; warm-up 2,
#             3 timed steps, one profiled step each): pipeline_host.csv, pipeline_op_kernels.csv,
#             env_pipeline_probe.json, as s8ppep.sh's probe part (took 35 s on 4xH100)
#                                                                     -> OUTDIR/s13pp/x4/
#   unpinned  PP2 x EP2 under dualpipe, 1f1b, zb1p, dualpipev at 4, 8, 16 (8 held out), 5 timed
#             steps, as s10pp.sh's unpinned part (69-71 s on 4xH100 and 4xH200): pipeline_step.csv,
#             pipeline_ops.csv (host marks), pipeline_routing.csv, pipeline_trace_*.json,
#             env_pipeline_pp2ep2.json                                -> OUTDIR/s13pp/x4/
#   pinned    the same at 8 (held out) and 4 (fitting), each rank's main thread on its own share
#             of its GPU's CPUs (--pin numa), exactly 8 timed steps a configuration (--whole-reps:
#             a configuration whose 8 steps do not fit the budget left is skipped, not shortened),
#             in the order dualpipe, 1f1b, dualpipev, zb1p (8 before 4)  -> OUTDIR/s13pp/x4_pinned/
# Model and shapes as s10pp/s9ep: v2-lite-slice, 8 layers, seq 4096, one sequence per micro-batch,
# BF16, the same tokens and weights. Rows are written per configuration, so a part cut short by
# `timeout` keeps what it measured.
# Env: PY (python3), S13PP_PARTS (default "probe unpinned pinned"), S13PP_TINY (1: the CPU dry run
# on four gloo ranks, the tiny model), S13PP_TIMEOUT_SCALE (1; the CPU dry run gives more).
set -u
root=${1:?usage: s13pp.sh OUTDIR}/s13pp
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S13PP_TINY:-0}
scale=${S13PP_TIMEOUT_SCALE:-1}
parts=" ${S13PP_PARTS:-probe unpinned pinned} "
campaign=s13pp
gpus=4
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU check, part(), torchrun (4 ranks)
{ lscpu; numactl -H; nvidia-smi -q -d CLOCK; } >> "$root/host_$campaign.txt" 2>&1

shape=(--model v2-lite-slice --num-layers 8 --seq-len 4096 --mb-seqs 1)
probe_configs=pp2ep2:1f1b:4,pp2ep2:zb1p:4,pp2ep2:dualpipev:4
unpinned=(--schedules dualpipe,1f1b,zb1p,dualpipev --microbatches 4,8,16)
pinned=(--schedules dualpipe,1f1b,dualpipev,zb1p --microbatches 8,4)
budgets=(25 56 29)   # probe, unpinned, pinned: no configuration starts after these (s)
if [ "$tiny" = "1" ]; then   # the same commands on the tiny model, fewer configurations
  shape=(--tiny)
  probe_configs=pp2ep2:dualpipev:4
  unpinned=(--schedules dualpipe --microbatches 4,8)
  pinned=(--schedules dualpipe --microbatches 8)
  budgets=(600 600 600)
fi
mkdir -p "$root/x4" "$root/x4_pinned"
part probe 42 "${torchrun[@]}" -m real.pipeline.probe --out "$root/x4" "${shape[@]}" --warmup 2 --reps 3 \
  --configs "$probe_configs" --budget-s "${budgets[0]}"
part unpinned 80 "${torchrun[@]}" -m real.pipeline --out "$root/x4" "${shape[@]}" --precision bf16 \
  --layouts pp2ep2 "${unpinned[@]}" --holdout 8 --trace-microbatches 8 --warmup 2 --min-time-s 0 \
  --reps-min 5 --reps-max 5 --budget-s "${budgets[1]}"
part pinned 48 "${torchrun[@]}" -m real.pipeline --out "$root/x4_pinned" "${shape[@]}" --precision bf16 \
  --layouts pp2ep2 "${pinned[@]}" --holdout 8 --trace-microbatches 8 --warmup 2 --min-time-s 0 \
  --reps-min 8 --reps-max 8 --whole-reps --budget-s "${budgets[2]}" --pin numa
echo "s13pp done $(date -u +%FT%TZ)" | tee -a "$log"

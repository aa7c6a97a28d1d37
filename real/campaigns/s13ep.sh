#!/usr/bin/env bash
# s13ep (issue 13): where the 2xH200 EP2 step's missing ~6 ms of host time goes.
#
# Why: s12ep2 found the EP2 forward's GPU kernels as the twin has them (MoE segment 2.83 ms of
# non-NCCL kernels vs 2.94, NCCL without waits 2.6-2.8 vs 2.85), but the timed forwards finish
# issuing at 37.8-40.3 ms where the twin's host ends at 33.8 ms (docs/notes/s12ep2_rule.md). Its
# profiled step could not split that host time (the profiler slows the host 1.5x). This campaign
# times the same EP2 steps as s12ep's ep2 part, each configuration three times in one process:
#   off     as s12ep (no marks)                                           -> OUTDIR/s13ep/x2/
#   host    real/ep.py's host marks (perf_counter_ns at each segment of dispatch and combine: the
#           counts all-to-all call, each .tolist(), the token all-to-all calls, the gathers; begin
#           and end of the backward's all-to-alls), no synchronisation added
#                                                                         -> OUTDIR/s13ep/x2/marks_host/
#   events  the same plus a CUDA event at each mark (when the stream reached it: how long each
#           .tolist() waited for the local GPU and how long for the peer)
#                                                                         -> OUTDIR/s13ep/x2/marks_events/
# and, in the same process, PP2 1f1b at 4 micro-batches under the same three modes (no dispatch in
# it: the marks' cost there is nothing, a control; its forwards give the run's own PP host rate).
#
# Run it alone on a 2-GPU host (2xH200 and 2xH100, the same script):
#   bash real/campaigns/s13ep.sh OUTDIR
# One part, GPUs 0 and 1, <= 100 s in all (timeout 85 s; the bench's own budget 50 s: no
# configuration starts after it; s12ep's ep2 part, one mode, took ~15 s on 2xH200):
#   ep2    real.pipeline --layouts ep2,pp2 --host-marks off,host,events: EP2 (pp 1, dp 2) at 1, 2, 4
#          micro-batches (2 held out), PP2 1f1b at 4 (fit)
# Model and shapes as s12ep/s9ep: v2-lite-slice, 8 layers, seq 4096, one sequence per micro-batch,
# BF16, warm-up 2, >= 3 timed steps (1 s, at most 8). Rows are written per configuration and mode,
# so a part cut short by `timeout` keeps what it measured. Stops cleanly (exit 0, nothing run) on
# fewer than 2 GPUs.
# Env: PY (python3), S13EP_PARTS (default "ep2"), S13EP_TINY (1: CPU dry run on gloo ranks, the tiny
# model), S13EP_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s13ep.sh OUTDIR}/s13ep
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S13EP_TINY:-0}
scale=${S13EP_TIMEOUT_SCALE:-1}
parts=" ${S13EP_PARTS:-ep2} "
campaign=s13ep
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

shape=(--model v2-lite-slice --num-layers 8 --seq-len 4096 --mb-seqs 1)
quick=(--min-time-s 1.0 --reps-min 3 --reps-max 8)
if [ "$tiny" = "1" ]; then
  shape=(--tiny)
  quick=(--min-time-s 0 --reps-min 2 --reps-max 2)
fi
mkdir -p "$root/x2"
part ep2 85 "${torchrun[@]}" -m real.pipeline --out "$root/x2" "${shape[@]}" --precision bf16 \
  --warmup 2 "${quick[@]}" --layouts ep2,pp2 --ep-microbatches 1,2,4 --ep-holdout 2 \
  --schedules 1f1b --microbatches 4 --holdout 8 --trace-microbatches 4 \
  --host-marks off,host,events --budget-s 50
echo "s13ep done $(date -u +%FT%TZ)" | tee -a "$log"

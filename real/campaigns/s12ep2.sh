#!/usr/bin/env bash
# s12ep2 (issue 13): the 2xH200 EP2 step's forward GPU tail, timed and profiled in the same minute.
#
# Why: s12ep left the H200 EP2 steps at -5.2% held out (target 5%). Its host finishes issuing the
# forward at 39.7 ms and the GPU runs 5.3 ms past that; the twin's forward ends with its host. Which
# kernels make up that tail, and how long the NCCL kernels of the forward wait for the peer rank,
# could not be told: the only per-kernel H200 records were the 06:41 probe's, of another run. This
# campaign times the EP2 steps exactly as s12ep's ep2 part did, then, right after on the same GPUs,
# the same configurations under the probe (real/pipeline/probe.py): timed steps with host marks,
# then one profiled step each with every GPU activity (name, stream, start/end, launching op) in
# pipeline_kernel_events.csv beside the per-op sums of pipeline_op_kernels.csv.
#
# Run it alone on a 2-GPU host (an H200 pair; on an H100 pair it measures the same for that GPU):
#   bash real/campaigns/s12ep2.sh OUTDIR
# Parts (GPUs 0 and 1; <= 90 s in all: timeouts 25 + 60 s; s12ep's ep2 part took ~15 s, the s7pipe
# probe's seven configurations 31 s on 2xH200):
#   ep2    real.pipeline EP2 steps (pp 1, dp 2) at 1, 2, 4 micro-batches (2 held out), host marks,
#          as s12ep.sh                                                   -> OUTDIR/s12ep2/x2/
#   probe  real.pipeline.probe ep2:1f1b:1,2,4: warm-up 2, 3 timed steps (pipeline_host.csv), one
#          profiled step each (pipeline_op_kernels.csv, pipeline_kernel_events.csv)
#                                                                        -> OUTDIR/s12ep2/probe/
# Model and shapes as s12ep/s9ep: v2-lite-slice, 8 layers, seq 4096, one sequence per micro-batch,
# BF16. Rows are written per configuration, so a part cut short by `timeout` keeps what it measured.
# Env: PY (python3), S12EP2_PARTS (default "ep2 probe"), S12EP2_TINY (1: CPU dry run on gloo ranks,
# the tiny model), S12EP2_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s12ep2.sh OUTDIR}/s12ep2
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S12EP2_TINY:-0}
scale=${S12EP2_TIMEOUT_SCALE:-1}
parts=" ${S12EP2_PARTS:-ep2 probe} "
campaign=s12ep2
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

shape=(--model v2-lite-slice --num-layers 8 --seq-len 4096 --mb-seqs 1)
quick=(--min-time-s 1.0 --reps-min 3 --reps-max 8)
if [ "$tiny" = "1" ]; then
  shape=(--tiny)
  quick=(--min-time-s 0 --reps-min 1 --reps-max 1)
fi
mkdir -p "$root/x2" "$root/probe"
part ep2 25 "${torchrun[@]}" -m real.pipeline --out "$root/x2" "${shape[@]}" --precision bf16 \
  --warmup 2 "${quick[@]}" --layouts ep2 --ep-microbatches 1,2,4 --ep-holdout 2 --budget-s 12
part probe 60 "${torchrun[@]}" -m real.pipeline.probe --out "$root/probe" "${shape[@]}" \
  --configs ep2:1f1b:1,ep2:1f1b:2,ep2:1f1b:4 --ep-holdout 2 --warmup 2 --reps 3 \
  --profile-max-microbatches 4 --kernel-events --budget-s 40
echo "s12ep2 done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s10pp (issue 13): is each rank's idle on 4xH100 (PP2 x EP2) a property of the rank, or of the repetition?
#
# Why: the committed s9ep records (h100x4, 3 timed steps a configuration) miss the per-rank idle
# target where a rank's idle is set by the host's pace of the other rank: DualPipe (bubble ~0 by
# design) idles stage 1 at 4 and 8 micro-batches (4.7 / 8.7 ms) and stage 0 at 16 (33.6 ms), the
# slower rank flipping between configurations and, within one, between repetitions (8 micro-
# batches: stage 1 idles 8.8, 2.4, 13.9 ms in its three steps; 16: stage 0 33.6, 15.2, 38.1); ZB1P
# stage 0 at 16 idles 309.6 / 357.2 / 311.9 ms (its host-paced forwards sum 283 / 242 / 257 ms);
# 1F1B stage 1 at 8 waits for stage 0's first forward, 21.9 / 22.1 / 19.1 ms where the same op ran
# 17-19 ms at 16 micro-batches. Per-rank host rates from the fitting split (calibration.pipeline.
# measured_host_by_rank) move DualPipe's held-out stage-1 idle from 0.4 to 4.0 ms, not to 8.7, and
# on the fitting split the per-rank differences follow the stage and schedule (the embedding
# stage's forwards ~30-36 us a launch, the others ~26-28), not the rank.
# Yet the slower DualPipe rank at each count is the same in the two committed 4xH100 runs (s8ppep
# 09:00 UTC and s9ep 12:06 UTC: GPUs 1/3 idle at 4 and 8 micro-batches, 3.8 / 4.7 and 9.3 / 8.7
# ms, GPUs 0/2 at 16, 8.2 / 33.6), and the runs feed the same tokens (seed 1 + dp rank) through the
# same weights (seed 0): the counts split the micro-batches between DualPipe's two directions
# differently, so a routing imbalance that follows the data would repeat run after run.
# What it decides, on 5 timed steps a configuration (the committed had 3):
#   unpinned  (as s9ep: the OS places each rank's main thread) the same 12 configurations: whether
#             the per-rank idle's spread over repetitions exceeds the 10% target (then the target
#             on a rank whose idle is another rank's host noise is set by noise, and no per-rank
#             input of the twin can meet it), whether DualPipe's slower rank is the same as in the
#             s9ep and s8ppep runs at each micro-batch count (a property of the configuration,
#             then modelled per rank) or not (a property of the run); and, from the routing loads
#             the bench now records (pipeline_routing.csv: each rank's routed tokens per MoE gate
#             and expert in a step), whether the slower rank is the one whose EP pair carries the
#             more loaded experts (the twin takes balanced loads);
#   pinned    DualPipe and 1F1B at the held-out 8 micro-batches again, 8 timed steps, each rank's
#             main thread pinned to its own quarter of the CPUs (--pin numa; real/serve/hostpin.py):
#             whether the spread of the host-paced forwards (and the idle it makes) shrinks when
#             the OS cannot move the threads (a measurement of spread only: no fitting split).
# Run it alone on its host (it measures the host's dispatch speed).
#   bash real/campaigns/s10pp.sh OUTDIR
# Only on a host with 4 or more GPUs (nvidia-smi -L | wc -l); elsewhere it runs nothing.
#   unpinned  PP2 x EP2 under dualpipe, 1f1b, zb1p, dualpipev at 4, 8, 16 (8 held out)  -> OUTDIR/s10pp/x4/
#   pinned    PP2 x EP2 under dualpipe, 1f1b at 8 (held out), --pin numa              -> OUTDIR/s10pp/x4_pinned/
# Budget: <= 120 s of the 4-GPU host (unpinned ~75 s: 12 configurations x 2 warm-up + 5 timed
# steps, 0.25-1.13 s a step, ~12 s of set-up between them, ~12 s start; pinned ~30 s: 2 x 10
# steps of ~0.5 s), each part under `timeout` (80 + 34 s), rows
# written per configuration (a part cut short keeps what it measured), --budget-s stops new
# configurations before the timeout. Model and shapes as s9ep.sh: v2-lite-slice, 8 layers, seq
# 4096, one sequence per micro-batch, BF16. Every step row carries GPU name, clocks, torch / CUDA /
# NCCL versions, num_gpus and split; every op row its stream and host marks and split; the
# routing loads in pipeline_routing.csv;
# env_pipeline_pp2ep2.json (with each rank's pinned CPUs) beside them.
# Env: PY (python3), S10PP_ARGS (appended to every run; "--tiny ..." for the CPU dry run on gloo
# ranks), S10PP_NPROC (4: the ranks of the CPU dry run), S10PP_TIMEOUT_SCALE (1: the CPU dry run's
# four ranks share two cores and start slower than the GPU host's).
set -u
root=${1:?usage: s10pp.sh OUTDIR}/s10pp
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
extra=${S10PP_ARGS:-}
scale=${S10PP_TIMEOUT_SCALE:-1}
log="$root/s10pp.log"
echo "s10pp campaign $(date -u +%FT%TZ)" | tee -a "$log"
{ nvidia-smi 2>/dev/null; nvidia-smi topo -m 2>/dev/null; nproc; cat /proc/loadavg; } > "$root/host_s10pp.txt" 2>&1
if [ -z "$extra" ]; then
  ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
else
  ngpu=${S10PP_NPROC:-4}   # CPU dry run: gloo ranks
fi
common=(--model v2-lite-slice --num-layers 8 --seq-len 4096 --mb-seqs 1 --precision bf16
        --layouts pp2ep2 --microbatches 4,8,16 --holdout 8 --trace-microbatches 8
        --warmup 2 --min-time-s 0)

run() {  # run NAME TIMEOUT_S OUT ARGS...: one torchrun of real.pipeline on 4 ranks under `timeout`
  local name=$1 limit=$2 out=$3
  shift 3
  mkdir -p "$out"
  local start
  start=$(date +%s)
  # shellcheck disable=SC2086
  timeout --kill-after=5 "$(( limit * scale ))" "$PY" -m torch.distributed.run --standalone --nproc-per-node 4 -m real.pipeline \
    --out "$out" "${common[@]}" "$@" $extra >> "$log" 2>&1
  echo "s10pp part $name rc=$? wall_s=$(( $(date +%s) - start ))" | tee -a "$log"
}

if [ "$ngpu" -ge 4 ]; then
  [ -z "$extra" ] && export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0,1,2,3}
  run unpinned 80 "$root/x4" --schedules dualpipe,1f1b,zb1p,dualpipev --reps-min 5 --reps-max 5 --budget-s 56
  run pinned 34 "$root/x4_pinned" --schedules dualpipe,1f1b --microbatches 8 --reps-min 8 --reps-max 8 \
    --budget-s 17 --pin numa
else
  echo "s10pp: $ngpu GPUs, needs 4: nothing run" | tee -a "$log"
fi
echo "s10pp done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s9ep (issue 13): the host's dispatch rate measured in the very steps that are timed.
#
# Why: on the committed records the twin's residual on 2xH100 and 4xH100 sits in the forwards
# that the host paces (EP2 forwards, with a synchronising dispatch in every MoE layer; the first
# forwards of DualPipe/DualPipeV), while every GPU-bound op (B, W, BW, all-reduce) is within ~1-3%.
# Their host time per launch was taken from the s7pipe probe, a separate run a minute later; on the
# same host the probe's host-paced forwards ran 1.13-1.46x the bench's (2xH100) or 0.82-1.0x
# (2xH200) while its GPU-bound ops agreed within 1%. real/pipeline/bench.py now writes each op's
# host issue marks (host_start_s / host_end_s) beside its stream marks in pipeline_ops.csv, so the
# twin can take the host rate from the fitting split's steps of the same run.
# What it decides: whether the host rate measured in the same run (fit split: 1 and 4
# micro-batches for EP2, 4 and 16 for PP2 / PP2xEP2) predicts the held-out steps (2 for EP2, 8 for
# the pipelines) within issue 13's targets (then the old miss was the host's drift between bench
# and probe, and the new records replace the old), or not (then a schedule-dependent host term
# remains: DualPipe(V)'s forwards took 30-40 us a launch where 1F1B/ZB1P's took 22-29 in the same
# minute). Round 2 of EP2, right after, measures the step's drift at a fixed configuration.
#
# Run it alone on its host: what it measures is the host's dispatch speed, and the committed
# 2xH100 records ran beside other helpers' campaigns on the same CPUs (GPUs 2,3 of that host).
#   bash real/campaigns/s9ep.sh OUTDIR
# Parts, by the GPUs the host has (nvidia-smi -L | wc -l):
#   2 or 3 GPUs (the 2xH100 part, <= 120 s; GPUs 0 and 1):
#     ep2    EP2 (pp 1, dp 2) at 1, 2, 4 micro-batches (2 held out)        -> OUTDIR/s9ep/x2/
#     pp2    PP2 under 1f1b, zb1p, dualpipev, dualpipe at 4, 8, 16 (8 held out) -> OUTDIR/s9ep/x2/
#     ep2r2  EP2 again, right after (its drift)                             -> OUTDIR/s9ep/x2_round2/
#   4 or more GPUs (the 4xH100 part, <= 120 s):
#     pp2ep2 PP2 x EP2 under the four schedules at 4, 8, 16 (8 held out)   -> OUTDIR/s9ep/x4/
# Model and shapes as i13pp.sh / s8ppep.sh: v2-lite-slice, 8 layers, seq 4096, one sequence per
# micro-batch, BF16, warm-up 2, >= 3 timed steps. Each part runs under `timeout`; rows are written
# per configuration, so a part cut short keeps what it measured. Every step row carries GPU name,
# clocks, torch / CUDA / NCCL versions, num_gpus and its split (pipeline_step.csv); every op row its
# stream and host marks and split (pipeline_ops.csv); env_pipeline_*.json beside them.
# Env: PY (python3), S9EP_ARGS (appended to every run; "--tiny" for the CPU dry run, which runs
# the 2-GPU part on gloo ranks), S9EP_NPROC (2), S9EP_TIMEOUT_SCALE (1; the CPU dry run's parts may take
# longer than the GPU budgets on a loaded machine: the tests give them 4x).
set -u
root=${1:?usage: s9ep.sh OUTDIR}/s9ep
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
extra=${S9EP_ARGS:-}
nproc=${S9EP_NPROC:-2}
log="$root/s9ep.log"
echo "s9ep campaign $(date -u +%FT%TZ)" | tee -a "$log"
{ nvidia-smi 2>/dev/null; nvidia-smi topo -m 2>/dev/null; nproc; cat /proc/loadavg; } > "$root/host_s9ep.txt" 2>&1
if [ -z "$extra" ]; then
  ngpu=$(nvidia-smi -L 2>/dev/null | wc -l)
else
  ngpu=$nproc   # CPU dry run: gloo ranks
fi
common=(--model v2-lite-slice --num-layers 8 --seq-len 4096 --mb-seqs 1 --precision bf16
        --warmup 2 --min-time-s 1.0 --reps-min 3 --reps-max 8)

run() {  # run NAME TIMEOUT_S NPROC OUT ARGS...: one torchrun of real.pipeline under `timeout`
  local name=$1 limit=$(( $2 * ${S9EP_TIMEOUT_SCALE:-1} )) n=$3 out=$4
  shift 4
  mkdir -p "$out"
  local start
  start=$(date +%s)
  # shellcheck disable=SC2086
  timeout --kill-after=5 "$limit" "$PY" -m torch.distributed.run --standalone --nproc-per-node "$n" -m real.pipeline \
    --out "$out" "${common[@]}" "$@" $extra >> "$log" 2>&1
  echo "s9ep part $name rc=$? wall_s=$(( $(date +%s) - start ))" | tee -a "$log"
}

if [ "$ngpu" -ge 4 ]; then
  run pp2ep2 110 4 "$root/x4" --layouts pp2ep2 --schedules 1f1b,zb1p,dualpipev,dualpipe \
    --microbatches 4,8,16 --holdout 8 --trace-microbatches 8 --budget-s 75
elif [ "$ngpu" -ge 2 ]; then
  [ -z "$extra" ] && export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0,1}
  run ep2 25 2 "$root/x2" --layouts ep2 --ep-microbatches 1,2,4 --ep-holdout 2 --budget-s 12
  run pp2 70 2 "$root/x2" --layouts pp2 --schedules 1f1b,zb1p,dualpipev,dualpipe --microbatches 4,8,16 \
    --holdout 8 --trace-microbatches 8 --budget-s 50 --append
  run ep2r2 25 2 "$root/x2_round2" --layouts ep2 --ep-microbatches 1,2,4 --ep-holdout 2 --budget-s 12
else
  echo "s9ep: $ngpu GPUs, needs 2 or 4: nothing run" | tee -a "$log"
fi
echo "s9ep done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s26pipeop: fresh four-GPU pipeline steps that judge two op-duration terms of the twin's per-rank idle
# (issue 13: each rank's idle within 10% of the measured one; docs/notes/s26pipeop_rule.md, committed
# before this ran; calibration/pipe_op_terms.py): L, the step's lead-in (a rank's first op that starts
# with the step, host and GPU level, runs longer), and G, each GPU's pace (DualPipe's mirrored ranks:
# one idles by the other's slower GPU), priced from a probe run first on the same GPUs.
# Each part runs real/pipeline's bench on four GPUs, in three layouts, in this order:
#   ep1     pp 1, ep 1, dp 4, 1F1B at 4 micro-batches: the probe (every GPU the whole slice's F and BW;
#           split fit): G's paces
#   pp2ep2  pp 2, ep 2, dp 2: two pipelines of two stages, each stage's experts over its two replicas
#   pp4     pp 4, ep 1, dp 1: one stage a GPU
# under 1f1b, zb1p, dualpipev and dualpipe, 8 layers (DualPipeV cuts pp 4 into 8 model stages):
#   qwen2moe-mla-slice  seq 2048, pp2ep2 at 10 micro-batches, pp4 at 10 (records: seq 4096, 4 / 8, 16)
#   mixtral-mla-slice   seq 3072, pp2ep2 at 8, pp4 at 10 (records: seq 4096 and 2048; 4, 6 / 8, 12, 16)
# and each model again with the GPUs in reverse order (CUDA_VISIBLE_DEVICES=3,2,1,0: global rank g on
# GPU 3-g), the probe and DualPipe alone, into <model>-rev/: whether a mirrored pair's idle follows
# the GPU or the pipeline rank. Parts alternate normal and reversed per model (each pair minutes
# apart, not more). One sequence a micro-batch, BF16; warm-up 2, 4 timed steps a configuration
# (--whole-reps: a configuration whose 4 steps do not fit the bench's budget is skipped, never cut).
# Run it alone on a 4-GPU host (asked as nvidia-h200-x4; a 4xH100 host runs the same script):
#   bash real/campaigns/s26pipeop.sh OUTDIR
# Budget: parts under `timeout` 90, 60, 110, 60 s (<= 320 s in all; s25idle's parts took ~18 s to the
# bench's start and ~1.3 s a configuration besides its 6 steps; expected ~55, 40, 85, 45 s on 4xH200).
# Every part's GPUs are sampled each 500 ms (nvidia-smi: SM clock, power, temperature per GPU) into
# gpu_samples.csv, the sampler ended by its own pid. Stops cleanly (exit 0, nothing run) on fewer than 4 GPUs.
# Outputs OUTDIR/s26pipeop/<model>[-rev]/: pipeline_step.csv (GPU name, clocks, torch/CUDA/NCCL versions
# in every row), pipeline_ops.csv (every rank's op spans, device and host clocks), pipeline_routing.csv,
# pipeline_trace_*.json, env_pipeline_*.json; OUTDIR/s26pipeop/s26pipeop.log, host_s26pipeop.txt,
# gpu_samples.csv.
# Env: PY (python3), S26PIPEOP_PARTS (default: all four), S26PIPEOP_TINY (1: CPU dry run on four gloo
# ranks, the tiny model at 8 layers, DualPipe alone, one timed step), S26PIPEOP_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s26pipeop.sh OUTDIR}/s26pipeop
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S26PIPEOP_TINY:-0}
scale=${S26PIPEOP_TIMEOUT_SCALE:-1}
# model:layers:seq len:layout counts:part timeout s:bench budget s:reversed timeout s:reversed budget s
# (calibration/pipe_op_terms.py FRESH_CASES; a test holds them equal)
MODELS="qwen2moe-mla-slice:8:2048:pp2ep2=10,pp4=10:90:62:60:40 mixtral-mla-slice:8:3072:pp2ep2=8,pp4=10:110:82:60:42"
parts=" ${S26PIPEOP_PARTS:-qwen2moe-mla-slice qwen2moe-mla-slice-rev mixtral-mla-slice mixtral-mla-slice-rev} "
campaign=s26pipeop
gpus=4
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU check, part(), torchrun (4 ranks)
sampler=""
if [ "$tiny" != "1" ]; then
  { nvidia-smi -q -d CLOCK; nvidia-smi --query-gpu=index,pci.bus_id,serial,clocks.max.sm,power.limit,temperature.gpu \
      --format=csv; } >> "$root/host_$campaign.txt" 2>&1
  nvidia-smi --query-gpu=timestamp,index,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active \
    --format=csv -lms 500 > "$root/gpu_samples.csv" 2>&1 &
  sampler=$!
fi

runs=(--warmup 2 --min-time-s 0 --reps-min 4 --reps-max 4 --whole-reps --holdout 8,10 --ep-holdout 0)
schedules=1f1b,zb1p,dualpipev,dualpipe
# the CPU dry run: the tiny model at 8 layers, one warm-up and one timed step, DualPipe alone
[ "$tiny" = "1" ] && runs=(--warmup 1 --min-time-s 0 --reps-min 1 --reps-max 1 --whole-reps --holdout 8,10 --ep-holdout 0) \
  && schedules=dualpipe
for case in $MODELS; do
  IFS=: read -r model layers seq counts limit budget rlimit rbudget <<< "$case"
  shape=(--model "$model" --num-layers "$layers" --seq-len "$seq" --mb-seqs 1)
  [ "$tiny" = "1" ] && shape=(--tiny --num-layers "$layers") && budget=600 && rbudget=600
  common=(--precision bf16 --layouts ep1,pp2ep2,pp4 "${runs[@]}" --layout-microbatches "ep1=4,$counts"
          --trace-microbatches 10)
  mkdir -p "$root/$model" "$root/$model-rev"
  [[ "$parts" == *" $model "* ]] && echo "part $model: GPUs ${CUDA_VISIBLE_DEVICES:-gloo} $(date -u +%FT%TZ)" >> "$log"
  part "$model" "$limit" "${torchrun[@]}" -m real.pipeline --out "$root/$model" "${shape[@]}" "${common[@]}" \
    --schedules "$schedules" --budget-s "$budget"
  [[ "$parts" == *" $model-rev "* ]] && echo "part $model-rev: GPUs 3,2,1,0 $(date -u +%FT%TZ)" >> "$log"
  part "$model-rev" "$rlimit" env CUDA_VISIBLE_DEVICES=3,2,1,0 "${torchrun[@]}" -m real.pipeline --out "$root/$model-rev" \
    "${shape[@]}" "${common[@]}" --schedules dualpipe --budget-s "$rbudget"
done
if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null; fi
[ "$tiny" = "1" ] || { nvidia-smi --query-gpu=index,clocks.sm,power.draw,temperature.gpu --format=csv; } \
  >> "$root/host_$campaign.txt" 2>&1
echo "s26pipeop done $(date -u +%FT%TZ)" | tee -a "$log"

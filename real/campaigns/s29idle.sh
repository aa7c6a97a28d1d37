#!/usr/bin/env bash
# s29idle: a fresh PP2 set for term M, DualPipe's mirrored-rank wait (issue 13: each pipeline rank's idle within 10%
# of measured, or 1% of the step). docs/notes/s29idle_rule.md; predictions of the twin in force (B) and of the candidate
# (C) committed before this runs (calibration/measurements/prereg/s29idle_predictions.csv, `python -m calibration.s29idle
# write`). Slices and micro-batch counts no PP record holds: dsv2-slice (no PP record at all), mixtral-mla-slice and
# qwen2moe-mla-slice (PP2 records hold 4 and 8), 4 layers each (DualPipeV cuts pp 2 into 4 model stages), seq 4096,
# one sequence a micro-batch, BF16, every schedule (1f1b, zb1p, dualpipev, dualpipe) at 6 and 10 micro-batches:
# 24 pipeline rows, warm-up 2 + 4 timed steps each (--whole-reps), per-rank per-op spans in pipeline_ops.csv.
# Runs on GPUs 0 and 1 (or the first two CUDA_VISIBLE_DEVICES names) and must run ALONE on the host: which of
# DualPipe's two ranks waits is the host's pace, which another job's processes would move. Fewer than 2 GPUs: exits 0,
# nothing run.
# Budget: parts under `timeout` 90 + 80 + 60 s (<= 230 s; expected ~140 s); each bench's own budget (78, 68, 50 s)
# stops it starting a configuration late; rows are written per configuration.
# Outputs OUTDIR/s29idle/: <model>/pipeline_step.csv (GPU name, clocks, power, driver-side versions, NCCL),
# pipeline_ops.csv, pipeline_routing.csv, env_pipeline_pp2.json, a trace at 6; s29idle.log; host_s29idle.txt
# (nvidia-smi, topology, clocks, GPUs used).
#   bash real/campaigns/s29idle.sh OUTDIR
# Env: PY (python3), S29IDLE_PARTS (default: every model), S29IDLE_TINY (1: CPU dry run, the tiny model on 2 gloo
# ranks, DualPipe alone), S29IDLE_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s29idle.sh OUTDIR}/s29idle
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-python3}
tiny=${S29IDLE_TINY:-0}
scale=${S29IDLE_TIMEOUT_SCALE:-1}
# model:layers:part timeout s:bench budget s, in calibration/s29idle.py FRESH_CASES's order (a test holds them equal)
PP="dsv2-slice:4:90:78 mixtral-mla-slice:4:80:68 qwen2moe-mla-slice:4:60:50"
campaign=s29idle
parts=" ${S29IDLE_PARTS:-dsv2-slice mixtral-mla-slice qwen2moe-mla-slice} "
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check (exit 0 on fewer), part(), torchrun
{
  echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset} (the first two)"
  nvidia-smi --query-gpu=index,name,pci.bus_id,power.limit,clocks.max.sm,clocks.sm,clocks.mem --format=csv
  nvidia-smi -q -d CLOCK
} >> "$root/host_$campaign.txt" 2>&1
reps=(--warmup 2 --min-time-s 0 --reps-min 4 --reps-max 4)
schedules=1f1b,zb1p,dualpipev,dualpipe
[ "$tiny" = "1" ] && reps=(--warmup 1 --min-time-s 0 --reps-min 1 --reps-max 1) && schedules=dualpipe
for case in $PP; do
  IFS=: read -r model layers limit budget <<< "$case"
  shape=(--model "$model" --num-layers "$layers" --seq-len 4096 --mb-seqs 1)
  [ "$tiny" = "1" ] && shape=(--tiny)
  mkdir -p "$root/$model"
  part "$model" "$limit" "${torchrun[@]}" -m real.pipeline --out "$root/$model" "${shape[@]}" --precision bf16 \
    "${reps[@]}" --whole-reps --layouts pp2 --schedules "$schedules" --microbatches 6,10 --holdout 6,10 \
    --trace-microbatches 6 --budget-s "$budget"
done
nvidia-smi --query-gpu=index,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv >> "$root/host_$campaign.txt" 2>&1
echo "s29idle done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s31clk (issue 13): a fresh PP2 set judging the per-rank power-capped SM clock (pipeline.ADOPT_RANK_POWER_CLOCK,
# calibration.rank_clock; docs/notes/s31clk_rule.md, committed before this runs). The twin in force (B) and the
# candidate (C) are priced live by the code at the rule's commit (`python -m calibration.s31clk judge`).
# Slices and micro-batch counts no PP record holds: phi35moe-slice and llama3-8b-slice (PP2 records hold 4 and 6),
# olmoe-slice (no PP record), 4 layers each (DualPipeV cuts pp 2 into 4 model stages), seq 4096, one sequence a
# micro-batch, BF16, every schedule (1f1b, zb1p, dualpipev, dualpipe) at 8 and 12 micro-batches: 24 pipeline rows, warm-up 2
# + 4 timed steps each (--whole-reps), per-rank per-op spans in pipeline_ops.csv, plus both GPUs' SM clock and power
# every 100 ms through each part (nvidia-smi: gpu_clocks.csv).
# NEEDS TWO GPUs (nvidia-h200-x2), on GPUs 0 and 1 (or the first two CUDA_VISIBLE_DEVICES names), and must run ALONE on
# the host (judged: another job's processes would move the host's pace and the board's power). Fewer than 2 GPUs: exits
# 0 with a note, nothing run.
# Budget: parts under `timeout` 95 + 95 + 80 s (<= 270 s; expected ~170 s); each bench's own budget (82, 82, 68 s)
# stops it starting a configuration late; rows are written per configuration.
# Outputs OUTDIR/s31clk/: <model>/pipeline_step.csv (GPU name, clocks, power, driver-side versions, NCCL),
# pipeline_ops.csv, pipeline_routing.csv, env_pipeline_pp2.json, gpu_clocks.csv; s31clk.log; host_s31clk.txt
# (nvidia-smi, topology, clocks, GPUs used).
#   bash real/campaigns/s31clk.sh OUTDIR
# Env: PY (python3), S31CLK_PARTS (default: every model), S31CLK_TINY (1: CPU dry run, the tiny model on 2 gloo ranks,
# DualPipeV alone), S31CLK_TIMEOUT_SCALE (1). Parametrised for a later round's fresh set (s31clk2.sh sets them):
# S31CLK_CAMPAIGN (the name: output folder OUTDIR/<name>/, log, host file), S31CLK_PP (the cases, PP's form),
# S31CLK_MBS (the micro-batch counts).
set -u
campaign=${S31CLK_CAMPAIGN:-s31clk}
root=${1:?usage: s31clk.sh OUTDIR}/$campaign
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-python3}
tiny=${S31CLK_TINY:-0}
scale=${S31CLK_TIMEOUT_SCALE:-1}
# model:layers:part timeout s:bench budget s, in calibration/s31clk.py FRESH_CASES's order (a test holds them equal)
PP="phi35moe-slice:4:95:82 llama3-8b-slice:4:95:82 olmoe-slice:4:80:68"
PP=${S31CLK_PP:-$PP}
parts=" ${S31CLK_PARTS:-$(for c in $PP; do printf '%s ' "${c%%:*}"; done)} "
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check (exit 0 on fewer), part(), torchrun
{
  echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset} (the first two)"
  nvidia-smi --query-gpu=index,name,pci.bus_id,power.limit,clocks.max.sm,clocks.sm,clocks.mem --format=csv
  nvidia-smi -q -d CLOCK
} >> "$root/host_$campaign.txt" 2>&1
reps=(--warmup 2 --min-time-s 0 --reps-min 4 --reps-max 4)
schedules=1f1b,zb1p,dualpipev,dualpipe
mbs=8,12
mbs=${S31CLK_MBS:-$mbs}
[ "$tiny" = "1" ] && reps=(--warmup 1 --min-time-s 0 --reps-min 1 --reps-max 1) && schedules=dualpipev && mbs=4
for case in $PP; do
  IFS=: read -r model layers limit budget <<< "$case"
  shape=(--model "$model" --num-layers "$layers" --seq-len 4096 --mb-seqs 1)
  [ "$tiny" = "1" ] && shape=(--tiny)
  [[ "$parts" == *" $model "* ]] || continue
  mkdir -p "$root/$model"
  # both GPUs' SM clock, power and temperature every 100 ms through the part (which rank the power limit holds)
  smi_pid=
  if [ "$tiny" != "1" ]; then
    nvidia-smi --query-gpu=timestamp,index,clocks.sm,clocks.mem,power.draw,power.limit,temperature.gpu \
      --format=csv -lms 100 > "$root/$model/gpu_clocks.csv" 2>&1 &
    smi_pid=$!
  fi
  part "$model" "$limit" "${torchrun[@]}" -m real.pipeline --out "$root/$model" "${shape[@]}" --precision bf16 \
    "${reps[@]}" --whole-reps --layouts pp2 --schedules "$schedules" --microbatches "$mbs" --holdout "$mbs" \
    --budget-s "$budget"
  [ -n "$smi_pid" ] && kill "$smi_pid" 2>/dev/null
done
nvidia-smi --query-gpu=index,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv >> "$root/host_$campaign.txt" 2>&1
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

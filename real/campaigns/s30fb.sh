#!/usr/bin/env bash
# s30fb (issue 13, diagnosis only): why the FB pairs of DualPipeV's end-stage rank grow with the micro-batch count
# (docs/notes/s30mem.md, end: dsv2 DualPipeV rank 1 idle within 10% at n4, but the miss grows with rank 0's FB pairs
# at n6 / n10). s29idle2 profiled n4 only; this run profiles one DualPipeV step at n6 and n10 (and n4 last, the same
# lease's reference, dropped if the probe's budget is spent) with every GPU activity and the host start of its
# launching CPU op (real.pipeline.probe --kernel-events), so rank 0's FB pairs can be read kernel by kernel: the two
# chunks' overlap, memory kernels, the all-to-all / p2p waits inside a pair, and the pair time by position in the step.
# No candidate, no rule: every row is split fit (nothing is judged on these records).
# Parts (2 GPUs; timeouts 70 + 60 s, kill-after 5 s each: <= 140 s; GPU wall ~75-110 s):
#   dsv2-slice (configs pp2:dualpipev:6,10,4; probe budget 50 s), mixtral-mla-slice (pp2:dualpipev:6,10; 40 s)
#   4 layers, seq 4096, one sequence a micro-batch, BF16, warm-up 2, 3 timed steps, one profiled step each.
# Need not run alone (no judgement; kernel durations); uses GPUs 0 and 1. Fewer than 2 GPUs: exits 0, nothing run.
# Rows carry GPU name, clocks, power limit, driver-side torch / CUDA / NCCL versions.
#   bash real/campaigns/s30fb.sh OUTDIR
# Outputs: OUTDIR/s30fb/<model>/{pipeline_host,pipeline_op_kernels,pipeline_kernel_events}.csv,
# env_pipeline_probe.json, gpu_clocks.csv (nvidia-smi every 100 ms through the part: SM / memory clock, power,
# temperature of both GPUs); s30fb.log; host_s30fb.txt (nvidia-smi, topology, clocks).
# Env: PY (python3), S30FB_PARTS (default: every model), S30FB_TINY (1: CPU dry run on gloo ranks, the tiny model,
# pp2:dualpipev:4), S30FB_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s30fb.sh OUTDIR}/s30fb
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-python3}
tiny=${S30FB_TINY:-0}
scale=${S30FB_TIMEOUT_SCALE:-1}
campaign=s30fb
parts=" ${S30FB_PARTS:-dsv2-slice mixtral-mla-slice} "
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check (exit 0 on fewer), part(), torchrun
{
  echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset} (the first two)"
  nvidia-smi --query-gpu=index,name,pci.bus_id,power.limit,clocks.max.sm,clocks.sm,clocks.mem --format=csv
  nvidia-smi -q -d CLOCK
} >> "$root/host_$campaign.txt" 2>&1
reps=(--warmup 2 --reps 3)
[ "$tiny" = "1" ] && reps=(--warmup 1 --reps 1)
# model:part timeout s:probe budget s:configs (n6 and n10 first; n4, the reference, last)
for case in dsv2-slice:70:50:pp2:dualpipev:6,pp2:dualpipev:10,pp2:dualpipev:4 \
            mixtral-mla-slice:60:40:pp2:dualpipev:6,pp2:dualpipev:10; do
  IFS=: read -r model limit budget configs <<< "$case"
  shape=(--model "$model" --num-layers 4 --seq-len 4096 --mb-seqs 1)
  [ "$tiny" = "1" ] && shape=(--tiny) && configs=pp2:dualpipev:4
  mkdir -p "$root/$model"
  # both GPUs' SM clock, power and temperature every 100 ms through the part (is the busy end-stage rank throttled?)
  smi_pid=
  if [ "$tiny" != "1" ]; then
    nvidia-smi --query-gpu=timestamp,index,clocks.sm,clocks.mem,power.draw,temperature.gpu \
      --format=csv -lms 100 > "$root/$model/gpu_clocks.csv" 2>&1 &
    smi_pid=$!
  fi
  part "$model" "$limit" "${torchrun[@]}" -m real.pipeline.probe --out "$root/$model" "${shape[@]}" \
    --configs "$configs" --holdout 0 --ep-holdout 0 "${reps[@]}" --profile-max-microbatches 10 --kernel-events \
    --budget-s "$budget"
  [ -n "$smi_pid" ] && kill "$smi_pid" 2>/dev/null
done
nvidia-smi --query-gpu=index,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv >> "$root/host_$campaign.txt" 2>&1
echo "s30fb done $(date -u +%FT%TZ)" | tee -a "$log"

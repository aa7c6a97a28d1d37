#!/usr/bin/env bash
# s28pp42 (issue 13): P on two GPUs. Fresh EP2 steps on shapes no record holds, judging blind, on a 2xH200 lease,
# whether pricing each EP forward at the lease's own probed rate (P, adopted on four GPUs by s28pp4) beats the
# committed `h200x2` folder's rate (base) on two (docs/notes/s28pp42_rule.md, committed before this run;
# calibration/lease_probe2.py).
# Parts, one torchrun each on the same two GPUs (0,1), one after the other; BF16, one sequence a micro-batch:
#   probe        v2-lite-slice 8 layers, seq 4096, EP2 at 1 and 4 micro-batches, split fit: the configuration the
#                `h200x2` folder's own fitting EP2 forwards come from; P = the median solved rate of its forwards
#                (s28pp4's statistic). With --host-probe (launch / Python-loop probe before each timed step:
#                reported, not judged). Run first: nothing of a judged step is read.
#   EP2 (pp 1, ep 2, dp 2) at 1, 2, 4 and 8 micro-batches, every row judged:
#   qwen3-6l2k5  qwen3moe-mla-slice 6 layers, seq 2560        qwen2-3l3k   qwen2moe-mla-slice 3 layers, seq 3072
#   qwen3g-5l1k5 qwen3moe-slice (GQA) 5 layers, seq 1536      bench-6l1k5  bench-small 6 layers, seq 1536 (host-bound)
#   mixtral-3l1k5 mixtral-mla-slice 3 layers, seq 1536 (mostly GPU-bound)
#   PP2 (pp 2, ep 1), the control (every setting prices it the same): qwen2-pp2 qwen2moe-mla-slice 8 layers, seq 2560,
#                every schedule at 4 (fit) and 8 (holdout)
# Run it alone on a 2-GPU host (nvidia-h200-x2; on a larger host it runs on GPUs 0,1 and the host file names every
# GPU; a 2xH100 pair runs the same and is filed under h100x2):
#   bash real/campaigns/s28pp42.sh OUTDIR
# Budget: parts under `timeout` 30 + 5 x 28 + 45 s (<= 215 s; expected ~170 s on 2xH200: a bench start ~10 s).
# Stops cleanly (exit 0, nothing run) on fewer than 2 GPUs. Rows are written per configuration.
# Outputs OUTDIR/s28pp42/: <part>/ (pipeline_step.csv with GPU name, clocks, power, torch/CUDA/NCCL versions in every
# row; pipeline_ops.csv with host marks; pipeline_routing.csv; env), probe/ (the same, and pipeline_host_probe.csv),
# s28pp42.log, host_s28pp42.txt (nvidia-smi, topology, CPUs, load, CUDA_VISIBLE_DEVICES), clocks_s28pp42.txt.
# Env: PY (python3), S28PP42_PARTS (default: every part), S28PP42_TINY (1: CPU dry run on two gloo ranks, the tiny
# model, one warm-up and one timed step a configuration), S28PP42_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s28pp42.sh OUTDIR}/s28pp42
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S28PP42_TINY:-0}
scale=${S28PP42_TIMEOUT_SCALE:-1}
# part:model:layers:seq len:layout:counts:timeout s:bench budget s
# (calibration/lease_probe2.py PROBE, CASES and CONTROL; tests/real/test_real_campaign_s28pp42.py holds them equal)
PARTS="probe:v2-lite-slice:8:4096:ep2:1,4:30:15
qwen3-6l2k5:qwen3moe-mla-slice:6:2560:ep2:1,2,4,8:28:14
qwen2-3l3k:qwen2moe-mla-slice:3:3072:ep2:1,2,4,8:28:14
qwen3g-5l1k5:qwen3moe-slice:5:1536:ep2:1,2,4,8:28:14
bench-6l1k5:bench-small:6:1536:ep2:1,2,4,8:28:14
mixtral-3l1k5:mixtral-mla-slice:3:1536:ep2:1,2,4,8:28:14
qwen2-pp2:qwen2moe-mla-slice:8:2560:pp2:4,8:45:28"
default_parts="$(while IFS=: read -r n _; do printf '%s ' "$n"; done <<< "$PARTS")"
parts=" ${S28PP42_PARTS:-$default_parts} "
campaign=s28pp42
gpus=2
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU check, part(), torchrun (2 ranks)
[ "$tiny" = "1" ] || { nvidia-smi -q -d CLOCK > "$root/clocks_s28pp42.txt" 2>&1
  { echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-}"
    nvidia-smi --query-gpu=index,pci.bus_id,name,clocks.max.sm,power.limit,temperature.gpu --format=csv; } \
    >> "$root/host_s28pp42.txt" 2>&1; }

runs=(--warmup 2 --min-time-s 0 --reps-min 4 --reps-max 4)
all=1f1b,zb1p,dualpipev,dualpipe
[ "$tiny" = "1" ] && runs=(--warmup 1 --min-time-s 0 --reps-min 1 --reps-max 1) && all=dualpipe
while IFS=: read -r name model layers seq layout counts limit budget; do
  [[ "$parts" == *" $name "* ]] || continue
  shape=(--model "$model" --num-layers "$layers" --seq-len "$seq" --mb-seqs 1)
  if [ "$tiny" = "1" ]; then shape=(--tiny); budget=600; fi
  if [ "$layout" = "ep2" ]; then
    # the probe's counts are its fitting split; the judged parts' split labels are not read (every row judged)
    lay=(--layouts ep2 --microbatches 4 --holdout 0 --ep-microbatches "$counts" --ep-holdout 2,8)
    [ "$name" = "probe" ] && lay=(--layouts ep2 --microbatches 4 --holdout 0 --ep-microbatches "$counts"
                                  --ep-holdout 0 --host-probe)
  else
    lay=(--layouts pp2 --schedules "$all" --microbatches "$counts" --holdout 8)
  fi
  mkdir -p "$root/$name"
  echo "part $name: $model x$layers seq $seq $layout $counts $(date -u +%FT%TZ)" >> "$log"
  part "$name" "$limit" "${torchrun[@]}" -m real.pipeline --out "$root/$name" "${shape[@]}" --precision bf16 \
    "${runs[@]}" "${lay[@]}" --budget-s "$budget"
  rm -f "$root/$name"/pipeline_trace_*.json
done <<< "$PARTS"
[ "$tiny" = "1" ] || { nvidia-smi --query-gpu=index,clocks.sm,power.draw,temperature.gpu --format=csv; } \
  >> "$root/host_$campaign.txt" 2>&1
echo "s28pp42 done $(date -u +%FT%TZ)" | tee -a "$log"

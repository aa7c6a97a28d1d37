#!/usr/bin/env bash
# s28pp4 (issue 13): fresh four-GPU pipeline steps that judge, blind, the EP forward's host rate on a 4xH200 lease
# (docs/notes/s28pp4_rule.md, committed before this run; calibration/lease_probe.py): base (the `h200x4` folder's
# own lease, 17.8 us a launch), F (the median of ten committed 4-GPU leases, 26.7 us) and P (this lease's own rate,
# solved from the lease probe below, the first thing run).
# Parts, one torchrun each on the same four GPUs (0,1,2,3), one after the other; BF16, one sequence a micro-batch:
#   probe        v2-lite-slice 8 layers, seq 4096, pp2ep2 at 4 micro-batches, every schedule, split fit: the
#                configuration every committed 4-GPU lease's fitting EP forwards come from (the F pool's parts);
#                P = the median solved rate of its forwards. With --host-probe (launch / Python-loop probe before
#                each timed step: reported, not judged)
#   qwen3-2k     qwen3moe-mla-slice 8 layers, seq 2048: pp2ep2 at 8 and 12, pp4 at 8 (s26pipeop2's shape at 12,
#                on a new lease; 8 no record holds)
#   qwen2-2k5    qwen2moe-mla-slice 8 layers, seq 2560: pp2ep2 at 8 and 12, pp4 at 8 (a sequence no record holds)
#   qwen3g-3k    qwen3moe-slice (GQA) 8 layers, seq 3072: pp2ep2 at 8 and 12, pp4 at 8 (a model no 4-GPU record holds)
#   marks        qwen3moe-mla-slice 8 layers, seq 2048, pp2ep2 at 8, 1F1B, with real/ep.py's host marks
#                (--host-marks host: ep_host_marks.csv): where a forward's time goes (item 4; not judged)
# Every schedule (1f1b, zb1p, dualpipev, dualpipe) in each judged part: 36 judged rows (24 pp2ep2, 12 pp4),
# warm-up 2, 4 timed steps a configuration (--whole-reps), split holdout.
# Run it alone on a 4-GPU host (nvidia-h200-x4; a 4xH100 host runs the same and is filed under h100x4):
#   bash real/campaigns/s28pp4.sh OUTDIR
# Budget: parts under `timeout` 45 + 80 + 85 + 95 + 40 s (<= 345 s; expected ~250 s on 4xH200: a bench start
# ~15 s). Stops cleanly (exit 0, nothing run) on fewer than 4 GPUs. Rows are written per configuration.
# Outputs OUTDIR/s28pp4/: <part>/ (pipeline_step.csv with GPU name, clocks, power, torch/CUDA/NCCL versions in every
# row; pipeline_ops.csv; pipeline_routing.csv; env), probe/ (the same, and pipeline_host_probe.csv), marks/marks_host/,
# s28pp4.log, host_s28pp4.txt (nvidia-smi, topology, CPUs, load), clocks_s28pp4.txt (nvidia-smi -q -d CLOCK).
# Env: PY (python3), S28PP4_PARTS (default: every part), S28PP4_TINY (1: CPU dry run on four gloo ranks, the tiny
# model at 8 layers, DualPipe alone, one timed step), S28PP4_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s28pp4.sh OUTDIR}/s28pp4
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S28PP4_TINY:-0}
scale=${S28PP4_TIMEOUT_SCALE:-1}
# part:model:layers:seq len:layout counts:schedules:timeout s:bench budget s
# (calibration/lease_probe.py PROBE and CASES; tests/real/test_real_campaign_s28pp4.py holds them equal)
PARTS="probe:v2-lite-slice:8:4096:pp2ep2=4:all:45:25
qwen3-2k:qwen3moe-mla-slice:8:2048:pp2ep2=8/12,pp4=8:all:80:60
qwen2-2k5:qwen2moe-mla-slice:8:2560:pp2ep2=8/12,pp4=8:all:85:65
qwen3g-3k:qwen3moe-slice:8:3072:pp2ep2=8/12,pp4=8:all:95:75
marks:qwen3moe-mla-slice:8:2048:pp2ep2=8:1f1b:40:20"
default_parts="$(while IFS=: read -r n _; do printf '%s ' "$n"; done <<< "$PARTS")"
parts=" ${S28PP4_PARTS:-$default_parts} "
campaign=s28pp4
gpus=4
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU check, part(), torchrun (4 ranks)
[ "$tiny" = "1" ] || { nvidia-smi -q -d CLOCK > "$root/clocks_s28pp4.txt" 2>&1
  nvidia-smi --query-gpu=index,pci.bus_id,clocks.max.sm,power.limit,temperature.gpu --format=csv \
    >> "$root/host_s28pp4.txt" 2>&1; }

runs=(--warmup 2 --min-time-s 0 --reps-min 4 --reps-max 4 --whole-reps --ep-holdout 0)
all=1f1b,zb1p,dualpipev,dualpipe
# the CPU dry run: the tiny model at 8 layers, one warm-up and one timed step, DualPipe alone (the marked part 1F1B)
[ "$tiny" = "1" ] && runs=(--warmup 1 --min-time-s 0 --reps-min 1 --reps-max 1 --whole-reps --ep-holdout 0) \
  && all=dualpipe
while IFS=: read -r name model layers seq counts scheds limit budget; do
  [[ "$parts" == *" $name "* ]] || continue
  [ "$scheds" = "all" ] && scheds=$all
  shape=(--model "$model" --num-layers "$layers" --seq-len "$seq" --mb-seqs 1)
  if [ "$tiny" = "1" ]; then shape=(--tiny --num-layers "$layers"); budget=600; fi
  case "$name" in
    probe) extra=(--holdout 8 --host-probe) ;;      # the probe's count (4) is the fitting split
    marks) extra=(--holdout 8 --host-marks host) ;;
    *) extra=(--holdout 8,12 --trace-microbatches 12) ;;   # every judged count held out
  esac
  mkdir -p "$root/$name"
  echo "part $name: $model x$layers seq $seq $counts $scheds $(date -u +%FT%TZ)" >> "$log"
  part "$name" "$limit" "${torchrun[@]}" -m real.pipeline --out "$root/$name" "${shape[@]}" --precision bf16 \
    --layouts "$(echo "$counts" | sed 's/=[^,]*//g')" "${runs[@]}" --layout-microbatches "$counts" \
    --schedules "$scheds" "${extra[@]}" --budget-s "$budget"
  rm -f "$root/$name"/pipeline_trace_*.json "$root/$name"/*/pipeline_trace_*.json
done <<< "$PARTS"
[ "$tiny" = "1" ] || { nvidia-smi --query-gpu=index,clocks.sm,power.draw,temperature.gpu --format=csv; } \
  >> "$root/host_$campaign.txt" 2>&1
echo "s28pp4 done $(date -u +%FT%TZ)" | tee -a "$log"

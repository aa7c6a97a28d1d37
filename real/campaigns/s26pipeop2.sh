#!/usr/bin/env bash
# s26pipeop2: fresh four-GPU pipeline steps that judge term H, each GPU's HOST pace (docs/notes/
# s26pipeop2_rule.md, committed before this ran; calibration/pipe_op_terms.py round 2). s26pipeop found
# DualPipe's mirrored-rank idle follows the physical GPU (reversing the GPU order swapped it in 6 of 6
# pairs) at equal SM clocks, in host-paced ops: H prices each GPU's host pace from a host-paced probe of
# the same run and issues each pipeline rank's ops at the twin's host rates times it.
# Per model, two bench runs on the same four GPUs, one after the other:
#   probe      pp 1, ep 1, dp 4 at seq 256, 1F1B at 8 micro-batches (every forward host-paced; split fit)
#              into OUTDIR/s26pipeop2/probe/<model>[-rev]/
#   pipelines  pp2ep2 (pp 2, ep 2, dp 2) and pp4 (pp 4, ep 1), 1f1b, zb1p, dualpipev, dualpipe
#              into OUTDIR/s26pipeop2/<model>[-rev]/
#   qwen3moe-mla-slice  8 layers, seq 2048, pp2ep2 at 12 micro-batches, pp4 at 8 (records: seq 4096 only)
#   qwen2moe-mla-slice  8 layers, seq 3072, pp2ep2 at 6, pp4 at 12 (records: seq 4096 and 2048)
# and qwen2moe again with the GPUs in reverse order (CUDA_VISIBLE_DEVICES=3,2,1,0), probe and DualPipe alone.
# One sequence a micro-batch, BF16; warm-up 2, 4 timed steps a configuration (--whole-reps).
# Run it alone on a 4-GPU host (asked as nvidia-h200-x4; a 4xH100 host runs the same script):
#   bash real/campaigns/s26pipeop2.sh OUTDIR
# Budget: parts under `timeout` 45+75, 45+75, 45+50 s (<= 335 s in all; s26pipeop's bench starts took
# ~18 s; expected ~200 s on 4xH200). Per-GPU nvidia-smi samples each 500 ms into gpu_samples.csv (the
# sampler ended by its own pid). Stops cleanly (exit 0, nothing run) on fewer than 4 GPUs.
# Outputs OUTDIR/s26pipeop2/: <model>[-rev]/ and probe/<model>[-rev]/ (pipeline_step.csv with GPU name,
# clocks, torch/CUDA/NCCL versions in every row; pipeline_ops.csv; pipeline_routing.csv; traces; env),
# s26pipeop2.log, host_s26pipeop2.txt, gpu_samples.csv.
# Env: PY (python3), S26PIPEOP2_PARTS (default: all: qwen3moe-mla-slice qwen2moe-mla-slice
# qwen2moe-mla-slice-rev), S26PIPEOP2_TINY (1: CPU dry run on four gloo ranks, tiny model at 8 layers,
# DualPipe alone, one timed step), S26PIPEOP2_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s26pipeop2.sh OUTDIR}/s26pipeop2
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S26PIPEOP2_TINY:-0}
scale=${S26PIPEOP2_TIMEOUT_SCALE:-1}
# part:model:layers:seq len:layout counts:GPU order:schedules:probe timeout s:timeout s:bench budget s
# (calibration/pipe_op_terms.py FRESH2_CASES; a test holds them equal)
PARTS="qwen3moe-mla-slice:qwen3moe-mla-slice:8:2048:pp2ep2=12,pp4=8:0,1,2,3:all:45:75:55
qwen2moe-mla-slice:qwen2moe-mla-slice:8:3072:pp2ep2=6,pp4=12:0,1,2,3:all:45:75:55
qwen2moe-mla-slice-rev:qwen2moe-mla-slice:8:3072:pp2ep2=6,pp4=12:3,2,1,0:dualpipe:45:50:30"
PROBE_SEQ=256
PROBE_COUNTS=ep1=8
parts=" ${S26PIPEOP2_PARTS:-qwen3moe-mla-slice qwen2moe-mla-slice qwen2moe-mla-slice-rev} "
campaign=s26pipeop2
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

runs=(--warmup 2 --min-time-s 0 --reps-min 4 --reps-max 4 --whole-reps --holdout 6,8,12 --ep-holdout 0)
all=1f1b,zb1p,dualpipev,dualpipe
# the CPU dry run: the tiny model at 8 layers, one warm-up and one timed step, DualPipe alone
[ "$tiny" = "1" ] && runs=(--warmup 1 --min-time-s 0 --reps-min 1 --reps-max 1 --whole-reps --holdout 6,8,12 --ep-holdout 0) \
  && all=dualpipe
while IFS=: read -r name model layers seq counts order scheds plimit limit budget; do
  [[ "$parts" == *" $name "* ]] || continue
  parts="$parts$name-probe "   # part() runs the names in $parts: the probe goes with its part
  [ "$scheds" = "all" ] && scheds=$all
  pbudget=$(( plimit - 20 ))
  shape=(--model "$model" --num-layers "$layers" --mb-seqs 1)
  if [ "$tiny" = "1" ]; then shape=(--tiny --num-layers "$layers"); budget=600; pbudget=600; fi
  mkdir -p "$root/$name" "$root/probe/$name"
  echo "part $name: GPUs $order $(date -u +%FT%TZ)" >> "$log"
  part "$name-probe" "$plimit" env CUDA_VISIBLE_DEVICES="$order" "${torchrun[@]}" -m real.pipeline --out "$root/probe/$name" \
    "${shape[@]}" --seq-len "$PROBE_SEQ" --precision bf16 --layouts ep1 "${runs[@]}" --layout-microbatches "$PROBE_COUNTS" \
    --budget-s "$pbudget"
  part "$name" "$limit" env CUDA_VISIBLE_DEVICES="$order" "${torchrun[@]}" -m real.pipeline --out "$root/$name" \
    "${shape[@]}" --seq-len "$seq" --precision bf16 --layouts pp2ep2,pp4 "${runs[@]}" --layout-microbatches "$counts" \
    --schedules "$scheds" --trace-microbatches 12 --budget-s "$budget"
done <<< "$PARTS"
if [ -n "$sampler" ]; then kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null; fi
[ "$tiny" = "1" ] || { nvidia-smi --query-gpu=index,clocks.sm,power.draw,temperature.gpu --format=csv; } \
  >> "$root/host_$campaign.txt" 2>&1
echo "s26pipeop2 done $(date -u +%FT%TZ)" | tee -a "$log"

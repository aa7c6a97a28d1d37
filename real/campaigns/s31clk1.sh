#!/usr/bin/env bash
# s31clk, one-GPU part (issue 13; docs/notes/s31clk_rule.md part A1, committed before this runs): the SM clock a whole
# training step settles at on one H200 at its 700 W limit, for five slices whose kernel mixes span the power law's range
# (calibration.rank_clock; its law predicts 1,700-1,980 MHz for them, calibration/measurements/prereg/
# s31clk_predictions.csv). Each part: real/pipeline's one-rank step (layout ep1: pp 1, ep 1, the micro-batches forward
# then backward), 4 layers, seq 4096, one sequence a micro-batch, BF16, 8 micro-batches, warm-up 2 + 6 timed steps,
# with nvidia-smi sampling the GPU's SM clock and power every 100 ms (gpu_clocks.csv).
# ONE GPU: GPU 0, or the first CUDA_VISIBLE_DEVICES name (sampled by that index). May share the host with another
# lane's one-GPU job on another GPU (each GPU has its own power limit); not with one on the same GPU.
# Budget: five parts under `timeout` 45 s each (<= 225 s; expected ~25 s each, ~130 s in all); each bench's own
# budget 30 s.
# Outputs OUTDIR/s31clk1/: <model>/ep_step rows in pipeline_step.csv (GPU name, clocks, power, torch / CUDA / NCCL),
# pipeline_ops.csv, env_pipeline_ep1.json, gpu_clocks.csv; s31clk1.log; host_s31clk1.txt (nvidia-smi, clocks).
#   bash real/campaigns/s31clk1.sh OUTDIR
# Env: PY (python3), S31CLK1_PARTS (default: every model), S31CLK1_TINY (1: CPU dry run, the tiny model on one gloo
# rank, 2 micro-batches), S31CLK1_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s31clk1.sh OUTDIR}/s31clk1
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-python3}
tiny=${S31CLK1_TINY:-0}
scale=${S31CLK1_TIMEOUT_SCALE:-1}
# model:layers:part timeout s:bench budget s, in calibration/s31clk.py ONE_GPU_CASES's order (a test holds them equal)
CASES="llama3-8b-slice:4:45:30 olmoe-slice:4:45:30 phi35moe-slice:4:45:30 qwen2moe-mla-slice:4:45:30 v2-lite-slice:4:45:30"
campaign=s31clk1
parts=" ${S31CLK1_PARTS:-llama3-8b-slice olmoe-slice phi35moe-slice qwen2moe-mla-slice v2-lite-slice} "
gpus=1
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU check (exit 0 on none), part(), torchrun (1 rank)
idx=${CUDA_VISIBLE_DEVICES:-0}
idx=${idx%%,*}
{
  echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}; sampled GPU index $idx"
  nvidia-smi --query-gpu=index,name,pci.bus_id,power.limit,clocks.max.sm,clocks.sm,clocks.mem --format=csv
  nvidia-smi -q -d CLOCK -i "$idx"
} >> "$root/host_$campaign.txt" 2>&1
reps=(--warmup 2 --min-time-s 0 --reps-min 6 --reps-max 6)
mbs=8
[ "$tiny" = "1" ] && reps=(--warmup 1 --min-time-s 0 --reps-min 1 --reps-max 1) && mbs=2
for case in $CASES; do
  IFS=: read -r model layers limit budget <<< "$case"
  [[ "$parts" == *" $model "* ]] || continue
  shape=(--model "$model" --num-layers "$layers" --seq-len 4096 --mb-seqs 1)
  [ "$tiny" = "1" ] && shape=(--tiny)
  mkdir -p "$root/$model"
  smi_pid=
  if [ "$tiny" != "1" ]; then
    nvidia-smi -i "$idx" --query-gpu=timestamp,index,clocks.sm,clocks.mem,power.draw,power.limit,temperature.gpu \
      --format=csv -lms 100 > "$root/$model/gpu_clocks.csv" 2>&1 &
    smi_pid=$!
  fi
  part "$model" "$limit" "${torchrun[@]}" -m real.pipeline --out "$root/$model" "${shape[@]}" --precision bf16 \
    "${reps[@]}" --whole-reps --layouts ep1 --ep-microbatches "$mbs" --ep-holdout "$mbs" --budget-s "$budget"
  [ -n "$smi_pid" ] && kill "$smi_pid" 2>/dev/null
done
nvidia-smi --query-gpu=index,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv >> "$root/host_$campaign.txt" 2>&1
echo "s31clk1 done $(date -u +%FT%TZ)" | tee -a "$log"

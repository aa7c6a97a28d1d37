#!/usr/bin/env bash
# s28blind: a blind, pre-registered judgement of the committed twin (issue 13) on fresh H200 runs, 1 and 2 GPUs.
# Why: `twin validate` meets issue 13's targets on the committed records, but fresh runs predicted before they ran
# missed in earlier sessions on older twins; this asks today's twin once more. Three slices no record holds
# (twin/data/models.toml): llama3-8b-slice (dense GQA, 4 layers), dsv2-slice (DeepSeek-V2 MLA + 40 experts top-6 of 8
# groups, 1 dense + 1 MoE layer), phi35moe-slice (Phi-3.5-MoE: 16 experts of width 6400, top-2, GQA), at lengths and
# micro-batch counts no record holds, in the harnesses and settings of the held-out rows:
#   one GPU (the first given)  train   real.bench --only train (AdamW step, BF16 and the device's FP8):
#                                      llama s4096 b1,2; dsv2 s3072 b1,2; phi s4096 b1,2
#                              serve   real.bench --only serve (BF16, prompt 1536, 32 generated):
#                                      each model prefill b2,8, decode b4,16,64
#   two GPUs (the first two)   ep      real.pipeline ep2 (pp 1, ep 2, dp 2): dsv2 and phi at 2 layers, n 1,3
#                              pp      real.pipeline pp2, 1f1b/zb1p/dualpipev/dualpipe: llama and phi at 4 layers, n 4,6
# One sequence a micro-batch, BF16, seq 4096 on two GPUs. The twin's predictions of every row were committed before
# this ran (calibration/measurements/prereg/s28blind_*_predictions.csv, `python -m calibration.s28blind write`), the
# rule in docs/notes/s28blind_rule.md; the records are judged against them and fitted to nothing.
# Runs on any host with >= 2 GPUs (the lead may run it on 2 GPUs of a 4xH200 host): GPUs 0 and 1 unless
# CUDA_VISIBLE_DEVICES names others (its first two); the host file records which. Fewer than 2: exits 0, nothing run.
# Budget: parts under `timeout` 90 (train), 60 (serve), 35 + 35 (ep), 50 + 50 (pp): <= 320 s, expected ~180 s;
# each bench's own budget stops it starting a configuration late; rows are written as they go.
# Outputs OUTDIR/s28blind/: train/model.csv (train_step rows) and serve/model.csv (prefill, decode rows; GPU name,
# clocks, power, torch/CUDA versions in every row), each with env.json (one process each: real.bench rewrites its
# CSVs); ep/<model>/ and pp/<model>/: pipeline_step.csv (+ NCCL version), pipeline_ops.csv, pipeline_routing.csv,
# env_pipeline_*.json; s28blind.log, host_s28blind.txt (nvidia-smi, topology, clocks, GPUs used).
#   bash real/campaigns/s28blind.sh OUTDIR
# Env: PY (python3), S28BLIND_PARTS (default "train serve ep pp"), S28BLIND_TINY (1: CPU dry run: the tiny model,
# the one-GPU parts on the CPU, the two-GPU parts on 2 gloo ranks), S28BLIND_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s28blind.sh OUTDIR}/s28blind
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-python3}
tiny=${S28BLIND_TINY:-0}
scale=${S28BLIND_TIMEOUT_SCALE:-1}
# calibration/s28blind.py TRAIN_CASES / SERVE_CASES / EP_CASES / PP_CASES, in order (a test holds them equal)
TRAIN="llama3-8b-slice:4096:1,2;dsv2-slice:3072:1,2;phi35moe-slice:4096:1,2"
SERVE="llama3-8b-slice:1536:32:2,8:4,16,64;dsv2-slice:1536:32:2,8:4,16,64;phi35moe-slice:1536:32:2,8:4,16,64"
EP="dsv2-slice:2 phi35moe-slice:2"
PP="llama3-8b-slice:4 phi35moe-slice:4"
quick=()
if [ "$tiny" = "1" ]; then
  quick=(--quick)
  TRAIN="tiny:32:2"
  SERVE="tiny:16:8:2:2"
fi
campaign=s28blind
parts=" ${S28BLIND_PARTS:-train serve ep pp} "
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check (exit 0 on fewer), part(), torchrun
{
  echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset} (one-GPU parts: the first; two-GPU parts: the first two)"
  nvidia-smi --query-gpu=index,name,pci.bus_id,power.limit,clocks.max.sm,clocks.sm,clocks.mem --format=csv
  nvidia-smi -q -d CLOCK
} >> "$root/host_$campaign.txt" 2>&1
one_gpu=${CUDA_VISIBLE_DEVICES:-0}
one_gpu=${one_gpu%%,*}
mkdir -p "$root/train" "$root/serve"
CUDA_VISIBLE_DEVICES=$one_gpu REAL_BENCH_TRAIN_CASES="$TRAIN" \
  part train 90 "$PY" -m real.bench --out "$root/train" --only train --budget-s 75 ${quick[@]+"${quick[@]}"}
CUDA_VISIBLE_DEVICES=$one_gpu REAL_BENCH_SERVE_CASES="$SERVE" \
  part serve 60 "$PY" -m real.bench --out "$root/serve" --only serve --budget-s 48 ${quick[@]+"${quick[@]}"}

ep_reps=(--warmup 2 --min-time-s 0.5 --reps-min 3 --reps-max 5)
pp_reps=(--warmup 2 --min-time-s 0 --reps-min 4 --reps-max 4)
[ "$tiny" = "1" ] && ep_reps=(--warmup 1 --min-time-s 0 --reps-min 1 --reps-max 1) \
  && pp_reps=(--warmup 1 --min-time-s 0 --reps-min 1 --reps-max 1)
for case in $EP; do
  model=${case%%:*}
  shape=(--model "$model" --num-layers "${case##*:}" --seq-len 4096 --mb-seqs 1)
  [ "$tiny" = "1" ] && shape=(--tiny)
  mkdir -p "$root/ep/$model"
  [[ "$parts" == *" ep "* ]] && parts="$parts$model-ep "
  part "$model-ep" 35 "${torchrun[@]}" -m real.pipeline --out "$root/ep/$model" "${shape[@]}" --precision bf16 \
    "${ep_reps[@]}" --layouts ep2 --ep-microbatches 1,3 --ep-holdout 1,3 --trace-microbatches 3 --budget-s 22
done
schedules=1f1b,zb1p,dualpipev,dualpipe
for case in $PP; do
  model=${case%%:*}
  shape=(--model "$model" --num-layers "${case##*:}" --seq-len 4096 --mb-seqs 1)
  [ "$tiny" = "1" ] && shape=(--tiny) && schedules=dualpipev
  mkdir -p "$root/pp/$model"
  [[ "$parts" == *" pp "* ]] && parts="$parts$model-pp "
  part "$model-pp" 50 "${torchrun[@]}" -m real.pipeline --out "$root/pp/$model" "${shape[@]}" --precision bf16 \
    "${pp_reps[@]}" --whole-reps --layouts pp2 --schedules "$schedules" --microbatches 4,6 --holdout 4,6 \
    --trace-microbatches 6 --budget-s 40
done
echo "s28blind done $(date -u +%FT%TZ)" | tee -a "$log"

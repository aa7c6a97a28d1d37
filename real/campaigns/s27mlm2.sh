#!/usr/bin/env bash
# s27mlm2 (issue 14, the published memory column): the caching allocator's reserved peak beside its
# live-tensor peak in torchtitan's FSDP2 step of Llama 3.1 8B (docs/notes/s27mlm2_rule.md, committed
# before this ran).
# Why: torchtitan's memory figures are torch.cuda.memory_stats' reserved_bytes.all.peak (metrics.py @
# 9dec370), the twin counts live tensors; the gap between the two at the peak, and the twin's count
# itself (weights, optimizer state, activations under per-op SAC, the loss), are measured here.
# Parts (each under `timeout`; each step's row written as it ends, one file a rank):
#   e16 / n16   real.fsdp_memory, 16 of the 8B's blocks, expandable_segments on / off
#   e32 / n32   the whole 8B (32 blocks), expandable_segments on / off
# 2 ranks (FSDP 2, GPUs 0-1), local batch 2, sequence 8,192, 5 steps each.
# Budget: ~40 s a part (torch import, NCCL, 5 steps of ~2-3 s), 150 s timeout each: ~3 min in all.
# Every row carries gpu_name, clocks, power, driver, torch/CUDA/NCCL versions and PYTORCH_CUDA_ALLOC_CONF.
# Exits 0 with nothing run on fewer than 2 GPUs. NVLink SHARP (multicast) off, as every campaign.
# 2xH200 or 2xH100 (80 GB: the 32-block parts may run out of memory, recorded as status oom): filed by card.
#   bash real/campaigns/s27mlm2.sh OUTDIR
# Env: PY (python3), S27MLM2_TINY (1: CPU dry run on gloo ranks, a tiny model), S27MLM2_TIMEOUT_SCALE (1),
# S27MLM2_PARTS (" e16 n16 e32 n32 ": the parts to run).
set -u
root=${1:?usage: s27mlm2.sh OUTDIR}/s27mlm2
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PY:-python3}
tiny=${S27MLM2_TINY:-0}
scale=${S27MLM2_TIMEOUT_SCALE:-1}
parts=${S27MLM2_PARTS:-" e16 n16 e32 n32 "}
campaign=s27mlm2
gpus=2
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU-count check, part(), torchrun (2 ranks)
extra=()
[ "$tiny" = "1" ] && extra=(--tiny)
[ "$tiny" = "1" ] && export CUDA_VISIBLE_DEVICES=""   # gloo ranks on the CPU
[ "$tiny" = "1" ] || { nvidia-smi -q -d CLOCK; nvidia-smi -q -d MEMORY;
  nvidia-smi --query-gpu=index,name,clocks.sm,clocks.max.sm,clocks.mem,power.limit --format=csv; } \
  >> "$root/host_$campaign.txt" 2>&1
for layers in 16 32; do
  for seg in e n; do
    conf="expandable_segments:True"
    [ "$seg" = "n" ] && conf="expandable_segments:False"
    mkdir -p "$root/$seg$layers"
    PYTORCH_CUDA_ALLOC_CONF=$conf part "$seg$layers" 150 "${torchrun[@]}" -m real.fsdp_memory \
      --out "$root/$seg$layers" --layers "$layers" --steps 5 --config "$seg$layers" ${extra[@]+"${extra[@]}"}
  done
done
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s28tt (issue 14, the 8,192-GPU Llama 3 row's refusal and the FSDP2 memory record): what torchtitan's per-op
# selective AC keeps of a Llama 3.1 8B block, by the attention kernel SDPA runs (docs/notes/s28tt_rule.md,
# committed before this ran).
# Why: campaign s27mlm2's FSDP2 record keeps 8,320 B a token a block under the twin's count, exactly the
# attention's output and log-sum-exp; torch 2.11 on Hopper runs cuDNN's attention first, which torchtitan
# 9dec370's save list does not name. Each part is one fresh process (SDPA settles its backend order on its
# first call): real.sac_attention_memory, four of the 8B's blocks, 16,384 tokens, BF16, one GPU:
#   default        the backend torch picks (recorded)       flash / cudnn   one backend forced
#   cudnn_saved    cuDNN, its op added to the save list      flash_compile   flash, blocks under torch.compile
# Budget: ~15 s a part (torch import, four blocks' forward and backward), flash_compile ~60 s (Inductor);
# 90 / 240 s timeouts: ~2 min in all. Every row carries gpu_name, clocks, power, driver, torch/CUDA/cuDNN/NCCL.
# One GPU (GPU 0; exits 0 with nothing run without one). H200 or H100: bytes kept do not depend on the card
# (same image, same cuDNN); filed by card.
#   bash real/campaigns/s28tt.sh OUTDIR
# Env: PY (python3), S28TT_TINY (1: CPU dry run, a tiny block), S28TT_TIMEOUT_SCALE (1),
# S28TT_PARTS (" default flash cudnn cudnn_saved flash_compile ": the parts to run).
set -u
root=${1:?usage: s28tt.sh OUTDIR}/s28tt
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PY:-python3}
tiny=${S28TT_TINY:-0}
scale=${S28TT_TIMEOUT_SCALE:-1}
parts=${S28TT_PARTS:-" default flash cudnn cudnn_saved flash_compile "}
campaign=s28tt
gpus=1
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU-count check, part()
extra=()
[ "$tiny" = "1" ] && extra=(--tiny)
[ "$tiny" = "1" ] && export CUDA_VISIBLE_DEVICES=""
[ "$tiny" = "1" ] || { nvidia-smi -q -d CLOCK; nvidia-smi -q -d MEMORY;
  nvidia-smi --query-gpu=index,name,clocks.sm,clocks.max.sm,clocks.mem,power.limit --format=csv; } \
  >> "$root/host_$campaign.txt" 2>&1
for mode in default flash cudnn cudnn_saved flash_compile; do
  limit=90
  [ "$mode" = "flash_compile" ] && limit=240
  part "$mode" "$limit" "$PY" -m real.sac_attention_memory --out "$root" --mode "$mode" ${extra[@]+"${extra[@]}"}
done
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s31pub (issue 14, the published runs' positive skew): torch.compile's gain on the 8B FSDP rows' own step
# (docs/notes/s31pub_rule.md, committed before this ran).
# Why: on torchtitan's Table 1 rows the published compile gain is 6,667 / 5,762 = 1.157 (8 GPUs) and 6,514 / 5,605 =
# 1.162 (128 GPUs), the twin's 1.247 / 1.249; on our H100's one-block fitting records (h100/dense_block.csv, 8B block,
# 2 x 8,192, burst) the measured gain is 53.07 / 47.32 = 1.122 ms, the twin's 55.80 / 45.91 = 1.215. No record holds
# a whole step of those rows in eager and compiled form, so none says whether the block's gap survives in a step.
# Three parts, one process each, one GPU (FSDP2 over one rank), real.fsdp_memory with Table 1's shape and options:
# Llama 3.1 8B cut to 16 blocks on a card of >= 120 GB (6 on an 80 GB card; + embedding, final norm, BF16 head, FP32 loss), local batch 2 x 8,192, per-op SAC
# (torchtitan 9dec370's 'op' policy), flash SDPA (the rows' FA2), expandable segments, clip + foreach AdamW; 6 steps,
# the last profiled: step_eager (torch eager), step_compile (each block under torch.compile), step_fp8 (compiled +
# tensorwise Float8 linears, Table 1's third row).
# Budget: eager ~40 s, compiled parts ~90 s each (Inductor compile ~60 s): ~4 min; timeouts 150 / 210 / 210 s.
# One GPU (GPU 0; exits 0 with nothing run without one). Must not share its GPU with another part (its power and
# clock are in the measurement); another lane may use another GPU of the host. An H100 instead of an H200: run
# anyway, file by card (the rule judges whichever card ran, with that card's profile).
#   bash real/campaigns/s31pub.sh OUTDIR
# Env: PY (python3), S31PUB_TINY (1: CPU dry run, tiny shapes), S31PUB_TIMEOUT_SCALE (1),
# S31PUB_PARTS (" step_eager step_compile step_fp8 "), S31PUB_LAYERS (16 on a card of >= 120 GB, else 6).
set -u
root=${1:?usage: s31pub.sh OUTDIR}/s31pub
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PY:-python3}
tiny=${S31PUB_TINY:-0}
scale=${S31PUB_TIMEOUT_SCALE:-1}
parts=${S31PUB_PARTS:-" step_eager step_compile step_fp8 "}
campaign=s31pub
gpus=1
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU-count check, part(), torchrun (one rank)
 mem_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
layers=${S31PUB_LAYERS:-$([ "${mem_mib:-0}" -ge 120000 ] 2>/dev/null && echo 16 || echo 6)}
echo "$campaign: $layers blocks (card memory ${mem_mib:-?} MiB)" | tee -a "$log"
step=(--layers "$layers" --steps 6 --seq-len 8192 --local-batch 2 --ac op --sdpa flash --profile-last)
[ "$tiny" = "1" ] && step=(--tiny --layers 2 --steps 3 --seq-len 64 --local-batch 2 --ac op)
[ "$tiny" = "1" ] && export CUDA_VISIBLE_DEVICES=""
[ "$tiny" = "1" ] || { nvidia-smi -q -d CLOCK; nvidia-smi -q -d POWER;
  nvidia-smi --query-gpu=index,name,clocks.sm,clocks.max.sm,clocks.mem,power.limit,power.draw,temperature.gpu --format=csv; } \
  >> "$root/host_$campaign.txt" 2>&1
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True   # torchtitan's run_llama_train.sh (the rows' allocator)
part step_eager 150 "${torchrun[@]}" -m real.fsdp_memory --out "$root/step_eager" "${step[@]}" --config t1_eager
part step_compile 210 "${torchrun[@]}" -m real.fsdp_memory --out "$root/step_compile" "${step[@]}" --compile \
  --config t1_compile
part step_fp8 210 "${torchrun[@]}" -m real.fsdp_memory --out "$root/step_fp8" "${step[@]}" --compile --float8 \
  --config t1_fp8
[ "$tiny" = "1" ] || nvidia-smi --query-gpu=index,name,clocks.sm,power.draw,temperature.gpu --format=csv >> "$root/host_$campaign.txt" 2>&1
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s27mlm (issue 14, Megatron-LM's TP 8 rows): torch's fused all-gather-matmul timed beside its parts at
# the GEMM shapes TransformerEngine's ring_exchange overlap chunks on a Megatron GPT TP8 rank, a check of
# twin.training.step.ADOPT_TE_RING_EXCESS (docs/notes/s27mlm_rule.md, check K).
#
# Why: the switch carries s20tt's copy-engine floor (fitted on torchtitan's 70B TP2 slices, chunks of
# 8,192 rows) to TE's ring_exchange, the same mechanism (copy-engine shards beside per-shard GEMM
# chunks). Megatron's chunks are 512 rows (4,096 tokens over TP 8): whether the floor holds at those
# short chunk GEMMs is what these rows say. No TransformerEngine on the image: torch's op is the
# mechanism's stand-in, as the rule states.
# Parts (each under `timeout`; real.bench writes each row as it is timed):
#   x2   real.bench --only async_tp_mlm on 2 ranks (GPUs 0-1): 32B / 177B / 462B qkv_fprop, fc1_fprop,
#        proj_dgrad at M = 512 x 2: GEMM alone, NCCL all-gather alone, in sequence, fused (symmetric
#        memory), a peer pull alone and beside the GEMM          -> OUTDIR/s27mlm/x2/async_tp.csv
# Budget: <= 90 s of wall (section budget 60 s, timeout 90 s).
# Every row carries gpu_name, clocks, power, torch/CUDA/NCCL versions, num_gpus (real.bench.records).
# Exits 0 with nothing run on fewer than 2 GPUs. NVLink SHARP (multicast) off, as every campaign.
# 2xH200 or 2xH100: either is filed by its card (calibration/measurements/<gpu>x2/s27mlm/).
#   bash real/campaigns/s27mlm.sh OUTDIR
# Env: PY (python3), S27MLM_TINY (1: CPU dry run on gloo ranks, --quick sizes), S27MLM_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s27mlm.sh OUTDIR}/s27mlm
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PY:-python3}
tiny=${S27MLM_TINY:-0}
scale=${S27MLM_TIMEOUT_SCALE:-1}
parts=" x2 "
campaign=s27mlm
gpus=2
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU-count check, part()
quick=()
[ "$tiny" = "1" ] && quick=(--quick)
[ "$tiny" = "1" ] && export CUDA_VISIBLE_DEVICES=""   # gloo ranks on the CPU
{ nvidia-smi -q -d CLOCK; nvidia-smi --query-gpu=index,name,clocks.sm,clocks.max.sm,clocks.mem,power.limit --format=csv; } \
  >> "$root/host_$campaign.txt" 2>&1 || true
mkdir -p "$root/x2"
part x2 90 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m real.bench --only async_tp_mlm \
  ${quick[@]+"${quick[@]}"} --out "$root/x2" --budget-s 60
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

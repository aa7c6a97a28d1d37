#!/usr/bin/env bash
# s30mlm2 (issue 14, round 2 of s30mlm): a held TP 8 GEMM of Megatron's 119B / 177B / 462B and one TP transfer
# started together as TransformerEngine's bulk overlap starts them (transfer kernel on a high-priority stream, then
# the GEMM; the main stream waits for the transfer), every board of the host loaded at once
# (docs/notes/s30mlm_rule.md "Round 2", committed before this ran). Round 1 (s30mlm.sh) streamed short transfers
# beside back-to-back GEMMs: its copy-engine stream starved on the host, and a stream of short NCCL kernels is not
# TE's order. The rule's candidate (ADOPT_TP_TRAFFIC_MEASURED) takes its four figures from these records.
# One part: torchrun on all the host's GPUs (4 on nvidia-h200-x4; 2 run, the rule asks >= 3), real.bench.tp_te_order:
# per model and GEMM (fc1, fc2 forward at 4,096 tokens), each transfer alone, then windows alone / beside one
# copy-engine pull / one NCCL reduce-scatter / one NCCL all-gather an iteration, three rounds, NCCL on 16 channels.
# Run it ALONE on its host (other load moves the boards' power and clocks).
# Budget: ~25 s torch + NCCL start, 8 s warm-up, 6 GEMMs x (1 s re-warm + 12 windows x ~0.3 s) = ~30 s: ~70 s;
# timeout 200 s.
# Outputs OUTDIR/s30mlm2/: tp_te_order_rank<r>.csv (every row: board, GPU name, clocks, power limit, driver,
# torch/CUDA/NCCL versions, NCCL channels), env_rank<r>.json, s30mlm2.log, host_s30mlm2.txt.
#   bash real/campaigns/s30mlm2.sh OUTDIR
# Env: PY (python3), S30MLM2_TINY (1: CPU dry run, two gloo ranks, tiny shapes), S30MLM2_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s30mlm2.sh OUTDIR}/s30mlm2
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1 CUDA_DEVICE_ORDER=PCI_BUS_ID
export NCCL_MIN_NCHANNELS=16 NCCL_MAX_NCHANNELS=16   # TE's num_sm = 16 for its pipeline and bulk kernels
PY=${PY:-python3}
tiny=${S30MLM2_TINY:-0}
scale=${S30MLM2_TIMEOUT_SCALE:-1}
campaign=s30mlm2
gpus=2
parts=" te_order "
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU-count check (>= 2), part()
[ "$tiny" = "1" ] || { nvidia-smi -q -d CLOCK; nvidia-smi -q -d POWER;
  nvidia-smi --query-gpu=index,name,serial,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv; } \
  >> "$root/host_$campaign.txt" 2>&1
# every GPU of the host (the x4 lease's four), not two_gpu_parts' first two
[ "$tiny" = "1" ] || export CUDA_VISIBLE_DEVICES=$(seq -s, 0 $(( ngpu - 1 )))
nproc=$ngpu
[ "$tiny" = "1" ] && nproc=2
extra=()
[ "$tiny" = "1" ] && extra=(--quick)
part te_order 200 "$PY" -m torch.distributed.run --standalone --nproc-per-node "$nproc" -m real.bench.tp_te_order \
  --out "$root" ${extra[@]+"${extra[@]}"}
[ "$tiny" = "1" ] || nvidia-smi --query-gpu=index,clocks.sm,power.draw,temperature.gpu --format=csv \
  >> "$root/host_$campaign.txt" 2>&1
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s30mlm (issue 14): a held TP 8 GEMM of Megatron's 119B / 177B / 462B beside TP traffic, and the traffic
# beside it, every board of the host loaded at once (docs/notes/s30mlm_rule.md, committed before this ran).
# Why: the twin prices a GEMM beside TransformerEngine's 16-SM userbuffers kernels at the slowdown measured
# beside a spin kernel on one idle-linked GPU, the kernels at their link time, and a GEMM beside the
# copy-engine ring exchange at full rate; the rule's candidate (ADOPT_TP_TRAFFIC_MEASURED) takes those
# three figures from these records.
# One part: torchrun on all the host's GPUs (4 on nvidia-h200-x4; 2 suffice to run, the rule asks >= 4),
# real.bench.tp_traffic: per model and GEMM (fc1, fc2 forward at 4,096 tokens), windows alone / beside
# copy-engine pulls / beside NCCL reduce-scatters / beside NCCL all-gathers, three rounds, NCCL on 16
# channels (TE's num_sm) on a high-priority stream. Run it ALONE on its host (other load moves the boards'
# power and clocks).
# Budget: ~25 s torch + NCCL start, 8 s warm-up, 6 GEMMs x (1 s re-warm + 12 windows x ~1 s) = ~80 s: ~115 s;
# timeout 240 s.
# Outputs OUTDIR/s30mlm/: tp_traffic_rank<r>.csv (every row: board, GPU name, clocks, power limit, driver,
# torch/CUDA/NCCL versions, NCCL channels), env_rank<r>.json, s30mlm.log, host_s30mlm.txt (nvidia-smi,
# topology, clocks, power limits, before and after).
#   bash real/campaigns/s30mlm.sh OUTDIR
# Env: PY (python3), S30MLM_TINY (1: CPU dry run, two gloo ranks, tiny shapes), S30MLM_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s30mlm.sh OUTDIR}/s30mlm
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1 CUDA_DEVICE_ORDER=PCI_BUS_ID
export NCCL_MIN_NCHANNELS=16 NCCL_MAX_NCHANNELS=16   # TE's num_sm = 16 for its pipeline and bulk kernels
PY=${PY:-python3}
tiny=${S30MLM_TINY:-0}
scale=${S30MLM_TIMEOUT_SCALE:-1}
campaign=s30mlm
gpus=2
parts=" traffic "
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
part traffic 240 "$PY" -m torch.distributed.run --standalone --nproc-per-node "$nproc" -m real.bench.tp_traffic \
  --out "$root" ${extra[@]+"${extra[@]}"}
[ "$tiny" = "1" ] || nvidia-smi --query-gpu=index,clocks.sm,power.draw,temperature.gpu --format=csv \
  >> "$root/host_$campaign.txt" 2>&1
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

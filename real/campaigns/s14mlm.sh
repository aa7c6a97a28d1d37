#!/usr/bin/env bash
# s14mlm (issue 14, Megatron's TP 8 rows): NCCL's in-node collectives at 4 ranks beside 2 on one host.
#
# Why: the twin costs every TP collective inside a node with the profile's `collectives` table, an
# alpha-beta fit of a 2-rank sweep (calibration/measurements/<gpu>x2/nccl.csv: reduce-scatter bus
# bandwidth 261 GB/s, all-gather 279 GB/s on H100), whatever the TP degree. On Megatron's TP 8 rows
# the exposed TP communication under TransformerEngine's userbuffers (32B: 7.9% of the pipeline) is
# mostly collectives longer than the small GEMMs beside them (docs/notes/s14mlm_rule.md, section 2),
# so their rate at more than two ranks decides it; the catalog's figure for NVLink collectives is
# ~370 GB/s (nccl-tests#212). No record of ours has a collective over more than two GPUs of a node.
# Parts (each under `timeout`, rows flushed one at a time by real.bench's nccl section):
#   x4   real.bench --only nccl on 4 ranks (GPUs 0-3): all ops, 4 KiB .. 1 GiB  -> OUTDIR/s14mlm/x4/nccl.csv
#   x2   the same on 2 ranks (GPUs 0-1), the same host's baseline              -> OUTDIR/s14mlm/x2/nccl.csv
# Budget: <= 150 s (x4 section budget 45 s, timeout 70 s; x2 section budget 30 s, timeout 55 s).
# Every row carries gpu_name, clocks, power, torch/CUDA/NCCL versions, num_gpus (real.bench.records).
# Exits 0 with nothing run on fewer than 4 GPUs. NVLink SHARP (multicast) off, as every campaign.
# A 4xH200 host is as useful as 4xH100 (a record of its own GPU kind; the twin has h200x2 too).
#   bash real/campaigns/s14mlm.sh OUTDIR
# Env: PY (python3), S14MLM_TINY (1: CPU dry run on gloo ranks, --quick sizes), S14MLM_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s14mlm.sh OUTDIR}/s14mlm
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PY:-python3}
tiny=${S14MLM_TINY:-0}
scale=${S14MLM_TIMEOUT_SCALE:-1}
parts=" x4 x2 "
campaign=s14mlm
gpus=4
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU-count check, part()
quick=()
[ "$tiny" = "1" ] && quick=(--quick)
[ "$tiny" = "1" ] && export CUDA_VISIBLE_DEVICES=""   # gloo ranks on the CPU
nvidia-smi --query-gpu=index,name,clocks.sm,clocks.max.sm,clocks.mem,power.limit --format=csv \
  >> "$root/host_$campaign.txt" 2>&1 || true
mkdir -p "$root/x4" "$root/x2"
bench=(-m real.bench --only nccl "${quick[@]}")
part x4 70 "$PY" -m torch.distributed.run --standalone --nproc-per-node 4 "${bench[@]}" --out "$root/x4" --budget-s 45
part x2 55 env CUDA_VISIBLE_DEVICES=0,1 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 "${bench[@]}" \
  --out "$root/x2" --budget-s 30
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

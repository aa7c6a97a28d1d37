#!/usr/bin/env bash
# s26mem: device memory a training process holds outside torch's caching allocator (the CUDA context,
# kernels' modules, cuBLAS handles, NCCL communicators and their buffers), which torch's reserved
# memory and the twin's count both leave out (docs/notes/s26mem2_rule.md, committed before this ran).
# Why: the Llama 3 405B 8K 8,192-GPU row fits the twin's count by 0.19 GiB of torch's total_memory;
# whatever the process holds besides its tensors comes out of that margin.
# One part: real.runtime_memory on two GPUs (two ranks, NCCL, NVLink multicast off), each rank
# recording its GPU's used memory after: no context (NVML), the context, a BF16 block forward and
# backward, the NCCL world group, two more groups, point-to-point, the block again.
# Run it alone on a 2-GPU host (asked as nvidia-h200-x2; 2xH100 runs the same, filed as h100x2):
#   bash real/campaigns/s26mem.sh OUTDIR
# Budget: one part under `timeout` 120 s (expected ~30 s: two torch imports, NCCL init, two blocks).
# Stops cleanly (exit 0, nothing run) on fewer than 2 GPUs.
# Outputs OUTDIR/s26mem/: runtime_memory.csv (GPU name, clocks, power limit, driver, torch, CUDA and
# NCCL versions in every row), s26mem.log, host_s26mem.txt (nvidia-smi, topology, clocks).
# Env: PY (python3), S26MEM_TINY (1: CPU dry run on two gloo ranks, a tiny block), S26MEM_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s26mem.sh OUTDIR}/s26mem
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
# NCCL names its transports in the log (P2P/CUMEM or SHM: each rank sees its own GPU alone)
[ "${S26MEM_TINY:-0}" = "1" ] || export NCCL_DEBUG=INFO NCCL_DEBUG_SUBSYS=INIT
PY=${PY:-python3}
tiny=${S26MEM_TINY:-0}
scale=${S26MEM_TIMEOUT_SCALE:-1}
parts=" runtime_memory "
campaign=s26mem
gpus=2
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU check, part(), torchrun (2 ranks)
[ "$tiny" = "1" ] || { nvidia-smi -q -d CLOCK; nvidia-smi -q -d MEMORY; } >> "$root/host_$campaign.txt" 2>&1
extra=()
[ "$tiny" = "1" ] && extra=(--tiny)
part runtime_memory 120 "${torchrun[@]}" -m real.runtime_memory --out "$root" "${extra[@]}"
echo "s26mem done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# Issue 14 (real/ side), on a host with 2 GPUs joined by NVLink: an NCCL collectives size sweep,
# then tensor/sequence-parallel MLA and MoE blocks and ring (context-parallel) attention, each
# beside its one-GPU reference. Writes OUTDIR/i14real/{nccl,parallel_blocks}.csv, env_*.json,
# topo.txt and log.txt. Budget 120 s: sweep <= 50 s, blocks <= 70 s (each part under `timeout`;
# a part cut short keeps the rows already written, one flushed row at a time).
#   bash real/campaigns/i14real.sh OUTDIR            (I14_QUICK=1: tiny shapes, a CPU dry run)
# NVLink SHARP (multicast) stays off, as in the EP campaign (calibration/measurements/README.md).
set -u
OUT="${1:?usage: real/campaigns/i14real.sh OUTDIR}/i14real"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
QUICK=()
[ "${I14_QUICK:-0}" = "1" ] && QUICK=(--quick)
LOG="$OUT/log.txt"
{
  echo "i14real campaign $(date -u +%FT%TZ)"
  nvidia-smi topo -m > "$OUT/topo.txt" 2>&1 || echo "no nvidia-smi topo" > "$OUT/topo.txt"
  nvidia-smi nvlink -s >> "$OUT/topo.txt" 2>&1 || true
  run_part() {  # name, wall limit (s), section budget (s)
    local dir="$OUT/part_$1"
    mkdir -p "$dir"
    timeout -k 5 "$2" python3 -m torch.distributed.run --standalone --nproc-per-node 2 \
      -m real.bench --out "$dir" --only "$1" --budget-s "$3" "${QUICK[@]}"
    echo "part $1 exit $?"
    for f in "$dir"/*.csv; do [ -e "$f" ] && mv "$f" "$OUT/"; done
    [ -e "$dir/env.json" ] && mv "$dir/env.json" "$OUT/env_$1.json"
    rmdir "$dir" 2>/dev/null || true
  }
  run_part nccl 50 28
  run_part parallel_blocks 70 45
  echo "i14real done $(date -u +%FT%TZ)"
} 2>&1 | tee "$LOG"

#!/usr/bin/env bash
# Issue 14, context-parallel (CP2) attention blocks on a host with 2 GPUs joined by NVLink, 70 s:
#   1. `--only cp_allgather`: all-gather CP (keys/values all-gathered, public SDPA) of causal MLA-
#      shaped attention and of the MLA sublayer, beside their one-GPU references (wall <= 36 s);
#   2. `--only cp_ring`: ring CP (PyTorch's private memory-efficient kernel per block), in a
#      process of its own afterwards (wall <= 26 s), so that a fault in the ring's kernels (the
#      first 2xH200 campaign's illegal memory access) loses no all-gather or reference row.
# Each part under `timeout`; a part cut short keeps the rows already written (one flushed row at
# a time). Writes OUTDIR/i14cp/parallel_blocks_cp.csv (both parts' rows under one header), the
# parts' own parallel_blocks_{allgather,ring}.csv, env_{allgather,ring}.json, topo.txt, log.txt.
#   bash real/campaigns/i14cp.sh OUTDIR     (I14CP_QUICK=1: tiny shapes, a CPU dry run on gloo)
# NVLink SHARP (multicast) stays off, as in the EP campaign (calibration/measurements/README.md).
set -u
OUT="${1:?usage: real/campaigns/i14cp.sh OUTDIR}/i14cp"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
k=1   # wall limits are the GPU's; a CPU dry run on a loaded machine gets five times as long
[ "${I14CP_QUICK:-0}" = "1" ] && { QUICK=(--quick); k=5; }
{
  echo "i14cp campaign $(date -u +%FT%TZ)"
  nvidia-smi topo -m > "$OUT/topo.txt" 2>&1 || echo "no nvidia-smi topo" > "$OUT/topo.txt"
  run_part() {  # cp kind, wall limit (s), section budget (s)
    local dir="$OUT/part_$1"
    mkdir -p "$dir"
    timeout -k 5 $(( $2 * k )) "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 \
      -m real.bench --out "$dir" --only "cp_$1" --budget-s "$3" ${QUICK[@]+"${QUICK[@]}"}
    echo "part cp_$1 exit $? at $(date -u +%FT%TZ)"
    [ -e "$dir/parallel_blocks.csv" ] && mv "$dir/parallel_blocks.csv" "$OUT/parallel_blocks_$1.csv"
    [ -e "$dir/env.json" ] && mv "$dir/env.json" "$OUT/env_$1.json"
    rm -rf "$dir"
  }
  run_part allgather 36 21
  run_part ring 26 12
  merged="$OUT/parallel_blocks_cp.csv"
  rm -f "$merged"
  for f in "$OUT/parallel_blocks_allgather.csv" "$OUT/parallel_blocks_ring.csv"; do
    [ -e "$f" ] || continue
    if [ -e "$merged" ]; then tail -n +2 "$f" >> "$merged"; else cp "$f" "$merged"; fi
  done
  echo "i14cp done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

#!/usr/bin/env bash
# Issue 14 re-measurement on a host with 2 GPUs joined by NVLink (150 s at most):
#   1. `--only tp_blocks`: the host time to issue one call of each TP collective and of a plain
#      kernel (collective_host.csv, ~1 s), then the TP2 MLA/MoE blocks with and without sequence
#      parallelism beside their one-GPU references, now with each repetition's host issue time
#      (host_time_s), 10 repetitions, then Chrome traces of two repetitions of three fitting-size
#      v2-lite TP2 blocks on each rank (traces/, a diagnostic of where the host time goes)
#      (wall <= 45 s);
#   2. `--only cp_blocks`: CP2 attention and MLA sublayer rows, all-gather and ring, both on
#      cuDNN's fused attention per block (real/cp.py; the first campaigns' memory-efficient kernel
#      made CP2 5x slower than CP1), beside the one-GPU SDPA references (wall <= 60 s);
#   3. only if part 2 wrote no ring row (a fault in the cuDNN path): the same rows again with the
#      memory-efficient kernel (REAL_CP_BLOCK_KERNEL=efficient, wall <= 35 s), so the fault costs
#      the re-measurement, not the campaign.
# The held-out split is the bench's (real/bench/parallel_blocks.py block_split): TP 4096 tokens and
# every v2-lite MoE row, CP 16384 positions. Each part under `timeout`; a part cut short keeps the
# rows already written (one flushed row at a time). Writes OUTDIR/s7cp/parallel_blocks_tp.csv,
# parallel_blocks_cp.csv, collective_host.csv, env_{tp,cp}.json, topo.txt and log.txt; the lead
# copies parallel_blocks_tp.csv over calibration/measurements/<gpu>x2/parallel_blocks.csv,
# parallel_blocks_cp.csv over parallel_blocks_cp.csv, collective_host.csv beside them.
#   bash real/campaigns/s7cp.sh OUTDIR     (S7CP_QUICK=1: tiny shapes, a CPU dry run on gloo)
# NVLink SHARP (multicast) stays off, as in the EP campaign (calibration/measurements/README.md).
set -u
OUT="${1:?usage: real/campaigns/s7cp.sh OUTDIR}/s7cp"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
k=1   # wall limits are the GPU's; a CPU dry run on a loaded machine gets five times as long
[ "${S7CP_QUICK:-0}" = "1" ] && { QUICK=(--quick); k=5; }
{
  echo "s7cp campaign $(date -u +%FT%TZ)"
  nvidia-smi topo -m > "$OUT/topo.txt" 2>&1 || echo "no nvidia-smi topo" > "$OUT/topo.txt"
  run_part() {  # section, output name, wall limit (s), section budget (s)
    local dir="$OUT/part_$2"
    mkdir -p "$dir"
    timeout -k 5 $(( $3 * k )) "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 \
      -m real.bench --out "$dir" --only "$1" --budget-s "$4" ${QUICK[@]+"${QUICK[@]}"}
    echo "part $1 ($2) exit $? at $(date -u +%FT%TZ)"
    [ -e "$dir/parallel_blocks.csv" ] && mv "$dir/parallel_blocks.csv" "$OUT/parallel_blocks_$2.csv"
    [ -e "$dir/collective_host.csv" ] && mv "$dir/collective_host.csv" "$OUT/collective_host.csv"
    [ -e "$dir/env.json" ] && mv "$dir/env.json" "$OUT/env_$2.json"
    rm -rf "$dir"
  }
  mkdir -p "$OUT/traces"
  REAL_BENCH_TRACE_DIR="$OUT/traces" run_part tp_blocks tp 45 30
  run_part cp_blocks cp 60 42
  if ! grep -q ",ring," "$OUT/parallel_blocks_cp.csv" 2>/dev/null; then
    echo "no ring row from the cuDNN path: again with the memory-efficient kernel"
    REAL_CP_BLOCK_KERNEL=efficient run_part cp_blocks cp_efficient 35 22
  fi
  echo "s7cp done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

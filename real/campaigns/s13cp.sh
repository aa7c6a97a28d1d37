#!/usr/bin/env bash
# Issue 14, what the CP2 blocks of real/cp.py spend beyond the twin (s13cp), on a host with 2 GPUs
# (<= 100 s; stops cleanly, writing why, where fewer than 2 GPUs are given):
#   1. `--only cp_blocks` (wall <= 40 s): the CP2 attention and MLA sublayer blocks, all-gather and
#      ring, fitting and held-out sizes, beside their one-GPU references, timed exactly as the
#      committed records (calibration/measurements/<gpu>x2/parallel_blocks_cp.csv, campaign s7cp:
#      8 repetitions after 2 warm-ups, CUDA events, the slowest rank's) -> parallel_blocks_cp.csv;
#   2. `--only cp_traces` (wall <= 52 s): the same CP2 configurations, fitting ones first, each with
#      3 repetitions carrying host-only marks (perf_counter_ns at every P2P post and wait and every
#      collective call, no added sync), then 2 under torch.profiler: every GPU activity with its
#      stream, start/end, launching runtime call and CPU op, per rank (real/bench/cp_traces.py)
#      -> cp_trace_{kernels (gzipped),marks,reps}_rank{0,1}.csv.
# The held-out split is the bench's (block_split: CP 16384 positions). Each part under `timeout`;
# a part cut short keeps its rows (parallel_blocks_cp.csv one flushed row at a time, the traces
# case by case). Writes OUTDIR/s13cp/: parallel_blocks_cp.csv, cp_trace_*.csv[.gz],
# env_{cp,traces}.json, topo.txt, log.txt.
#   bash real/campaigns/s13cp.sh OUTDIR     (S13CP_QUICK=1: tiny shapes, a CPU dry run on 2 gloo ranks)
# NVLink SHARP (multicast) stays off, as in the EP campaign (calibration/measurements/README.md).
set -u
OUT="${1:?usage: real/campaigns/s13cp.sh OUTDIR}/s13cp"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
HERE=$(cd "$(dirname "$0")" && pwd)
QUICK=()
k=1   # wall limits are the GPU's; a CPU dry run on a loaded machine gets three times as long
source "$HERE/gpus.sh"
if [ "${S13CP_QUICK:-0}" = "1" ]; then QUICK=(--quick); k=3; NGPU=2; fi
{
  echo "s13cp campaign $(date -u +%FT%TZ), $NGPU GPU(s)"
  if [ "$NGPU" -lt 2 ]; then
    echo "s13cp: $NGPU GPU(s) given, 2 needed: nothing run"
    exit 0
  fi
  nvidia-smi topo -m > "$OUT/topo.txt" 2>&1 || echo "no nvidia-smi topo" > "$OUT/topo.txt"
  nvidia-smi --query-gpu=index,name,power.limit,clocks.max.sm,clocks.max.mem --format=csv >> "$OUT/topo.txt" 2>&1 || true
  run_part() {  # section, output name, wall limit (s), section budget (s)
    local dir="$OUT/part_$2"
    mkdir -p "$dir"
    REAL_BENCH_CP_TRACE_DIR="$dir" timeout -k 5 $(( $3 * k )) "$PY" -m torch.distributed.run --standalone \
      --nproc-per-node 2 -m real.bench --out "$dir" --only "$1" --budget-s "$4" ${QUICK[@]+"${QUICK[@]}"}
    echo "part $1 ($2) exit $? at $(date -u +%FT%TZ)"
    [ -e "$dir/parallel_blocks.csv" ] && mv "$dir/parallel_blocks.csv" "$OUT/parallel_blocks_cp.csv"
    for f in "$dir"/cp_trace_kernels_rank*.csv; do [ -e "$f" ] && gzip -f "$f" && mv "$f.gz" "$OUT/"; done
    for f in "$dir"/cp_trace_*.csv; do [ -e "$f" ] && mv "$f" "$OUT/"; done
    [ -e "$dir/env.json" ] && mv "$dir/env.json" "$OUT/env_$2.json"
    rm -rf "$dir"
  }
  run_part cp_blocks cp 40 30
  run_part cp_traces traces 52 40
  ls -l "$OUT"
  echo "s13cp done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

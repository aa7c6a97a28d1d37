#!/usr/bin/env bash
# Issue 14, torchtitan's 8B CP rows (session s17cp). Why: the published step per unit of CP work
# grows ~1.5x from CP2 to CP4-CP8 (Table 2 of benchmarks/llama3_h100_202412_torchtitan.md) while
# PyTorch's CP attention core alone, compiled, on one host (s10cpc, h100x4/torch_cp_scaling) grows
# 5% from CP2 to CP4 and the twin follows the core. Not measured yet: the whole block as torchtitan
# runs it, full activation checkpointing traced into torch.compile with the ring attention
# (ptd_checkpoint_wrapper then torch.compile(fullgraph=True), parallelize_llama.py @ 9dec370), where
# AOTAutograd's partitioner decides what the backward re-runs (the K/V all-gather once or twice).
# This runs section cp_block (real/bench/cp_block.py): one Llama-3.1-8B TransformerBlock, BF16,
# 32K positions a rank, forward + backward with the recomputation, rotate method allgather, SDPA
# restricted to flash/efficient as torchtitan's train context:
#   1. only where >= 4 GPUs exist: CP4 under torchrun, S = 128K (wall <= 60 s, compile included);
#   2. CP2 under torchrun, S = 64K (wall <= 45 s);
#   3. CP1, one process on one GPU, S = 32K, the plain block (wall <= 35 s).
# Fewer than 2 GPUs: exits 0 having run nothing. Budget <= 140 s on a 4-GPU host.
# Outputs OUTDIR/s17cp/: torch_cp_cp{4,2,1}.csv (bench cp_block_compiled), torch_cp_kernels_cp*.csv,
# torch_cp_timeline_cp*.csv, env_cp*.json (GPU name, clocks, torch/CUDA/NCCL versions; per-rank peak
# memory and allocator retries: cp_block_memory), traces/ (Chrome traces per rank), topo.txt, log.txt.
# Split: CP4 held out (torch_cp.scaling_split), CP1/CP2 fit.
#   bash real/campaigns/s17cp.sh OUTDIR    (S17CP_QUICK=1: tiny shapes, a CPU dry run on gloo ranks,
#   where PyTorch's CP cannot run and the parts record why; S17CP_EAGER=1: the block eager)
set -u
OUT="${1:?usage: real/campaigns/s17cp.sh OUTDIR}/s17cp"
mkdir -p "$OUT/traces"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
[ "${S17CP_EAGER:-0}" = "1" ] && export REAL_BENCH_CP_BLOCK_COMPILE=0
PY=${PYTHON:-python3}
QUICK=()
[ "${S17CP_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S17CP_QUICK:-0}" = "1" ] && NGPU=${S17CP_QUICK_RANKS:-2}   # the CPU dry run: gloo ranks
{
  echo "s17cp campaign $(date -u +%FT%TZ), $NGPU GPU(s)"
  if [ "$NGPU" -lt 2 ]; then
    echo "$NGPU GPU(s): nothing to run (the campaign compares CP degrees on one host)"
    exit 0
  fi
  nvidia-smi topo -m > "$OUT/topo.txt" 2>&1 || echo "no nvidia-smi topo" > "$OUT/topo.txt"
  collect() {  # part dir, cp degree
    local dir=$1 f base
    for f in "$dir"/*.csv; do
      [ -e "$f" ] || continue
      base=$(basename "$f" .csv)
      mv "$f" "$OUT/${base}_cp$2.csv"
    done
    [ -e "$dir/env.json" ] && mv "$dir/env.json" "$OUT/env_cp$2.json"
    rm -rf "$dir"
  }
  for W in 4 2; do
    if [ "$NGPU" -ge "$W" ]; then
      if [ "$W" = 4 ]; then LIMIT=60; else LIMIT=45; fi
      d="$OUT/part_cp$W"; mkdir -p "$d"
      REAL_BENCH_TRACE_DIR="$OUT/traces" timeout -k 5 "$LIMIT" "$PY" -m torch.distributed.run --standalone \
        --nproc-per-node "$W" -m real.bench --out "$d" --only cp_block --budget-s $((LIMIT - 10)) \
        ${QUICK[@]+"${QUICK[@]}"}
      echo "part cp$W exit $? at $(date -u +%FT%TZ)"
      collect "$d" "$W"
    else
      echo "$NGPU GPU(s): the CP$W part skipped"
    fi
  done
  d="$OUT/part_cp1"; mkdir -p "$d"
  CUDA_VISIBLE_DEVICES=$ONE_GPU REAL_BENCH_TRACE_DIR="$OUT/traces" timeout -k 5 35 "$PY" -m real.bench --out "$d" \
    --only cp_block --budget-s 25 ${QUICK[@]+"${QUICK[@]}"}
  echo "part cp1 exit $? at $(date -u +%FT%TZ)"
  collect "$d" 1
  echo "s17cp done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

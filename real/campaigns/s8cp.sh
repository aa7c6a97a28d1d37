#!/usr/bin/env bash
# Issue 14, PyTorch's own context parallelism and the attention calls CP is made of (s8cp):
#   1. one GPU (the first of CUDA_VISIBLE_DEVICES, else GPU 0), `--only tp_grouped,cp_chunks` (wall <= 60 s): the TP2 MoE blocks' half-width
#      expert GEMMs (gemm.csv, real/bench/gemm.py TP2_GROUPED, ~10 s); the Llama-3.1-8B attention core as
#      torchtitan runs it (repeat_kv, SDPA) causal at every total and per-rank length of part 2
#      (the CP1 references, 8K..128K), the non-causal s x s/2 and s/2 x s calls of a CP2 rank, and
#      real/cp.py's MLA blocks (cuDNN private op) at the CP2 rows' diagonal and off-diagonal shapes,
#      forward and forward + backward (cp_chunks.csv);
#   2. only where 2 GPUs exist, `--only torch_cp` under torchrun (wall <= 110 s): CP2 of the same
#      Llama block through torch.distributed.tensor.experimental.context_parallel, rotate methods
#      allgather and alltoall, total sequence 16K..128K, timed, then two profiled repetitions per
#      rank: kernels by phase (torch_cp_kernels.csv), GPU timelines with the NCCL time not under
#      compute (torch_cp_timeline.csv), Chrome traces at 64K (traces/);
#   3. only where 2 GPUs exist, `--only tp_traces` (wall <= 38 s): per-rank Chrome traces of TP2
#      blocks at fitting sizes (real/bench/parallel_blocks.py TP_TRACE_CASES), host and device,
#      and of their one-GPU references (rank 0), host and device, for the analysis of the TP2
#      misses (traces/).
# The held-out split: Llama S = 32768 (its CP2 rows and chunk calls), MLA S = 16384 (as the
# parallel_blocks CP rows); fit otherwise. Each part under `timeout`; a part cut short keeps the
# rows already written (one flushed row at a time). Writes OUTDIR/s8cp/{cp_chunks,torch_cp,
# torch_cp_kernels,torch_cp_timeline}.csv, gemm.csv (tp_grouped), env_{chunks,torch_cp,tp_traces}.json, traces/,
# topo.txt, log.txt.
#   bash real/campaigns/s8cp.sh OUTDIR     (S8CP_QUICK=1: tiny shapes, a CPU dry run on gloo; the
#   torch_cp part then records that PyTorch's CP needs CUDA and writes no row)
# NVLink SHARP (multicast) stays off, as in the EP campaign (calibration/measurements/README.md).
set -u
OUT="${1:?usage: real/campaigns/s8cp.sh OUTDIR}/s8cp"
mkdir -p "$OUT/traces"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S8CP_QUICK:-0}" = "1" ] && QUICK=(--quick)
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
# the one-GPU part runs on the first GPU this campaign was given (CUDA_VISIBLE_DEVICES as the caller
# set it; GPU 0 where unset): never on a GPU outside the caller's set, where another campaign may run
ONE_GPU="${CUDA_VISIBLE_DEVICES:-0}"
ONE_GPU="${ONE_GPU%%,*}"
[ "${S8CP_QUICK:-0}" = "1" ] && NGPU=2   # the CPU dry run: two gloo ranks
{
  echo "s8cp campaign $(date -u +%FT%TZ), $NGPU GPU(s)"
  nvidia-smi topo -m > "$OUT/topo.txt" 2>&1 || echo "no nvidia-smi topo" > "$OUT/topo.txt"
  collect() {  # part dir, output name
    local dir=$1
    for f in "$dir"/*.csv; do [ -e "$f" ] && mv "$f" "$OUT/"; done
    [ -e "$dir/env.json" ] && mv "$dir/env.json" "$OUT/env_$2.json"
    rm -rf "$dir"
  }
  d="$OUT/part_chunks"; mkdir -p "$d"
  echo "one-GPU part on GPU $ONE_GPU; compute processes on the host's GPUs before it:"
  nvidia-smi --query-compute-apps=gpu_bus_id,pid,used_memory --format=csv 2>&1 || true
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 60 "$PY" -m real.bench --out "$d" --only tp_grouped,cp_chunks --budget-s 42 \
    ${QUICK[@]+"${QUICK[@]}"}
  echo "part cp_chunks exit $? at $(date -u +%FT%TZ)"
  collect "$d" chunks
  if [ "$NGPU" -ge 2 ]; then
    d="$OUT/part_torch_cp"; mkdir -p "$d"
    REAL_BENCH_TRACE_DIR="$OUT/traces" timeout -k 5 110 "$PY" -m torch.distributed.run --standalone \
      --nproc-per-node 2 -m real.bench --out "$d" --only torch_cp --budget-s 85 ${QUICK[@]+"${QUICK[@]}"}
    echo "part torch_cp exit $? at $(date -u +%FT%TZ)"
    collect "$d" torch_cp
    d="$OUT/part_tp_traces"; mkdir -p "$d"
    REAL_BENCH_TRACE_DIR="$OUT/traces" timeout -k 5 38 "$PY" -m torch.distributed.run --standalone \
      --nproc-per-node 2 -m real.bench --out "$d" --only tp_traces --budget-s 24 ${QUICK[@]+"${QUICK[@]}"}
    echo "part tp_traces exit $? at $(date -u +%FT%TZ)"
    collect "$d" tp_traces
  else
    echo "one GPU: the two-GPU parts (torch_cp, tp_traces) skipped"
  fi
  echo "s8cp done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

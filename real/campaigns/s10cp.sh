#!/usr/bin/env bash
# Issue 14, torchtitan's context-parallel rows (s10cp): how one rank's time grows with the CP degree
# at fixed per-rank work. Every torchtitan Llama 3.1 8B CP row holds 32K tokens a GPU (32K..256K at
# CP1..CP8), and a rank's attention calls have the same shapes at every CP degree; the published
# step per token grows 137 -> 540 -> 891 us from CP1->2->4->8 where the twin's doubles with the
# calls. This campaign runs the Llama-3.1-8B attention core (repeat_kv + SDPA, causal, 32 heads,
# 8 KV heads, head 128, BF16, forward + backward) with 32K positions a rank, `--only torch_cp_scaling`
# (real/bench/torch_cp.py), flash then cuDNN, rotate methods allgather then alltoall:
#   1. CP1, one process on the first GPU of the caller's set (the plain call torchtitan makes at CP1),
#      S = 32K (wall <= 30 s);
#   2. only where >= 2 GPUs exist: PyTorch's CP over 2 ranks under torchrun, S = 64K (wall <= 45 s);
#   3. only where >= 4 GPUs exist: PyTorch's CP over 4 ranks, S = 128K (wall <= 70 s).
# Each row: the slowest rank's CUDA-event time (p10/p50/p90), then two profiled repetitions: kernels
# by rank and phase (torch_cp_kernels.csv), per-rank timelines with NCCL not under compute
# (torch_cp_timeline.csv), Chrome traces of every case (traces/).
# Split: CP >= 4 held out (the CP4 prediction is the test), CP1 and CP2 fit.
# Each part under `timeout`; a part cut short keeps the rows already written. Writes
# OUTDIR/s10cp/{torch_cp,torch_cp_kernels,torch_cp_timeline}_cp{1,2,4}.csv, env_cp{1,2,4}.json,
# traces/, topo.txt, log.txt. Budget: <= 145 s on a 4-GPU host, <= 75 s on a 2-GPU host.
#   bash real/campaigns/s10cp.sh OUTDIR     (S10CP_QUICK=1: tiny shapes, a CPU dry run: CP1 runs,
#   the torchrun parts run on gloo ranks and record that PyTorch's CP needs CUDA)
# NVLink SHARP (multicast) stays off, as in the EP campaign (calibration/measurements/README.md).
#
# Since the eager records landed (calibration/measurements/h100x4/torch_cp_scaling/, 14:41 UTC), a
# plain run goes on to the next question, CP under torch.compile: it runs real/campaigns/s10cpc.sh
# (OUTDIR/s10cpc/, <= 150 s on a 4-GPU host). S10CP_EAGER=1 runs the eager parts above again.
set -u
if [ "${S10CP_EAGER:-0}" != "1" ]; then
  exec bash "$(dirname "$0")/s10cpc.sh" "${1:?usage: real/campaigns/s10cp.sh OUTDIR}"
fi
OUT="${1:?usage: real/campaigns/s10cp.sh OUTDIR}/s10cp"
mkdir -p "$OUT/traces"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S10CP_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S10CP_QUICK:-0}" = "1" ] && NGPU=${S10CP_QUICK_RANKS:-2}   # the CPU dry run: gloo ranks
{
  echo "s10cp campaign $(date -u +%FT%TZ), $NGPU GPU(s)"
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
  d="$OUT/part_cp1"; mkdir -p "$d"
  echo "CP1 on GPU $ONE_GPU; compute processes on the host's GPUs before it:"
  nvidia-smi --query-compute-apps=gpu_bus_id,pid,used_memory --format=csv 2>&1 || true
  CUDA_VISIBLE_DEVICES=$ONE_GPU REAL_BENCH_TRACE_DIR="$OUT/traces" timeout -k 5 30 "$PY" -m real.bench --out "$d" \
    --only torch_cp_scaling --budget-s 20 ${QUICK[@]+"${QUICK[@]}"}
  echo "part cp1 exit $? at $(date -u +%FT%TZ)"
  collect "$d" 1
  for W in 2 4; do
    if [ "$NGPU" -ge "$W" ]; then
      if [ "$W" = 2 ]; then LIMIT=45; BUDGET=28; else LIMIT=70; BUDGET=45; fi
      d="$OUT/part_cp$W"; mkdir -p "$d"
      REAL_BENCH_TRACE_DIR="$OUT/traces" timeout -k 5 "$LIMIT" "$PY" -m torch.distributed.run --standalone \
        --nproc-per-node "$W" -m real.bench --out "$d" --only torch_cp_scaling --budget-s "$BUDGET" \
        ${QUICK[@]+"${QUICK[@]}"}
      echo "part cp$W exit $? at $(date -u +%FT%TZ)"
      collect "$d" "$W"
    else
      echo "$NGPU GPU(s): the CP$W part skipped"
    fi
  done
  echo "s10cp done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

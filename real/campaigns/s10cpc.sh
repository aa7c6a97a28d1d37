#!/usr/bin/env bash
# Issue 14, torchtitan's CP rows under torch.compile (s10cp, second campaign). torchtitan 9dec370
# compiles every TransformerBlock with fullgraph=True, so the CP ring attention of the table's runs
# was traced into the compiled graph, where a functional collective is waited at issue
# (torch/distributed/_functional_collectives.py _maybe_wrap_tensor) and Inductor moves no wait in a
# training graph by default (reorder_for_compute_comm_overlap off; reorder_for_locality gated on
# inference). real/campaigns/s10cp.sh measured CP eager; this runs the same Llama-3.1-8B attention
# core at 32K positions a rank under torch.compile(fullgraph=True) inside PyTorch's context_parallel,
# flash, rotate method allgather (`REAL_BENCH_CP_COMPILE=1 --only torch_cp_scaling`):
#   1. only where >= 2 GPUs exist: CP2 under torchrun, S = 64K (wall <= 75 s, compile included);
#   2. only where >= 4 GPUs exist: CP4, S = 128K (wall <= 75 s).
# Each row as s10cp's (bench torch_cp_compiled): slowest rank's CUDA-event time, per-rank kernels and
# timelines (NCCL not under compute: the exposed collectives), Chrome traces. Compare with s10cp's
# eager rows of the same CP degree (calibration/measurements/h100x4/torch_cp_scaling/). Split: CP4
# held out, CP2 fit. Writes OUTDIR/s10cpc/{torch_cp,torch_cp_kernels,torch_cp_timeline}_compiled_cp{2,4}.csv,
# env_compiled_cp{2,4}.json, traces/, topo.txt, log.txt. Budget <= 150 s on a 4-GPU host.
#   bash real/campaigns/s10cpc.sh OUTDIR    (S10CP_QUICK=1: tiny shapes, a CPU dry run on gloo ranks,
#   where PyTorch's CP cannot run and the parts record why)
set -u
OUT="${1:?usage: real/campaigns/s10cpc.sh OUTDIR}/s10cpc"
mkdir -p "$OUT/traces"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1 REAL_BENCH_CP_COMPILE=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S10CP_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S10CP_QUICK:-0}" = "1" ] && NGPU=${S10CP_QUICK_RANKS:-2}   # the CPU dry run: gloo ranks
{
  echo "s10cpc campaign $(date -u +%FT%TZ), $NGPU GPU(s)"
  nvidia-smi topo -m > "$OUT/topo.txt" 2>&1 || echo "no nvidia-smi topo" > "$OUT/topo.txt"
  for W in 2 4; do
    if [ "$NGPU" -ge "$W" ]; then
      d="$OUT/part_cp$W"; mkdir -p "$d"
      REAL_BENCH_TRACE_DIR="$OUT/traces" timeout -k 5 75 "$PY" -m torch.distributed.run --standalone \
        --nproc-per-node "$W" -m real.bench --out "$d" --only torch_cp_scaling --budget-s 60 \
        ${QUICK[@]+"${QUICK[@]}"}
      echo "part compiled cp$W exit $? at $(date -u +%FT%TZ)"
      for f in "$d"/*.csv; do
        [ -e "$f" ] && mv "$f" "$OUT/$(basename "$f" .csv)_compiled_cp$W.csv"
      done
      [ -e "$d/env.json" ] && mv "$d/env.json" "$OUT/env_compiled_cp$W.json"
      rm -rf "$d"
    else
      echo "$NGPU GPU(s): the compiled CP$W part skipped"
    fi
  done
  echo "s10cpc done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

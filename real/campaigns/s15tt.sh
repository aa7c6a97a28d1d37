#!/usr/bin/env bash
# Issue 14, torchtitan's 8B CP rows (s15tt): does a rank's time per unit of attention work grow from
# CP4 to CP8 on one 8-GPU host? The published steps (Table 2: 32K tokens a GPU at every CP degree)
# grow 7.4 s per unit of CP from CP4 to CP8 where the twin's grow 5.4 s; our records stop at CP4
# (calibration/measurements/h100x4/torch_cp_scaling: compiled CP2 / CP4 flat per unit, the twin
# within 1.5%). Eight ranks all-gathering 4.3 GB of repeated K/V a pass and handing FP32 dK/dV on
# after every call, beside FA2, is the rung no record has. This runs s10cpc's case (the
# Llama-3.1-8B attention core, 32K positions a rank, torch.compile(fullgraph=True) inside PyTorch's
# context_parallel, flash, rotate method allgather: `REAL_BENCH_CP_COMPILE=1 --only
# torch_cp_scaling`) on one host at:
#   1. CP2, S = 64K (wall <= 40 s, compile included): the same host's baseline;
#   2. CP4, S = 128K (wall <= 45 s);
#   3. CP8, S = 256K (wall <= 60 s).
# Each row as s10cpc's: the slowest rank's CUDA-event time (p10/p50/p90), GPU name, SM clock, power,
# torch/CUDA/NCCL versions; per-rank kernels and timelines (NCCL not under compute); a Chrome trace
# per rank. A diagnostic of the twin's torch_allgather model at CP8 (held out, as CP4 was), not a fit.
# Needs 8 GPUs: on fewer it records why and exits 0 having run nothing (S15TT_QUICK=1, the CPU dry
# run, runs the parts its gloo ranks allow instead, where PyTorch's CP records that it needs CUDA).
# Writes OUTDIR/s15tt/{torch_cp,torch_cp_kernels,torch_cp_timeline}_compiled_cp{2,4,8}.csv,
# env_compiled_cp{2,4,8}.json, traces/, topo.txt, smi.txt, s15tt.log. Budget <= 150 s.
#   bash real/campaigns/s15tt.sh OUTDIR
# NVLink SHARP (multicast) stays off, as in the earlier CP campaigns.
set -u
OUT="${1:?usage: real/campaigns/s15tt.sh OUTDIR}/s15tt"
mkdir -p "$OUT/traces"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1 REAL_BENCH_CP_COMPILE=1
PY=${PYTHON:-${PY:-python3}}
QUICK=()
[ "${S15TT_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S15TT_QUICK:-0}" = "1" ] && NGPU=${S15TT_QUICK_RANKS:-2}   # the CPU dry run: gloo ranks
{
  echo "s15tt campaign $(date -u +%FT%TZ), $NGPU GPU(s)"
  if [ "${S15TT_QUICK:-0}" != "1" ] && [ "$NGPU" -lt 8 ]; then
    echo "$NGPU GPU(s): CP8 needs 8 on one host; nothing run"
    echo "s15tt done $(date -u +%FT%TZ)"
    exit 0
  fi
  nvidia-smi topo -m > "$OUT/topo.txt" 2>&1 || echo "no nvidia-smi topo" > "$OUT/topo.txt"
  nvidia-smi --query-gpu=index,name,power.limit,clocks.max.sm,driver_version --format=csv > "$OUT/smi.txt" 2>&1 \
    || echo "no nvidia-smi" > "$OUT/smi.txt"
  for W in 2 4 8; do
    if [ "$NGPU" -ge "$W" ]; then
      case $W in 2) LIMIT=40; BUDGET=25 ;; 4) LIMIT=45; BUDGET=30 ;; *) LIMIT=60; BUDGET=40 ;; esac
      d="$OUT/part_cp$W"; mkdir -p "$d"
      REAL_BENCH_TRACE_DIR="$OUT/traces" timeout -k 5 "$LIMIT" "$PY" -m torch.distributed.run --standalone \
        --nproc-per-node "$W" -m real.bench --out "$d" --only torch_cp_scaling --budget-s "$BUDGET" \
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
  echo "s15tt done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/s15tt.log"

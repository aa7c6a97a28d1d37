#!/usr/bin/env bash
# Issue 14, torchtitan's AsyncTP rows (s9tt): torch's micro-pipelined tensor parallelism measured
# beside the parts it is made of, to check the twin's plan.tp_overlap_kind 'torch_async_tp', and
# the GEMMs of torchtitan's separate linears, to check plan.unfused_linears.
#   1. one GPU (the first of CUDA_VISIBLE_DEVICES, else GPU 0), `--only tt_linears` (wall <= 45 s):
#      the forward, input-gradient and weight-gradient GEMMs of torchtitan's Llama 3.1 70B and 405B
#      linears on a TP8 rank (wq, wk, w1 separate; qkv and w1+w3 fused), 32K tokens, BF16 and
#      tensorwise FP8 (torch._scaled_mm as torchao's Float8Linear), into gemm.csv (bench
#      tt_linear, shape_tag tt_linear/<model>/<linear>/<phase>);
#   2. only where 2 GPUs exist, `--only async_tp` under torchrun (wall <= 75 s): per-GPU GEMMs of
#   torchtitan's Llama 3.1 70B and 405B TP8 slices (BF16, 16K and 8K tokens) as TP2 over the two
#   GPUs: the GEMM alone, the NCCL all-gather / reduce-scatter alone, the two in sequence,
#   torch.ops.symm_mem.fused_all_gather_matmul / fused_matmul_reduce_scatter, and the reduction
#   of the stacked partial sums the fused reduce-scatter ends with (real/bench/async_tp.py;
#   async_tp.csv). The 405B slices are held out. A fused op this torch cannot run writes a row
#   with status 'unavailable' and its error; the part keeps the rows already written when cut short.
# Writes OUTDIR/s9tt/{gemm.csv, env_tt_linears.json, async_tp.csv, env_async_tp.json, topo.txt, log.txt}.
#   bash real/campaigns/s9tt.sh OUTDIR     (S9TT_QUICK=1: tiny shapes, a CPU dry run on two gloo ranks)
# NVLink SHARP (multicast) stays off, as in the EP campaign (calibration/measurements/README.md).
set -u
OUT="${1:?usage: real/campaigns/s9tt.sh OUTDIR}/s9tt"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S9TT_QUICK:-0}" = "1" ] && QUICK=(--quick)
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
# the one-GPU part runs on the first GPU this campaign was given (CUDA_VISIBLE_DEVICES as the caller
# set it; GPU 0 where unset)
ONE_GPU="${CUDA_VISIBLE_DEVICES:-0}"
ONE_GPU="${ONE_GPU%%,*}"
[ "${S9TT_QUICK:-0}" = "1" ] && NGPU=2   # the CPU dry run: two gloo ranks
{
  echo "s9tt campaign $(date -u +%FT%TZ), $NGPU GPU(s)"
  nvidia-smi topo -m > "$OUT/topo.txt" 2>&1 || echo "no nvidia-smi topo" > "$OUT/topo.txt"
  d="$OUT/part_tt_linears"; mkdir -p "$d"
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 45 "$PY" -m real.bench --out "$d" --only tt_linears --budget-s 35 \
    ${QUICK[@]+"${QUICK[@]}"}
  echo "part tt_linears exit $? at $(date -u +%FT%TZ)"
  for f in "$d"/*.csv; do [ -e "$f" ] && mv "$f" "$OUT/"; done
  [ -e "$d/env.json" ] && mv "$d/env.json" "$OUT/env_tt_linears.json"
  rm -rf "$d"
  if [ "$NGPU" -ge 2 ]; then
    d="$OUT/part_async_tp"; mkdir -p "$d"
    timeout -k 5 75 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m real.bench --out "$d" \
      --only async_tp --budget-s 60 ${QUICK[@]+"${QUICK[@]}"}
    echo "part async_tp exit $? at $(date -u +%FT%TZ)"
    for f in "$d"/*.csv; do [ -e "$f" ] && mv "$f" "$OUT/"; done
    [ -e "$d/env.json" ] && mv "$d/env.json" "$OUT/env_async_tp.json"
    rm -rf "$d"
  else
    echo "one GPU: the two-GPU part (async_tp) skipped"
  fi
  echo "s9tt done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

#!/usr/bin/env bash
# Is real/serve's first-met batch size cost the cuBLAS(Lt) heuristics cache? (issue 15, branch s11srv;
# about 95 s on a 2-GPU host, 90 s on one GPU; worst case under the timeouts 145 s):
#   real/campaigns/s11srv.sh OUTDIR
# The serving twin charges an eager iteration whose flat size (prompt tokens + decode rows) the engine
# process never ran new_size_s (exact size) and new_bin_s (16-token bin), fitted on the load runs; under
# EP the cost fades in ways a flat size does not explain (held-out ep2lo r30-short: +0.3 ms for a size
# new to the rank, where the fit runs before it paid +2-3 ms), the largest term left in the EP2 misses.
# Each part runs twice: as is (cache 'default') and with CUBLASLT_HEURISTICS_CACHE_CAPACITY=0 (the
# heuristics cache off: every GEMM call looks its algorithm up). If the first-size cost is the cache's
# misses, the cache-off runs pay it on every iteration (seen sizes as slow as new ones).
# 1. shape (every machine): real/serve/shapeprobe.py, every weight of v3-slice-2l as F.linear and the
#    routed experts' grouped GEMM, first and repeat host time of the call at 48 distinct flat sizes
#    (timeout 30 s each; the two settings side by side on two GPUs where two exist);
# 2. solo (every machine): real/serve/hostprobe.py's one-GPU engine, 10 s, the last 8 s mixed (a short
#    prompt of 128-512 tokens joins every other decode iteration: new and repeated flat sizes)
#    (timeout 35 s each; side by side on two GPUs where two exist);
# 3. ep (only where two GPUs exist): the EP2 engine the same way, 12 s, the last 9 s mixed (timeout 40 s each).
# Writes OUTDIR/s11srv/<part>_<default|nocache>/*.csv, host.txt and log.txt; a part cut by its
# timeout keeps the rows written so far.
# CPU dry run: PYTHON=... S11_DEVICE=cpu S11_MODEL=tiny S11_FORCE_EP2=1 S11_SHORT=1 (about 100 s on 2 shared
# cores; the test suite runs S11_PARTS=shape of it, the hostprobe parts being s9srv's tested entry point)
set -u
OUT=${1:?usage: real/campaigns/s11srv.sh OUTDIR}
DIR="$OUT/s11srv"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
DEVICE=${S11_DEVICE:-auto}
PARTS=" ${S11_PARTS:-shape solo ep} "
MODEL=${S11_MODEL:-v3-slice-2l}
if [ -n "${S11_SHORT:-}" ]; then SP_S=1; SOLO_S=1; SOLO_MIXED=0.7; EP_S=1.5; EP_MIXED=1; NSIZES=3
else SP_S=15; SOLO_S=10; SOLO_MIXED=8; EP_S=12; EP_MIXED=9; NSIZES=48; fi
if [ "$MODEL" = tiny ]; then SHAPE="--rows 2 --context 16 --max-context 96 --page-size 4 --num-pages 256 --mixed-prompt 4-30"; MAXSZ=64
else SHAPE="--rows 8 --context 512 --mixed-prompt 128-512"; MAXSZ=2048; fi
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
GPU_A=$ONE_GPU
GPU_B=$(echo "${CUDA_VISIBLE_DEVICES:-0,1}" | cut -d, -f2)
TWO=0
if [ "$NGPU" -ge 2 ] || [ -n "${S11_FORCE_EP2:-}" ]; then TWO=1; fi
{
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== nvidia-smi topo -m"; nvidia-smi topo -m 2>/dev/null
} > "$DIR/host.txt" 2>&1

# one part's two settings: side by side on GPU_A (default) and GPU_B (cache off) where two GPUs exist
pair() {  # pair NAME TIMEOUT CMD...
  local name=$1 t=$2; shift 2
  mkdir -p "$DIR/${name}_default" "$DIR/${name}_nocache"
  if [ "$TWO" = 1 ] && [ "$NGPU" -ge 2 ]; then
    CUDA_VISIBLE_DEVICES=$GPU_A timeout -k 5 "$t" "$@" --out "$DIR/${name}_default" > "$DIR/${name}_default/log.txt" 2>&1 &
    local p1=$!
    CUDA_VISIBLE_DEVICES=$GPU_B CUBLASLT_HEURISTICS_CACHE_CAPACITY=0 timeout -k 5 "$t" "$@" --out "$DIR/${name}_nocache" \
      > "$DIR/${name}_nocache/log.txt" 2>&1 &
    local p2=$!
    wait $p1; echo "$name default exit $? at $(date -u +%FT%TZ)"
    wait $p2; echo "$name nocache exit $? at $(date -u +%FT%TZ)"
  else
    CUDA_VISIBLE_DEVICES=$GPU_A timeout -k 5 "$t" "$@" --out "$DIR/${name}_default" > "$DIR/${name}_default/log.txt" 2>&1
    echo "$name default exit $? at $(date -u +%FT%TZ)"
    CUDA_VISIBLE_DEVICES=$GPU_A CUBLASLT_HEURISTICS_CACHE_CAPACITY=0 timeout -k 5 "$t" "$@" --out "$DIR/${name}_nocache" \
      > "$DIR/${name}_nocache/log.txt" 2>&1
    echo "$name nocache exit $? at $(date -u +%FT%TZ)"
  fi
  tail -n 2 "$DIR/${name}_default/log.txt" "$DIR/${name}_nocache/log.txt"
}
{
  echo "s11srv start $(date -u +%FT%TZ), $NGPU GPU(s), CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}"
  nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,power.limit --format=csv 2>/dev/null || true
  [[ "$PARTS" == *" shape "* ]] && pair shape 30 "$PY" -m real.serve.shapeprobe --device "$DEVICE" --model "$MODEL" --sizes "$NSIZES" \
    --max-size "$MAXSZ" --seconds "$SP_S"
  [[ "$PARTS" == *" solo "* ]] && pair solo 35 "$PY" -m real.serve.hostprobe --mode solo --seconds "$SOLO_S" --mixed-s "$SOLO_MIXED" \
    --device "$DEVICE" --model "$MODEL" $SHAPE
  if [ "$TWO" = 1 ] && [[ "$PARTS" == *" ep "* ]]; then
    for setting in default nocache; do
      d="$DIR/ep_$setting"; mkdir -p "$d"
      if [ "$setting" = nocache ]; then export CUBLASLT_HEURISTICS_CACHE_CAPACITY=0; fi
      timeout -k 5 40 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m real.serve.hostprobe \
        --out "$d" --mode ep --seconds "$EP_S" --mixed-s "$EP_MIXED" --device "$DEVICE" --model "$MODEL" $SHAPE \
        > "$d/log.txt" 2>&1
      echo "ep $setting exit $? at $(date -u +%FT%TZ)"
      tail -n 2 "$d/log.txt"
    done
    unset CUBLASLT_HEURISTICS_CACHE_CAPACITY
  else
    echo "ep skipped: $NGPU GPU(s), parts:$PARTS"
  fi
  echo "s11srv end $(date -u +%FT%TZ)"
} 2>&1 | tee "$DIR/log.txt"

#!/usr/bin/env bash
# Session s31look (issue 15; docs/notes/s31look_rule.md, committed before this ran): set Q, fresh held-out load runs on
# one H200 that judge twin.serving.engine.ADOPT_LOOKUP_PER_SHAPE (calibration.serve_lookup: a new exact flat size pays
# one cuBLASLt heuristics look-up per size-dependent dense GEMM shape, fixed cost, no fade), then evidence (judges
# nothing). About 200 s (hard caps 7 x 60 s).
#   real/campaigns/s31look.sh OUTDIR
# Parts, each its own engine process on one GPU, in this order:
#   set:<plan>      real/serve plan gpu1-s31q-<short> (real/serve/plans.py S31Q_PLANS: Poisson 2.5/s, a closed loop of
#                   9, Poisson 3.5/s late in the process, prompts uniform 304-928, outputs 24-112, 5 s of load a run, the
#                   first run warmed to 288 flat tokens) for bench-small, v2-lite-slice, qwen3moe-mla-slice,
#                   qwen2moe-mla-slice, v3-slice-2l, WITHOUT --timing, with the host probe
#                   -> OUTDIR/s31look/<model>/serve_{load,requests,iterations}.csv + env.json (held out: judged);
#   nocache:<plan>  bench-small's plan again with CUBLASLT_HEURISTICS_CACHE_CAPACITY=0 (every GEMM looks its heuristics
#                   up) -> OUTDIR/s31look/nocache/bench-small/ (evidence: judges nothing);
#   probe:<plan>    python -m real.serve.firstmet on qwen3moe-mla-slice's plan (a model the s30serve probe never ran)
#                   -> OUTDIR/s31look/probe/qwen3moe-mla-slice/ (fitting records for a later session; judges nothing).
# One GPU (the first the caller gives; a larger host runs it on that GPU alone; judged blind: nothing else on the host).
# Also OUTDIR/s31look/host.txt (nproc, lscpu, nvidia-smi clocks, topology) and log.txt. Every row carries GPU name,
# clocks, power limit, driver, torch / CUDA / NCCL versions. Exits 0 doing nothing without a GPU.
# CPU dry run: S31LOOK_TINY=1 (the tiny model: the tiny-new plan as a set part and as a nocache part, the probe at a
# warm pass of 8).
set -u
OUT=${1:?usage: real/campaigns/s31look.sh OUTDIR}
DIR="$OUT/s31look"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
. "$(dirname "$0")/serve_parts.sh"
if [ "${S31LOOK_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PART_S=${S31LOOK_PART_S:-120}
  PARTS="set:tiny-new nocache:tiny-new probe:tiny-new"; PROBE_ARGS="--warm 8 --max-size 28 --sizes 4 --idle-s 0.01"
else
  DEVICE=auto; PART_S=60; PROBE_ARGS=""
  PARTS=""
  for short in bench v2lite qwen3moe qwen2moe v3s2l; do PARTS="$PARTS set:gpu1-s31q-$short"; done
  PARTS="${PARTS# } nocache:gpu1-s31q-bench probe:gpu1-s31q-qwen3moe"
fi
{
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== loadavg"; cat /proc/loadavg
  echo "== nvidia-smi"; nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,clocks.max.sm,power.limit,persistence_mode,driver_version --format=csv 2>/dev/null
  echo "== nvidia-smi -q -d CLOCK"; nvidia-smi -q -d CLOCK 2>/dev/null
  echo "== topology"; nvidia-smi topo -m 2>/dev/null
} > "$DIR/host.txt" 2>&1
serve_part() {   # KIND PLAN CAP_S
  local kind=$1 plan=$2 cap=$3 model
  model=$(serve_model "$plan")
  case $kind in
    probe)
      # shellcheck disable=SC2086
      CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve.firstmet --out "$DIR/probe/$model" \
        --plan "$plan" --device "$DEVICE" $PROBE_ARGS ;;
    nocache)
      CUBLASLT_HEURISTICS_CACHE_CAPACITY=0 CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve \
        --out "$DIR/nocache/$model" --plan "$plan" --device "$DEVICE" --budget-s $((cap - 6)) --host-probe ;;
    *)
      CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve --out "$DIR/$model" --plan "$plan" \
        --device "$DEVICE" --budget-s $((cap - 6)) --host-probe ;;
  esac
}
serve_campaign s31look "$DIR/log.txt" "$NGPU GPU(s), GPU $ONE_GPU, parts $PARTS" serve_parts "$PARTS"

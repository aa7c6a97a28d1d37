#!/usr/bin/env bash
# Session s30blas (issue 15; docs/notes/s30ep.md section 6; a diagnosis probe, fitting records only, judges nothing):
# what drifts in the EP2 engine's prompt steps over repeats of one stream: cuBLASLt's heuristics cache, the process
# warming up, or the host? Two GPUs (NVLink); about 100 s; each condition capped at 70 s (hard total <= 150 s).
#   real/campaigns/s30blas.sh OUTDIR
# Plan ep2-repeat (real/serve/plans.py, as s19srv): untimed warm-up, fit r4-long, fit r20-short (seed 22) four times
# back to back in one process, fit c4-short; --timing (every iteration's host / GPU split) and --host-probe (every run
# bracketed). Run in two fresh EP2 processes, one after the other:
#   default   as is;
#   nocache   CUBLASLT_HEURISTICS_CACHE_CAPACITY=0 (the cuBLASLt heuristics cache off: every call looks up).
# Read: a fall in the repeated sizes' host time over repeats 2-4 that is there in both = the process / host; one that
# vanishes (both levels high) with the cache off = the look-ups. The host probe per run says whether the host moved.
# Order is fixed (default first, as s19srv), so the second process also meets a host warmed by the first.
# Writes OUTDIR/s30blas/<cond>/serve_{load,requests,iterations}.csv + env.json, host.txt, s30blas.log.
# Exits 0 doing nothing with fewer than 2 GPUs. S30BLAS_CONDS picks conditions (e.g. "default nocache").
# CPU dry run: S30BLAS_TINY=1 (plan tiny-ep2-repeat on two gloo ranks; S30BLAS_TIMEOUT_SCALE scales the caps).
set -u
OUT=${1:?usage: real/campaigns/s30blas.sh OUTDIR}
DIR="$OUT/s30blas"
mkdir -p "$DIR"
PY=${PY:-${PYTHON:-python3}}
SCALE=${S30BLAS_TIMEOUT_SCALE:-1}
CONDS=${S30BLAS_CONDS:-default nocache}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
. "$(dirname "$0")/serve_parts.sh"
if [ "${S30BLAS_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PLAN=tiny-ep2-repeat
else
  DEVICE=auto; PLAN=ep2-repeat
fi
PART_S=$((70 * SCALE))
conditions() {   # each condition its own EP2 process, in turn
  local cond envset
  for cond in $CONDS; do
    mkdir -p "$DIR/$cond"
    case $cond in
      default) envset="" ;;
      nocache) envset="CUBLASLT_HEURISTICS_CACHE_CAPACITY=0" ;;
      lt) envset="TORCH_BLAS_PREFER_CUBLASLT=1" ;;
      *) echo "unknown condition $cond (allowed: default nocache lt)"; continue ;;
    esac
    echo "$cond: ${envset:-as is} at $(date -u +%FT%TZ)"
    # shellcheck disable=SC2086
    env $envset timeout -k 5 "$PART_S" "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m real.serve \
      --out "$DIR/$cond" --plan "$PLAN" --device "$DEVICE" --budget-s $((PART_S - 15)) --timing --host-probe
    echo "$cond exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
  done
}
serve_host "$DIR/host.txt" nproc lscpu cpufreq loadavg smi clock topology
SERVE_NEED_GPUS=2 serve_campaign s30blas "$DIR/s30blas.log" \
  "$NGPU GPU(s), plan $PLAN, conditions $CONDS, cap ${PART_S} s each" conditions

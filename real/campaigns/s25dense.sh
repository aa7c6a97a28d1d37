#!/usr/bin/env bash
# s25dense (issue 13): fresh dense BF16 GEMMs timed the curve's way, s24align3's way and held at the
# power limit, plus linear-layer triples and an eager SwiGLU MLP step held the same way
# (docs/notes/s25dense_rule.md, committed before this run).
#
# Why: the twin's dense BF16 curve is fitted on gemm.csv's CUDA-graph loops (>= 0.1 s a shape); the
# simulation profile (twin.costs.profile.load_profile) scales it by a sustained ratio taken against
# sustained.csv's burst row, which on the H100 ran 5.7% faster than the curve, so the simulated dense
# BF16 GEMM reads 5.6% slower than the 30 s hold it was measured from. The rule judges taking the ratio
# against the curve instead (twin.costs.profile.ADOPT_SUSTAINED_VS_CURVE) on shapes no record holds,
# held >= 3 s at the power limit; the burst and loop rows show the timing conventions side by side.
# One part: real.bench.dense_clock (8 GEMMs, 3 triples, 1 MLP step; each GEMM/triple: an idle pause,
# a burst, a loop, a 3 s hold in 0.5 s windows; the MLP step: a 3 s eager hold, then 2 profiled steps).
#
# Budget <= 90 s on one GPU (timeout 80 s; no case starts after 60 s of the bench; rows are written as
# they go, so a cut run keeps what it measured). One H100 (the rule's GPU); an H200 run is reported.
# Run it first on its machine or after other one-GPU parts alike (the holds set their own power state).
# No GPU: exits 0 having run nothing.
# Outputs OUTDIR/s25dense/: dense_clock.csv (GPU name, SM clock sampled while each row ran, power,
# temperature, driver, torch/CUDA versions in every row), env.json, gpu.txt, log.txt. The whole folder
# is held out.
#   bash real/campaigns/s25dense.sh OUTDIR
# Round 2 (S25DENSE_ROUND=2; the rule's "Round 2", report only): the 8 GEMMs again (burst, loop, hold) and two
# MLP steps whose kernels are profiled inside the hold (16 steps queued, the profiler started on a schedule
# that records 2 steps after 6 more) as well as after it; outputs under OUTDIR/s25dense2/, ~50 s.
#   (S25DENSE_QUICK=1: tiny shapes and holds, a CPU dry run; S25DENSE_QUICK_GPUS=0: as a host without a GPU)
set -u
ROUND=${S25DENSE_ROUND:-1}
NAME=s25dense
[ "$ROUND" = "2" ] && NAME=s25dense2
OUT="${1:?usage: real/campaigns/s25dense.sh OUTDIR}/$NAME"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
PY=${PYTHON:-python3}
QUICK=()
[ "${S25DENSE_QUICK:-0}" = "1" ] && QUICK=(--quick)
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
[ "${S25DENSE_QUICK:-0}" = "1" ] && NGPU=${S25DENSE_QUICK_GPUS:-1}   # the CPU dry run
{
  echo "$NAME campaign $(date -u +%FT%TZ), $NGPU GPU(s)"
  if [ "$NGPU" -lt 1 ]; then
    echo "no GPU: nothing to run"
    exit 0
  fi
  nvidia-smi --query-gpu=name,power.limit,clocks.sm,clocks.max.sm,temperature.gpu,driver_version --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 80 "$PY" -m real.bench.dense_clock --out "$OUT" --budget-s 60 \
    --round "$ROUND" ${QUICK[@]+"${QUICK[@]}"}
  echo "part dense_clock exit $? at $(date -u +%FT%TZ)"
  echo "$NAME done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"
exit 0

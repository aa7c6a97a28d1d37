# Sourced by real/campaigns/s22host.sh, s22host2.sh and s23hrate.sh (s33dedup: the three were one script but for their
# name and cases): one part, the cold process (the first Python process on the machine) of section host_steps
# (real/bench/host_steps.py), <= 70 s wall on one GPU (the first of CUDA_VISIBLE_DEVICES); no GPU: exits 0 having run
# nothing.
#   host_steps_cold NAME   with the caller's OUT (OUTDIR/NAME) and CASES; <NAME>_QUICK=1: the CPU dry run (the tiny
#                          model, 40 s), <NAME>_QUICK_GPUS: the GPUs the dry run reports (default 1)
# -> OUT/cold/ (real.bench's records), OUT/gpu.txt (nvidia-smi name, power limit, clocks; uptime; nproc), OUT/log.txt.

host_steps_cold() {
  local name=$1 quick quick_gpus wall_s
  quick="$(echo "$name" | tr '[:lower:]' '[:upper:]')_QUICK"; quick_gpus="${quick}_GPUS"
  mkdir -p "$OUT"
  export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1 REAL_BENCH_BACK_TO_BACK_STEPS=29
  PY=${PYTHON:-python3}
  QUICK=()
  wall_s=70
  if [ "${!quick:-0}" = "1" ]; then
    QUICK=(--quick)
    CASES="tiny:16:10:2:2"
    wall_s=40
    export REAL_BENCH_BACK_TO_BACK_STEPS=2
  fi
  . "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU: the GPUs the caller gave this campaign
  [ "${!quick:-0}" = "1" ] && NGPU=${!quick_gpus:-1}   # the CPU dry run
  {
    echo "$name campaign $(date -u +%FT%TZ), $NGPU GPU(s), cases $CASES"
    if [ "$NGPU" -lt 1 ]; then
      echo "no GPU: nothing to run"
      exit 0
    fi
    nvidia-smi --query-gpu=name,power.limit,clocks.max.sm,clocks.sm --format=csv > "$OUT/gpu.txt" 2>&1 || echo "no nvidia-smi" > "$OUT/gpu.txt"
    uptime >> "$OUT/gpu.txt" 2>&1
    nproc >> "$OUT/gpu.txt" 2>&1
    mkdir -p "$OUT/cold"
    CUDA_VISIBLE_DEVICES=$ONE_GPU REAL_BENCH_SERVE_CASES="$CASES" \
      timeout -k 5 "$wall_s" "$PY" -m real.bench --out "$OUT/cold" --only host_steps --budget-s $((wall_s - 12)) \
      ${QUICK[@]+"${QUICK[@]}"}
    echo "cold exit $? at $(date -u +%FT%TZ)"
    echo "$name done $(date -u +%FT%TZ)"
  } 2>&1 | tee "$OUT/log.txt"
}

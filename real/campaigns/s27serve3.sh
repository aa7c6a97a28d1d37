#!/usr/bin/env bash
# Session s27serve round 3 (issue 15; docs/notes/s27serve3_rule.md, committed before this ran): set L, fresh held-out
# load runs on one GPU that judge candidate V on the card it was fitted on (the per-operator floor of a CUDA-graph
# decode replay in the H200 table only), and an idle-gap probe of one decode-graph replay (fitting evidence for the
# low-load slowdown, never judged). About 150 s (hard caps 4 x 42 s + 2 x 50 s).
#   real/campaigns/s27serve3.sh OUTDIR
# Parts 1-4 (the judged set L): real/serve plans gpu1-s27l-{bench,v2lite,v3s1l,mixtral} (real/serve/plans.py
#   S27L_PLANS: Poisson 14/s and a closed loop of 5, prompts uniform 208-720, outputs 72-232), without per-iteration
#   timing (the engine's own figures) -> OUTDIR/s27serve3/<model>/serve_{load,requests,iterations}.csv + env.json.
# Parts 5-6 (evidence): python -m real.serve.idleprobe for bench-small and v3-slice-1l -> OUTDIR/s27serve3/idle/<model>/
#   idle_probe.csv (one graph replay after idle gaps of 0-5 ms, sleeping or spinning; NVML clocks, CPU MHz).
# Every load part: the s21srvnew engine, the host probe around every run. Also OUTDIR/s27serve3/host.txt (nproc, lscpu,
# nvidia-smi clocks, topology) and log.txt. Every row carries GPU name, clocks, torch / CUDA / NCCL versions. Exits 0
# doing nothing without a GPU.
# CPU dry run: S27SERVE3_TINY=1 (the tiny model's tiny-new plan into the set's folder; the probe writes its header).
set -u
OUT=${1:?usage: real/campaigns/s27serve3.sh OUTDIR}
DIR="$OUT/s27serve3"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
. "$(dirname "$0")/serve_parts.sh"
if [ "${S27SERVE3_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PARTS="set:tiny-new probe:bench-small"; PART_S=${S27SERVE3_PART_S:-120}; PROBE_S=60; REPS=2
else
  DEVICE=auto; PART_S=42; PROBE_S=50; REPS=80
  PARTS="set:gpu1-s27l-bench set:gpu1-s27l-v2lite set:gpu1-s27l-v3s1l set:gpu1-s27l-mixtral probe:bench-small probe:v3-slice-1l"
fi
serve_part() {   # KIND PLAN-or-MODEL CAP_S (a probe part names a model)
  local kind=$1 what=$2 model
  if [ "$kind" = set ]; then
    model=$(serve_model "$what")
    CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$PART_S" "$PY" -m real.serve --out "$DIR/$model" --plan "$what" \
      --device "$DEVICE" --budget-s $((PART_S - 6)) --host-probe
  else
    CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$PROBE_S" "$PY" -m real.serve.idleprobe --model "$what" \
      --out "$DIR/idle/$what" --device "$DEVICE" --reps "$REPS"
  fi
}
serve_host "$DIR/host.txt" nproc lscpu loadavg smi-nodriver clock performance topology governor cpuidle
serve_campaign s27serve3 "$DIR/log.txt" "$NGPU GPU(s), GPU $ONE_GPU, parts $PARTS" serve_parts "$PARTS"

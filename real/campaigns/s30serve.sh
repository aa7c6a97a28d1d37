#!/usr/bin/env bash
# Session s30serve (issue 15; docs/notes/s30serve_rule.md, committed before this ran): a first-met probe of the engine
# process out of an empty queue (fitting records) and set P, fresh held-out load runs on one H200, that judge
# twin.serving.engine.ADOPT_PROBED_FIRST_MET (calibration.serve_first_met). About 180 s (hard caps 8 x 60 s).
#   real/campaigns/s30serve.sh OUTDIR
# Per model of set P (bench-small, v2-lite-slice, v3-slice-1l, mixtral-mla-slice), two processes:
#   probe:<plan>  python -m real.serve.firstmet --plan <plan>: the plan's warm-up and warm pass, then 32 fresh sizes
#                 above the pass, each its first step, a repeat and a met size's step, after a 200 ms sleep or right
#                 after a short prompt step, 3 more under torch.profiler -> OUTDIR/s30serve/probe/<model>/
#                 {firstmet_steps.csv, profile.txt} (fitting records: the candidate's constants);
#   set:<plan>    real/serve plan gpu1-s30p-<short> (real/serve/plans.py S30P_PLANS: Poisson 2/s and 4/s, a closed loop of
#                 7, prompts uniform 288-896, outputs 32-128, 5 s of load, the first run warmed to 272 flat tokens),
#                 WITHOUT --timing, with the host probe -> OUTDIR/s30serve/<model>/serve_{load,requests,iterations}.csv
#                 + env.json (held out: judged).
# One GPU (the first the caller gives; a larger host runs it on that GPU alone; judged blind: nothing else on the host).
# Also OUTDIR/s30serve/host.txt (nproc, lscpu, nvidia-smi clocks, topology) and log.txt. Every row carries GPU name,
# clocks, power limit, driver, torch / CUDA / NCCL versions. Exits 0 doing nothing without a GPU.
# CPU dry run: S30SERVE_TINY=1 (the tiny model: the probe at a warm pass of 8 and the tiny-new plan once).
set -u
OUT=${1:?usage: real/campaigns/s30serve.sh OUTDIR}
DIR="$OUT/s30serve"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
. "$(dirname "$0")/serve_parts.sh"
if [ "${S30SERVE_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PART_S=${S30SERVE_PART_S:-120}
  PARTS="probe:tiny-new set:tiny-new"; PROBE_ARGS="--warm 8 --max-size 28 --sizes 4 --idle-s 0.01"
else
  DEVICE=auto; PART_S=60; PROBE_ARGS=""
  PARTS=""
  for short in bench v2lite v3s1l mixtral; do PARTS="$PARTS probe:gpu1-s30p-$short set:gpu1-s30p-$short"; done
  PARTS=${PARTS# }
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
  if [ "$kind" = probe ]; then
    # shellcheck disable=SC2086
    CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve.firstmet --out "$DIR/probe/$model" \
      --plan "$plan" --device "$DEVICE" $PROBE_ARGS
  else
    CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve --out "$DIR/$model" --plan "$plan" \
      --device "$DEVICE" --budget-s $((cap - 6)) --host-probe
  fi
}
serve_campaign s30serve "$DIR/log.txt" "$NGPU GPU(s), GPU $ONE_GPU, parts $PARTS" serve_parts "$PARTS"

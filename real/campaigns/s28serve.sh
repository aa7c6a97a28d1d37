#!/usr/bin/env bash
# Session s28serve (issue 15; docs/notes/s28serve_rule.md, committed before this ran): set M, fresh held-out load runs
# on one GPU that judge round 3's candidate V-H200 again (calibration.serve_floor_rejudge: the per-operator floor of a
# CUDA-graph decode replay in the H200 table), and a --timing repeat of two of its plans (evidence: what real/serve's
# per-iteration instrument costs the load figures). About 180 s (hard caps 6 x 45 s).
#   real/campaigns/s28serve.sh OUTDIR
# Parts set:* (judged): real/serve plans gpu1-s28m-{bench,v2lite,v3s1l,mixtral} (real/serve/plans.py S28M_PLANS:
#   Poisson 9/s and a closed loop of 3, prompts uniform 176-592, outputs 56-216, 3.5 s of load), WITHOUT --timing (the
#   engine's own figures) -> OUTDIR/s28serve/<model>/serve_{load,requests,iterations}.csv + env.json.
# Parts timing:* (evidence, never judged): bench-small's and v2-lite-slice's plans again WITH --timing (each right
#   after its untimed twin) -> OUTDIR/s28serve/timing/<model>/...
# Every part: the s21srvnew engine, the host probe around every run, one GPU (the first the caller gives; a larger host
# runs it on that GPU alone). Also OUTDIR/s28serve/host.txt (nproc, lscpu, nvidia-smi clocks, topology) and log.txt.
# Every row carries GPU name, clocks, torch / CUDA / NCCL versions. Exits 0 doing nothing without a GPU.
# CPU dry run: S28SERVE_TINY=1 (the tiny model's tiny-new plan once into the set's folder and once into timing/).
set -u
OUT=${1:?usage: real/campaigns/s28serve.sh OUTDIR}
DIR="$OUT/s28serve"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
. "$(dirname "$0")/serve_parts.sh"
if [ "${S28SERVE_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PARTS="set:tiny-new timing:tiny-new"; PART_S=${S28SERVE_PART_S:-120}
else
  DEVICE=auto; PART_S=45
  PARTS="set:gpu1-s28m-bench timing:gpu1-s28m-bench set:gpu1-s28m-v2lite timing:gpu1-s28m-v2lite"
  PARTS="$PARTS set:gpu1-s28m-v3s1l set:gpu1-s28m-mixtral"
fi
serve_part() {   # KIND PLAN CAP_S
  local kind=$1 plan=$2 cap=$3 model dest extra
  model=$(serve_model "$plan")
  if [ "$kind" = timing ]; then dest="$DIR/timing/$model"; extra="--timing"; else dest="$DIR/$model"; extra=""; fi
  # shellcheck disable=SC2086
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve --out "$dest" --plan "$plan" \
    --device "$DEVICE" --budget-s $((cap - 6)) --host-probe $extra
}
serve_host "$DIR/host.txt" nproc lscpu loadavg smi-nodriver clock topology
serve_campaign s28serve "$DIR/log.txt" "$NGPU GPU(s), GPU $ONE_GPU, parts $PARTS" serve_parts "$PARTS"

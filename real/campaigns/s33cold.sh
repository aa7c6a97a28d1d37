#!/usr/bin/env bash
# Session s33cold (issue 15; docs/notes/s33cold_rule.md, committed before this ran): set R, fresh held-out load runs on
# one H200 that judge twin.serving.engine.ADOPT_COLD_STEPS (the per-step cold charge: a look-up per flat size first met
# in the process's life plus each GEMM kernel first launched, on the kernel maps), THEN the kernel map of any model set
# R uses that has no committed map (fitting inputs; none today: every set R model was mapped by s32kern). About 200 s
# (caps: sets 6 x 60 s within 280 s, maps 110 s).
#   real/campaigns/s33cold.sh OUTDIR
# Parts, in this order:
#   set:gpu1-s33r-<short>  each its own engine process on one GPU, one after the other and alone (judged blind):
#        real/serve/plans.py S33R_PLANS (a warm pass of 352 flat tokens, prompts uniform 368-960, outputs 24-88, 4 s of
#        load a run, four runs a process: "repeat" sessions Poisson 2.6/s first, a closed loop of 17, Poisson 3.4/s, the
#        first stream again; "loop first" sessions a closed loop of 15 first, Poisson 2.6/s, both again) for
#        v2-lite-slice, qwen2moe-mla-slice, v3-slice-1l, qwen3moe-mla-slice, mixtral-mla-slice, v3-slice-2l, WITHOUT
#        --timing, with the host probe (as sets Q, K and N ran)
#        -> OUTDIR/s33cold/set/<model>/serve_{load,requests,iterations}.csv + env.json (held out: judged)
#   kmap:<model>  after every set part has ended, only for a model without calibration/measurements/h200/s32kern/kmap/
#        <model>/kernelmap.csv(.xz): real/serve/kernelmap.py (M = 1..2048), one process a model
#        -> OUTDIR/s33cold/kmap/<model>/kernelmap.csv (fitting inputs)
# Also host.txt (nproc, lscpu, nvidia-smi clocks, topology) and s33cold.log. Every row carries GPU name, clocks, power
# limit, driver, torch / CUDA / NCCL versions. One GPU (the first the caller gives; nothing else on the host while
# the set parts run). Exits 0 doing nothing without a GPU.
# CPU dry run: S33COLD_TINY=1 (the tiny-new plan as one set part, then the tiny model's map to 48 sizes: it has none);
# S33COLD_TIMEOUT_SCALE scales the caps.
set -u
OUT=${1:?usage: real/campaigns/s33cold.sh OUTDIR}
DIR="$OUT/s33cold"
mkdir -p "$DIR/set" "$DIR/kmap"
PY=${PY:-${PYTHON:-python3}}
SCALE=${S33COLD_TIMEOUT_SCALE:-1}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
KMAPS=calibration/measurements/h200/s32kern/kmap
if [ "${S33COLD_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PART_S=$((60 * SCALE)); TOTAL_S=$((200 * SCALE)); MAP_S=$((60 * SCALE)); PARTS="set:tiny-new"
  MODELS="tiny"; MAX_SIZE=48
else
  DEVICE=auto; PART_S=$((60 * SCALE)); TOTAL_S=$((280 * SCALE)); MAP_S=$((110 * SCALE)); PARTS=""
  for short in v2lite qwen2moe v3s1l qwen3moe mixtral v3s2l; do PARTS="$PARTS set:gpu1-s33r-$short"; done
  PARTS="${PARTS# }"
  MODELS=$("$PY" -c "from real.serve.plans import S33R_MODELS as m; print(' '.join(m))"); MAX_SIZE=2048
fi
MAPS=""
for model in $MODELS; do
  if [ ! -e "$KMAPS/$model/kernelmap.csv" ] && [ ! -e "$KMAPS/$model/kernelmap.csv.xz" ]; then MAPS="$MAPS $model"; fi
done
MAPS="${MAPS# }"
{
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== loadavg"; cat /proc/loadavg
  echo "== nvidia-smi"; nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,clocks.max.sm,power.limit,persistence_mode,driver_version --format=csv 2>/dev/null
  echo "== nvidia-smi -q -d CLOCK"; nvidia-smi -q -d CLOCK 2>/dev/null
  echo "== topology"; nvidia-smi topo -m 2>/dev/null
} > "$DIR/host.txt" 2>&1
SECONDS=0
{
  echo "s33cold start $(date -u +%FT%TZ), $NGPU GPU(s), GPU $ONE_GPU, parts $PARTS, maps ${MAPS:-none}"
  if [ "$NGPU" -ge 1 ] || [ "$DEVICE" = cpu ]; then
    for part in $PARTS; do
      plan=${part#*:}
      left=$((TOTAL_S - SECONDS))
      if [ "$left" -lt 20 ]; then echo "set $plan skipped: ${SECONDS} s of ${TOTAL_S} spent"; continue; fi
      cap=$(( left < PART_S ? left : PART_S ))
      model=$("$PY" -c "from real.serve.plans import PLANS; print(PLANS['$plan'].model)")
      CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$cap" "$PY" -m real.serve --out "$DIR/set/$model" --plan "$plan" \
        --device "$DEVICE" --budget-s $((cap - 6)) --host-probe
      echo "set $plan exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
    done
    for model in $MAPS; do
      CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$MAP_S" "$PY" -m real.serve.kernelmap --out "$DIR/kmap/$model" \
        --device "$DEVICE" --model "$model" --max-size "$MAX_SIZE" --seconds $((MAP_S - 25)) \
        > "$DIR/kmap/$model.log" 2>&1
      echo "kmap $model exit $? at $(date -u +%FT%TZ)"
    done
    echo "kmaps done (${SECONDS} s)"
  else
    echo "skipped: no GPU"
  fi
  echo "s33cold end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | grep -v '^USDT:' | tee "$DIR/s33cold.log"

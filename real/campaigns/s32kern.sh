#!/usr/bin/env bash
# Session s32kern (issue 15; docs/notes/s32kern_rule.md, committed before this ran): set N, fresh held-out load runs on
# one H200 that judge twin.serving.engine.ADOPT_COLD_KERNELS (a first-used GEMM kernel's host cost, counted per kernel
# on each model's kernel map), THEN the kernel maps (fitting inputs). About 200 s (caps: sets 4 x 60 s within 250 s,
# maps two waves of 110 s).
#   real/campaigns/s32kern.sh OUTDIR
# Parts, in this order:
#   set:gpu1-s32n-<short>  each its own engine process on one GPU, one after the other and alone (judged blind):
#        real/serve/plans.py S32N_PLANS (Poisson 2.4/s first, warmed to 336 flat tokens, a closed loop of 13, Poisson
#        3.25/s late, prompts uniform 352-976, outputs 28-96, 5 s of load a run) for qwen2moe-mla-slice,
#        mixtral-mla-slice, v3-slice-1l, v3-slice-2l, WITHOUT --timing, with the host probe (as sets Q and K ran)
#        -> OUTDIR/s32kern/set/<model>/serve_{load,requests,iterations}.csv + env.json (held out: judged)
#   kmap:<model>  after every set part has ended: real/serve/kernelmap.py (every distinct 2-D weight as F.linear at
#        M = 1..2048 under torch.profiler, each call's kernel names), one process a model, four at a time (a kernel's
#        choice does not depend on what else runs), for S32KERN_MAP_MODELS (set N's, K's and Q's models)
#        -> OUTDIR/s32kern/kmap/<model>/kernelmap.csv (fitting inputs)
# Also host.txt (nproc, lscpu, nvidia-smi clocks, topology) and s32kern.log. Every row carries GPU name, clocks, power
# limit, driver, torch / CUDA / NCCL versions. One GPU (the first the caller gives; nothing else on the host while
# the set parts run). Exits 0 doing nothing without a GPU.
# CPU dry run: S32KERN_TINY=1 (the tiny-new plan as one set part, the tiny model's map to 48 sizes);
# S32KERN_TIMEOUT_SCALE scales the caps.
set -u
OUT=${1:?usage: real/campaigns/s32kern.sh OUTDIR}
DIR="$OUT/s32kern"
mkdir -p "$DIR/set" "$DIR/kmap"
PY=${PY:-${PYTHON:-python3}}
SCALE=${S32KERN_TIMEOUT_SCALE:-1}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
. "$(dirname "$0")/serve_parts.sh"
if [ "${S32KERN_TINY:-0}" = 1 ]; then
  DEVICE=cpu; PART_S=$((60 * SCALE)); TOTAL_S=$((200 * SCALE)); MAP_S=$((60 * SCALE)); PARTS="set:tiny-new"
  MAPS="tiny"; MAX_SIZE=48
else
  DEVICE=auto; PART_S=$((60 * SCALE)); TOTAL_S=$((250 * SCALE)); MAP_S=$((110 * SCALE)); PARTS=""
  for short in qwen2moe mixtral v3s1l v3s2l; do PARTS="$PARTS set:gpu1-s32n-$short"; done
  PARTS="${PARTS# }"
  MAPS=$("$PY" -c "from real.serve.plans import S32KERN_MAP_MODELS as m; print(' '.join(m))"); MAX_SIZE=2048
fi
serve_part() {   # KIND PLAN CAP_S
  local model
  model=$(serve_model "$2")
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$3" "$PY" -m real.serve --out "$DIR/set/$model" --plan "$2" \
    --device "$DEVICE" --budget-s $(($3 - 6)) --host-probe
}
parts_and_maps() {   # the set parts in turn, then the kernel maps four at a time
  local n=0 model
  serve_parts "$PARTS"
  for model in $MAPS; do
    (CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$MAP_S" "$PY" -m real.serve.kernelmap --out "$DIR/kmap/$model" \
       --device "$DEVICE" --model "$model" --max-size "$MAX_SIZE" --seconds $((MAP_S - 25)) \
       > "$DIR/kmap/$model.log" 2>&1
     echo "kmap $model exit $? at $(date -u +%FT%TZ)") &
    n=$((n + 1))
    if [ $((n % 4)) = 0 ]; then wait; fi
  done
  wait
  echo "kmaps done (${SECONDS} s)"
}
serve_host "$DIR/host.txt"
serve_campaign s32kern "$DIR/s32kern.log" "$NGPU GPU(s), GPU $ONE_GPU, parts $PARTS, maps $MAPS" parts_and_maps

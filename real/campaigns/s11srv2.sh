#!/usr/bin/env bash
# Is real/serve's fading first-bin cost CUDA's lazy module loading? (issue 15, branch s11srv2; about
# 75-95 s on a 2-GPU host, 60-80 s on one GPU; every part's timeout is cut to what is left of a 100 s budget):
#   real/campaigns/s11srv2.sh OUTDIR
# s11srv (h100x2/s11srv) found an exact new batch size's cost to be cuBLASLt's heuristics cache, but a new
# 16-token bin's +8-11 ms stays with the cache off and fades as the process meets sizes (12.1 -> 5.5 -> 3.4
# ms by thirds; the attention down-projections' first call 1.75-1.91 ms): kernels first used. Torch runs
# CUDA with CUDA_MODULE_LOADING=LAZY (a kernel's module is loaded on the kernel's first launch); EAGER
# loads every module when the context is made. Each part runs with LAZY and with EAGER, the rest as
# s11srv (same 48 shapeprobe sizes, same seed, same mixed prompts): if the first-call excess is lazy
# loading, the EAGER first calls cost what repeats cost and EAGER's mixed-phase prompt iterations do not
# fade (their first third as fast as their last).
# 1. shape (every machine): real/serve/shapeprobe.py, 48 sizes (timeout 25 s each; LAZY and EAGER side
#    by side on two GPUs where two exist);
# 2. solo (every machine): real/serve/hostprobe.py's one-GPU engine, 9 s, the last 7 s mixed (a short
#    prompt of 128-512 tokens joins every other decode iteration) (timeout 30 s each; side by side on two GPUs);
# 3. ep (only where two GPUs exist): the EP2 engine, 10 s, the last 8 s mixed, EAGER then LAZY (timeout
#    35 s each, cut to the budget left).
# Writes OUTDIR/s11srv2/<part>_<lazy|eager>/*.csv, host.txt and log.txt; a part cut by its timeout
# keeps the rows written so far.
# CPU dry run: PYTHON=... SRV2_DEVICE=cpu SRV2_MODEL=tiny SRV2_FORCE_EP2=1 SRV2_SHORT=1 (the test suite
# runs SRV2_PARTS=shape of it and the solo part; the ep part is s9srv's tested hostprobe under torchrun)
set -u
OUT=${1:?usage: real/campaigns/s11srv2.sh OUTDIR}
DIR="$OUT/s11srv2"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
DEVICE=${SRV2_DEVICE:-auto}
PARTS=" ${SRV2_PARTS:-shape solo ep} "
MODEL=${SRV2_MODEL:-v3-slice-2l}
BUDGET_S=${SRV2_BUDGET_S:-100}
if [ -n "${SRV2_SHORT:-}" ]; then SP_S=1; SOLO_S=1; SOLO_MIXED=0.7; EP_S=1.5; EP_MIXED=1; NSIZES=3
else SP_S=15; SOLO_S=9; SOLO_MIXED=7; EP_S=10; EP_MIXED=8; NSIZES=48; fi
if [ "$MODEL" = tiny ]; then SHAPE="--rows 2 --context 16 --max-context 96 --page-size 4 --num-pages 256 --mixed-prompt 4-30"; MAXSZ=64
else SHAPE="--rows 8 --context 512 --mixed-prompt 128-512"; MAXSZ=2048; fi
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
GPU_A=$ONE_GPU
GPU_B=$(echo "${CUDA_VISIBLE_DEVICES:-0,1}" | cut -d, -f2)
TWO=0
if [ "$NGPU" -ge 2 ] || [ -n "${SRV2_FORCE_EP2:-}" ]; then TWO=1; fi
{
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== nvidia-smi topo -m"; nvidia-smi topo -m 2>/dev/null
} > "$DIR/host.txt" 2>&1

SECONDS=0
# a part's timeout: its own, cut to what is left of the campaign's budget (at least 5 s)
left() { local t=$1 rest=$((BUDGET_S - SECONDS - 2)); [ "$rest" -lt "$t" ] && t=$rest; [ "$t" -lt 5 ] && t=5; echo "$t"; }

# one part's two settings: side by side on GPU_A (LAZY) and GPU_B (EAGER) where two GPUs exist
pair() {  # pair NAME TIMEOUT CMD...
  local name=$1 t; t=$(left "$2"); shift 2
  mkdir -p "$DIR/${name}_lazy" "$DIR/${name}_eager"
  if [ "$NGPU" -ge 2 ]; then
    CUDA_VISIBLE_DEVICES=$GPU_A CUDA_MODULE_LOADING=LAZY timeout -k 5 "$t" "$@" --out "$DIR/${name}_lazy" \
      > "$DIR/${name}_lazy/log.txt" 2>&1 &
    local p1=$!
    CUDA_VISIBLE_DEVICES=$GPU_B CUDA_MODULE_LOADING=EAGER timeout -k 5 "$t" "$@" --out "$DIR/${name}_eager" \
      > "$DIR/${name}_eager/log.txt" 2>&1 &
    local p2=$!
    wait $p1; echo "$name lazy exit $? at $(date -u +%FT%TZ)"
    wait $p2; echo "$name eager exit $? at $(date -u +%FT%TZ)"
  else
    CUDA_VISIBLE_DEVICES=$GPU_A CUDA_MODULE_LOADING=LAZY timeout -k 5 "$t" "$@" --out "$DIR/${name}_lazy" \
      > "$DIR/${name}_lazy/log.txt" 2>&1
    echo "$name lazy exit $? at $(date -u +%FT%TZ)"
    t=$(left "$t")
    CUDA_VISIBLE_DEVICES=$GPU_A CUDA_MODULE_LOADING=EAGER timeout -k 5 "$t" "$@" --out "$DIR/${name}_eager" \
      > "$DIR/${name}_eager/log.txt" 2>&1
    echo "$name eager exit $? at $(date -u +%FT%TZ)"
  fi
  tail -n 1 "$DIR/${name}_lazy/log.txt" "$DIR/${name}_eager/log.txt"
}
{
  echo "s11srv2 start $(date -u +%FT%TZ), $NGPU GPU(s), CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}, budget ${BUDGET_S} s"
  nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,power.limit --format=csv 2>/dev/null || true
  [[ "$PARTS" == *" shape "* ]] && pair shape 25 "$PY" -m real.serve.shapeprobe --device "$DEVICE" --model "$MODEL" \
    --sizes "$NSIZES" --max-size "$MAXSZ" --seconds "$SP_S"
  [[ "$PARTS" == *" solo "* ]] && pair solo 30 "$PY" -m real.serve.hostprobe --mode solo --seconds "$SOLO_S" \
    --mixed-s "$SOLO_MIXED" --device "$DEVICE" --model "$MODEL" $SHAPE
  if [ "$TWO" = 1 ] && [[ "$PARTS" == *" ep "* ]]; then
    for setting in eager lazy; do   # EAGER first: LAZY EP2 was measured before (h100x2/s11srv ep_default)
      d="$DIR/ep_$setting"; mkdir -p "$d"
      loading=LAZY; [ "$setting" = eager ] && loading=EAGER
      t=$(left 35)
      CUDA_MODULE_LOADING=$loading timeout -k 5 "$t" "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 \
        -m real.serve.hostprobe --out "$d" --mode ep --seconds "$EP_S" --mixed-s "$EP_MIXED" --device "$DEVICE" \
        --model "$MODEL" $SHAPE > "$d/log.txt" 2>&1
      echo "ep $setting exit $? at $(date -u +%FT%TZ) (timeout $t s)"
      tail -n 2 "$d/log.txt"
    done
  else
    echo "ep skipped: $NGPU GPU(s), parts:$PARTS"
  fi
  echo "s11srv2 end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | tee "$DIR/log.txt"

#!/usr/bin/env bash
# Which kernels does each weight launch at each flat size M? (issue 15, branch s16srv; about 40-90 s on one
# GPU, hard cap 150 s):
#   real/campaigns/s16srv2.sh OUTDIR
# Why: the s16srv sweeps (real/campaigns/s16srv.sh, h100/s16srv) found a first call's ~2.2-2.9 ms excess at
# exactly 334 (weight, M) calls of v3-slice-2l's 2-D weights over M = 1..2048 in every order (ascending,
# descending, shuffled), while each weight's own count differs by order (head 44 / 20 / 24): a one-off cost
# per GPU kernel the process launches for the first time, whichever weight launches it, beside ~150-250 us
# of cuBLASLt heuristics per new M. What the twin would need to carry it (instead of 16-token bins): which
# kernels each weight runs at each M. One part:
#   kmap  real/serve/kernelmap.py: every 2-D weight as F.linear at M = 1..2048 under torch.profiler (chunks of
#         64 sizes), each call's kernel names  -> OUTDIR/s16srv2/kmap/kernelmap.csv  (timeout 140 s; no chunk
#         starts after 110 s, rows written as they come)
# Every row carries the GPU name, clocks, torch / CUDA / NCCL versions; host.txt the CPU (lscpu).
# Exits 0 doing nothing without a GPU unless S16SRV2_DEVICE=cpu (the CPU dry run).
# CPU dry run: PYTHON=... S16SRV2_DEVICE=cpu S16SRV2_MODEL=tiny S16SRV2_SHORT=1 (tests/real/test_real_campaign_s16srv2.py)
set -u
OUT=${1:?usage: real/campaigns/s16srv2.sh OUTDIR}
DIR="$OUT/s16srv2"
PY=${PYTHON:-python3}
DEVICE=${S16SRV2_DEVICE:-auto}
MODEL=${S16SRV2_MODEL:-v3-slice-2l}
if [ -n "${S16SRV2_SHORT:-}" ]; then MAXSZ=12; CHUNK=4; KM_S=45; T=60   # KM_S: a cap, not a pace (a loaded CI host must still reach size 12)
else MAXSZ=2048; CHUNK=64; KM_S=110; T=140; fi
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
if [ "$NGPU" -lt 1 ] && [ "$DEVICE" != cpu ]; then echo "s16srv2: no GPU, nothing run"; exit 0; fi
mkdir -p "$DIR/kmap"
{ echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null; } > "$DIR/host.txt" 2>&1
SECONDS=0
{
  echo "s16srv2 start $(date -u +%FT%TZ), $NGPU GPU(s), GPU $ONE_GPU"
  nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,power.limit --format=csv 2>/dev/null || true
  CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$T" "$PY" -m real.serve.kernelmap --out "$DIR/kmap" --device "$DEVICE" \
    --model "$MODEL" --max-size "$MAXSZ" --chunk "$CHUNK" --seconds "$KM_S" > "$DIR/kmap/log.txt" 2>&1
  echo "kmap exit $? at $(date -u +%FT%TZ) (timeout $T s)"
  grep -v "^USDT" "$DIR/kmap/log.txt" | tail -n 2
  echo "s16srv2 end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | tee "$DIR/log.txt"

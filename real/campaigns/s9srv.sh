#!/usr/bin/env bash
# Where real/serve's EP2 decode time goes, and are its slow phases the host? (issue 15, branch s9srv;
# about 110 s on a 2-GPU host, 40 s on one GPU):
#   real/campaigns/s9srv.sh OUTDIR
# real/serve/hostprobe.py runs the serving engine eagerly at one decode shape (8 requests a rank,
# 512-token prompts, long outputs) and records per iteration: a fixed pure-Python workload's time
# (the host CPU's speed), the host launch time before / inside / after the MoE dispatch (inside: the
# all-to-all of counts and the host's wait for them, the ranks' one synchronisation), the control
# group's gloo exchange, /proc/stat steal and busy jiffies of the VM; then profiles 4 iterations for
# the kernels and runtime calls of one. The last third of each part is mixed: every other iteration
# one short prompt (128-512 tokens) joins a rank's decode rows (do prompt-carrying iterations start
# slow in a fresh process and speed up as the caching allocator grows, as the EP2 load runs' do?).
# 1. solo (every machine): each GPU its own one-GPU engine (all experts local, no communication), the
#    processes side by side (two where two GPUs exist), 15 s each (timeout 45 s);
# 2. ep (only where two GPUs exist): the two ranks expert-parallel as real/serve's ep2 plan, 25 s
#    (timeout 60 s).
# Writes OUTDIR/s9srv/{solo,ep}/hostprobe_<mode>_r<rank>.csv, hostprobe_kernels_<mode>_r<rank>.csv,
# host.txt and log.txt. A part cut by its timeout keeps the iterations written so far (every 200).
# CPU dry run (the test suite does this): PYTHON=... S9_DEVICE=cpu S9_MODEL=tiny S9_FORCE_EP2=1 S9_SOLO_S=1 S9_EP_S=1
set -u
OUT=${1:?usage: real/campaigns/s9srv.sh OUTDIR}
DIR="$OUT/s9srv"
mkdir -p "$DIR/solo" "$DIR/ep"
PY=${PYTHON:-python3}
DEVICE=${S9_DEVICE:-auto}
MODEL=${S9_MODEL:-v3-slice-2l}
SOLO_S=${S9_SOLO_S:-15}
EP_S=${S9_EP_S:-25}
if [ "$MODEL" = tiny ]; then SHAPE="--rows 2 --context 16 --max-context 96 --page-size 4 --num-pages 256 --mixed-prompt 4-30"
else SHAPE="--rows 8 --context 512 --mixed-prompt 128-512"; fi
SOLO_MIXED_S=$(python3 -c "print($SOLO_S / 3)" 2>/dev/null || echo 0)
EP_MIXED_S=$(python3 -c "print($EP_S / 3)" 2>/dev/null || echo 0)
export PYTHONUNBUFFERED=1
NGPU=$(nvidia-smi -L 2>/dev/null | wc -l)
{
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== nvidia-smi topo -m"; nvidia-smi topo -m 2>/dev/null
  echo "== /proc/stat cpu"; head -1 /proc/stat
} > "$DIR/host.txt" 2>&1
{
  echo "s9srv start $(date -u +%FT%TZ), $NGPU GPU(s), CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}"
  nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,power.limit --format=csv 2>/dev/null || true
  NSOLO=1
  if [ "$NGPU" -ge 2 ] || [ -n "${S9_FORCE_EP2:-}" ]; then NSOLO=2; fi
  timeout 45 "$PY" -m torch.distributed.run --standalone --nproc-per-node "$NSOLO" -m real.serve.hostprobe \
    --out "$DIR/solo" --mode solo --seconds "$SOLO_S" --mixed-s "$SOLO_MIXED_S" --device "$DEVICE" --model "$MODEL" $SHAPE
  echo "solo exit $? at $(date -u +%FT%TZ)"
  if [ "$NGPU" -ge 2 ] || [ -n "${S9_FORCE_EP2:-}" ]; then
    timeout 60 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m real.serve.hostprobe \
      --out "$DIR/ep" --mode ep --seconds "$EP_S" --mixed-s "$EP_MIXED_S" --device "$DEVICE" --model "$MODEL" $SHAPE
    echo "ep exit $? at $(date -u +%FT%TZ)"
  else
    echo "ep skipped: $NGPU GPU(s)"
  fi
  echo "s9srv end $(date -u +%FT%TZ)"
} 2>&1 | tee "$DIR/log.txt"

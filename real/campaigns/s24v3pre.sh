#!/usr/bin/env bash
# Session s24v3pre (issue 15): the serving engine's eager prompt iteration, kernel by kernel, on v3-slice-2l (whose
# kernel-bound prompt steps the twin prices 23-34% short: docs/notes/s24pipe_rule.md, its Outcome) and
# qwen3moe-mla-slice (a serve-fit model the twin prices within a few percent there). One GPU, about 40 s (cap 55 s).
#   real/campaigns/s24v3pre.sh OUTDIR
# One part: real/serve/prefillprof.py: Engine.step at GPU1's settings (graphs off) on 4 prompt compositions (1 x 480,
#   1 x 768, 4 x 480, 6 x 336 tokens, no decode rows; each one of eagerhost's, so h100/s24eager/fit holds their
#   unprofiled steps), every shape met first, then 2 unprofiled and 2 torch.profiler steps each: every kernel with the
#   host range (model part) and aten operator that launched it -> OUTDIR/s24v3pre/prefill_kernels.csv,
#   prefill_steps.csv, env.json. A fitting record (diagnosis; no rule judges it).
# Also OUTDIR/s24v3pre/host.txt (nproc, lscpu, nvidia-smi clocks) and log.txt. Every row carries GPU name, clocks,
# torch / CUDA / NCCL versions. Exits 0 doing nothing without a GPU.
# CPU dry run: S24V_DEVICE=cpu (the tiny model: tests/real/test_real_campaign_s24v3pre.py).
set -u
OUT=${1:?usage: real/campaigns/s24v3pre.sh OUTDIR}
DIR="$OUT/s24v3pre"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
DEVICE=${S24V_DEVICE:-auto}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
if [ "$DEVICE" = cpu ]; then PART_S=${S24V_PART_S:-120}; else PART_S=55; fi
MODELS=v3-slice-2l,qwen3moe-mla-slice
{
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== loadavg"; cat /proc/loadavg
  echo "== nvidia-smi"; nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,clocks.max.sm,power.limit,persistence_mode --format=csv 2>/dev/null
} > "$DIR/host.txt" 2>&1
SECONDS=0
{
  echo "s24v3pre start $(date -u +%FT%TZ), $NGPU GPU(s), GPU $ONE_GPU, models $MODELS"
  if [ "$NGPU" -ge 1 ] || [ "$DEVICE" = cpu ]; then
    CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$PART_S" "$PY" -m real.serve.prefillprof --out "$DIR" \
      --models "$MODELS" --device "$DEVICE" --reps 2 --budget-s $((PART_S - 15))
    echo "prefillprof exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
  else
    echo "skipped: no GPU"
  fi
  echo "s24v3pre end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | grep -v '^USDT:' | tee "$DIR/log.txt"

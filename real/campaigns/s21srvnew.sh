#!/usr/bin/env bash
# Serving load runs of models no load run ever served, predicted before they run (issue 15, branch
# s21srvnew; one GPU, about 90-120 s, budget 150 s; the predictions: calibration/prereg_serve.py, committed
# before this ran):
#   real/campaigns/s21srvnew.sh OUTDIR
# Parts, one engine process each (real/serve plans gpu1-new-qwen3moe, gpu1-new-qwen2moe, gpu1-new-mixtral:
# s20new's MLA slices of Qwen3-MoE, Qwen1.5-MoE and Mixtral MoE shapes, twin/data/models.toml): build the
# model (BF16, random weights), capture the decode CUDA graphs, the plan's warm-up loads, an eager forward of
# every flat batch size up to 2048 tokens (Engine.warm_shapes), then three held-out runs of a length mix no
# fit run had (prompts 256-1024, outputs 32-160, uniform): Poisson 8/s and 24/s and a closed loop of 16,
# 2.5 s of load each, every run bracketed by the host probe (--host-probe), the main thread pinned to one
# CPU of its GPU's, every iteration's host / GPU split, CPU and SM clock (--timing).
# Each part runs under its own hard timeout (PART_S) and --budget-s, so a slow model cannot starve the next;
# rows are written run by run (a cut part keeps its finished runs). Exits 0 doing nothing without a GPU
# (S21_DEVICE=cpu forces the CPU dry run).
# Writes OUTDIR/s21srvnew/<model>/serve_{load,requests,iterations}.csv + env.json (GPU name, clocks,
# torch / CUDA / NCCL versions in every row and env file), OUTDIR/s21srvnew/host.txt and log.txt.
# CPU dry run (the test suite does this): PYTHON=... S21_DEVICE=cpu S21_PLANS=tiny-new S21_PART_S=60
set -u
OUT=${1:?usage: real/campaigns/s21srvnew.sh OUTDIR}
NAME=${S21_NAME:-s21srvnew}   # s21srvnew2.sh: the same parts with fresh seeds, into OUTDIR/s21srvnew2
DIR="$OUT/$NAME"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
DEVICE=${S21_DEVICE:-auto}
PLANS=${S21_PLANS:-gpu1-new-qwen3moe gpu1-new-qwen2moe gpu1-new-mixtral}
PART_S=${S21_PART_S:-48}
# S21_EXTRA: more real.serve options for every part (s23srvh.sh: the pause probe)
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
{
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== cpufreq"; cat /sys/devices/system/cpu/cpu0/cpufreq/scaling_governor 2>/dev/null || echo "not exposed"
  echo "== loadavg"; cat /proc/loadavg
  echo "== nvidia-smi"; nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,clocks.max.sm,power.limit,persistence_mode --format=csv 2>/dev/null
} > "$DIR/host.txt" 2>&1
SECONDS=0
{
  echo "$NAME start $(date -u +%FT%TZ), $NGPU GPU(s), GPU $ONE_GPU, plans $PLANS"
  if [ "$NGPU" -ge 1 ] || [ "$DEVICE" = cpu ]; then
    for plan in $PLANS; do
      model=${plan#gpu1-new-}; model=${model#gpu1-new2-}; model=${model#gpu1-s22-}; model=${model#gpu1-s23-}; model=${model#gpu1-s23c-}
      # no run starts after --budget-s; the hard timeout leaves the finished runs' rows
      CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$PART_S" "$PY" -m real.serve --out "$DIR/$model" --plan "$plan" \
        --device "$DEVICE" --budget-s $((PART_S - 12)) --timing --host-probe ${S21_EXTRA:-}
      echo "$plan exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
    done
  else
    echo "skipped: no GPU"
  fi
  echo "$NAME end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | tee "$DIR/log.txt"

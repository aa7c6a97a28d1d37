#!/usr/bin/env bash
# Session s25v3pre (issue 15; docs/notes/s25v3pre_rule.md, committed before this ran): fresh held-out records for the
# eager engine's prompt kernels priced as the engine runs them (math-SDPA attention core, the eager MoE's routing
# passes, fp32 RoPE) together with the launch/kernel pipeline. One GPU, about 90 s (hard caps 30 + 2 x 42 s).
#   real/campaigns/s25v3pre.sh OUTDIR
# Part 1 (fresh, reported beside, never a criterion): real/serve/prefillprof.py on v3-slice-2l at prompt-only
#   compositions no kernel record holds (1 x 1280, 1 x 2048, 2 x 960, 3 x 640 tokens): every kernel with the host range
#   and aten operator that launched it -> OUTDIR/s25v3pre/prefill/prefill_kernels.csv, prefill_steps.csv, env.json.
# Parts 2-3 (fresh, held out: the judged set F): real/serve plans gpu1-s25v-v3s2l, gpu1-s25v-qwen3moe
#   (real/serve/plans.py S25V_PLANS: v3-slice-2l at Poisson 12/s and closed loops of 6 and 20, qwen3moe-mla-slice at
#   Poisson 12/s and closed loops of 8 and 20, prompts uniform 640-1280 and outputs 16-96 tokens (lengths no record of
#   either holds); the s21srvnew engine, the first run warmed to 1344 flat tokens; seeds 101-106), the host probe around
#   every run, timing on -> OUTDIR/s25v3pre/<model>/serve_{load,requests,iterations}.csv + env.json.
# Also OUTDIR/s25v3pre/host.txt (nproc, lscpu, nvidia-smi clocks) and log.txt. Every row carries GPU name, clocks,
# torch / CUDA / NCCL versions. Exits 0 doing nothing without a GPU.
# CPU dry run: S25V_DEVICE=cpu (the tiny model through every part: tests/real/test_real_campaign_s25v3pre.py).
set -u
OUT=${1:?usage: real/campaigns/s25v3pre.sh OUTDIR}
DIR="$OUT/s25v3pre"
mkdir -p "$DIR"
PY=${PYTHON:-python3}
DEVICE=${S25V_DEVICE:-auto}
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
. "$(dirname "$0")/gpus.sh"   # NGPU, ONE_GPU
if [ "$DEVICE" = cpu ]; then
  PLANS="tiny-new"; PROF_S=${S25V_PART_S:-120}; PART_S=${S25V_PART_S:-120}
else
  PLANS="gpu1-s25v-v3s2l gpu1-s25v-qwen3moe"; PROF_S=30; PART_S=42
fi
COMPS=1x1280,1x2048,2x960,3x640
{
  echo "== nproc"; nproc; echo "== lscpu"; lscpu 2>/dev/null
  echo "== loadavg"; cat /proc/loadavg
  echo "== nvidia-smi"; nvidia-smi --query-gpu=index,name,clocks.sm,clocks.mem,clocks.max.sm,power.limit,persistence_mode --format=csv 2>/dev/null
} > "$DIR/host.txt" 2>&1
SECONDS=0
{
  echo "s25v3pre start $(date -u +%FT%TZ), $NGPU GPU(s), GPU $ONE_GPU, prefill compositions $COMPS, plans $PLANS"
  if [ "$NGPU" -ge 1 ] || [ "$DEVICE" = cpu ]; then
    CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$PROF_S" "$PY" -m real.serve.prefillprof --out "$DIR/prefill" \
      --models v3-slice-2l --compositions "$COMPS" --device "$DEVICE" --reps 2 --budget-s $((PROF_S - 12))
    echo "prefillprof exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
    for plan in $PLANS; do
      model=$("$PY" -c "from real.serve.plans import PLANS; print(PLANS['$plan'].model)")
      CUDA_VISIBLE_DEVICES=$ONE_GPU timeout -k 5 "$PART_S" "$PY" -m real.serve --out "$DIR/$model" --plan "$plan" \
        --device "$DEVICE" --budget-s $((PART_S - 12)) --timing --host-probe
      echo "$plan exit $? at $(date -u +%FT%TZ) (${SECONDS} s)"
    done
  else
    echo "skipped: no GPU"
  fi
  echo "s25v3pre end $(date -u +%FT%TZ) after ${SECONDS} s"
} 2>&1 | grep -v '^USDT:' | tee "$DIR/log.txt"

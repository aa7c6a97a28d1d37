#!/usr/bin/env bash
# s23ephost2 (issue 13): fresh EP2 steps beside PP2 forwards timed in the same run (the run's own host rate).
#
# Why: s23ephost (docs/notes/s23ephost_rule.md) found the EP layer's post-sync host time shorter than the
# twin's, not longer, and neither placement change passed; after the fact, its fresh EP2 steps priced at
# their own run's PP2 forward rate (32 us a launch) instead of the committed 2xH100 folder's (25 us) went
# from 1.79 / 17.72% to 3.28 / 6.23% on one host (not on the other). That was seen, not blind. This run
# tests it blind (docs/notes/s23ephost2_rule.md, committed before the held-out rows exist): per model one
# torchrun, PP2 1f1b at 4 micro-batches (split fit: the run's forward rate, as every committed two-GPU
# folder gives its own EP steps) then EP2 steps (pp 1, ep 2, dp 2) at 1, 2, 4 micro-batches (split
# holdout), unmarked, on shapes no record holds: two sequences of 2,048 a micro-batch on
#   bench-small:4         hidden 1,024, 16 experts of width 256, top-4 (the most host-paced)
#   qwen2moe-mla-slice:4  60 experts of width 1,408, top-4, 4-wide shared
#   v2-lite-slice:4       64 experts of width 1,408, top-6, 2 shared (4 of its layers, not the recorded 8)
# BF16, warm-up 2, >= 3 timed steps. Run it alone on a 2-GPU host (2xH100 asked; 2xH200 as useful):
#   bash real/campaigns/s23ephost2.sh OUTDIR
# Budget: <= 90 s wall (three parts under `timeout` 28 s; the bench's own budget 12 s: no configuration
# starts after it; torchrun start and CUDA/NCCL init ~10 s a part). Rows are written per configuration, so a
# part cut short keeps what it measured. Stops cleanly (exit 0, nothing run) on fewer than 2 GPUs. Every
# pipeline_step row carries GPU name, SM/memory clocks, torch/CUDA/NCCL versions.
# Outputs: OUTDIR/s23ephost2/<model>/{pipeline_step,pipeline_ops,pipeline_routing}.csv, env_pipeline_*.json,
# s23ephost2.log, host_s23ephost2.txt.
# Env: PY (python3), S23EPHOST2_PARTS (default: the three models), S23EPHOST2_TINY (1: CPU dry run on gloo
# ranks, the tiny model), S23EPHOST2_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s23ephost2.sh OUTDIR}/s23ephost2
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S23EPHOST2_TINY:-0}
scale=${S23EPHOST2_TIMEOUT_SCALE:-1}
# model:layers (calibration/ep_postsync.py OWN_RATE_MODELS restates them; a test keeps them equal)
MODELS="bench-small:4 qwen2moe-mla-slice:4 v2-lite-slice:4"
parts=" ${S23EPHOST2_PARTS:-bench-small qwen2moe-mla-slice v2-lite-slice} "
campaign=s23ephost2
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

quick=(--min-time-s 0.3 --reps-min 3 --reps-max 4)
[ "$tiny" = "1" ] && quick=(--min-time-s 0 --reps-min 2 --reps-max 2)
for case in $MODELS; do
  model=${case%%:*}
  shape=(--model "$model" --num-layers "${case##*:}" --seq-len 2048 --mb-seqs 2)
  [ "$tiny" = "1" ] && shape=(--tiny)
  mkdir -p "$root/$model"
  part "$model" 28 "${torchrun[@]}" -m real.pipeline --out "$root/$model" "${shape[@]}" --precision bf16 \
    --warmup 2 "${quick[@]}" --layouts pp2,ep2 --schedules 1f1b --microbatches 4 --holdout 0 \
    --ep-microbatches 1,2,4 --ep-holdout 1,2,4 --budget-s 12
done
echo "s23ephost2 done $(date -u +%FT%TZ)" | tee -a "$log"

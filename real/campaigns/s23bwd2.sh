#!/usr/bin/env bash
# s23bwd2 (issue 13): fresh EP2 steps on shapes no record holds, to judge the EP backward's host terms blind.
#
# Why: s23bwd (docs/notes/s23bwd.md) found bench-small's EP2 steps lose their time in a host-bound backward
# (twin 10.4 ms a micro-batch, measured 15.0-21.6) and sized two terms on fitting records only: each backward
# EP all-to-all node's host call (~0.26 ms) and the backward's own host rate (~1.5x the forward's). The
# s23ephost / s23ephost2 / s20epnew rows were seen per phase, so docs/notes/s23bwd2_rule.md (committed before
# this run) judges calibration.pipeline.ADOPT_EP_BWD_HOST on this run's rows only. s23ephost2.sh's machinery
# (real.pipeline: PP2 1f1b at 4 micro-batches, split fit, the run's own host rates; then EP2 steps, pp 1,
# ep 2, dp 2, at 1, 2, 4 micro-batches, split holdout, unmarked, BF16) on shapes no record holds:
#   bench-small:6  seq 2,048 x 1   1 dense + 5 MoE layers (16 experts of width 256, top-4): host-bound
#   bench-small:4  seq 1,024 x 2   1 dense + 3 MoE layers at 2,048 tokens a micro-batch: host-bound
#   qwen2moe-mla-slice:4  seq 1,024 x 4   60 experts of width 1,408, top-4: GPU-bound control
# Run it alone on a 2-GPU host (2xH100 asked; 2xH200 useful as a second host kind):
#   bash real/campaigns/s23bwd2.sh OUTDIR
# Budget: <= 90 s wall (three parts under `timeout` 28 s; the bench's own budget 12 s: no configuration starts
# after it; torchrun start and CUDA/NCCL init ~10 s a part). Rows are written per configuration, so a part cut
# short keeps what it measured. Stops cleanly (exit 0, nothing run) on fewer than 2 GPUs. Every pipeline_step
# row carries GPU name, SM/memory clocks, torch/CUDA/NCCL versions.
# Outputs: OUTDIR/s23bwd2/<part>/{pipeline_step,pipeline_ops,pipeline_routing}.csv, env_pipeline_*.json,
# s23bwd2.log, host_s23bwd2.txt.
# Env: PY (python3), S23BWD2_PARTS (default: the three parts), S23BWD2_TINY (1: CPU dry run on gloo ranks,
# the tiny model), S23BWD2_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s23bwd2.sh OUTDIR}/s23bwd2
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S23BWD2_TINY:-0}
scale=${S23BWD2_TIMEOUT_SCALE:-1}
# part=model:layers:seq_len:sequences a micro-batch (tests/real/test_real_campaign_s23bwd2.py restates them)
CASES="bench-small-6l=bench-small:6:2048:1 bench-small-2k=bench-small:4:1024:2 qwen2moe-mla-1k=qwen2moe-mla-slice:4:1024:4"
parts=" ${S23BWD2_PARTS:-bench-small-6l bench-small-2k qwen2moe-mla-1k} "
campaign=s23bwd2
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

quick=(--min-time-s 0.3 --reps-min 3 --reps-max 4)
[ "$tiny" = "1" ] && quick=(--min-time-s 0 --reps-min 2 --reps-max 2)
for case in $CASES; do
  name=${case%%=*}
  IFS=: read -r model layers seq seqs <<< "${case#*=}"
  shape=(--model "$model" --num-layers "$layers" --seq-len "$seq" --mb-seqs "$seqs")
  [ "$tiny" = "1" ] && shape=(--tiny)
  mkdir -p "$root/$name"
  part "$name" 28 "${torchrun[@]}" -m real.pipeline --out "$root/$name" "${shape[@]}" --precision bf16 \
    --warmup 2 "${quick[@]}" --layouts pp2,ep2 --schedules 1f1b --microbatches 4 --holdout 0 \
    --ep-microbatches 1,2,4 --ep-holdout 1,2,4 --budget-s 12
done
echo "s23bwd2 done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s24bwd3 (issue 13): fresh EP2 steps on shapes no record holds, to judge the EP backward's host taken as an
# input of the run it predicts (calibration.pipeline.ADOPT_EP_BWD_RUN_HOST, docs/notes/s24bwd3_rule.md,
# committed before this run).
#
# Why: s23bwd2 (docs/notes/s23bwd2_rule.md) found bench-small's host-bound EP backward is not one level across
# hosts, and s23bwd's term (c), the slower rank pacing the backward, had no measured input. Each part here is
# one torchrun whose fitting split holds PP2 1f1b at 4 micro-batches and **one EP2 step configuration at 1
# micro-batch** (pp 1, ep 2, dp 2), run by the same two processes that then run the held-out EP2 steps at 2, 3
# and 4 micro-batches (split holdout; unmarked, BF16): calibration.ep_bwd_run reads the slower rank's backward
# host rate from the fitting EP2 step.
# s23bwd2.sh's machinery on shapes no record holds:
#   bench-small-5l   bench-small:5  seq 1,024 x 3   1 dense + 4 MoE layers: host-bound
#   bench-small-8l   bench-small:8  seq 512 x 2     1 dense + 7 MoE layers, 1,024 tokens: host-bound, most launches
#   qwen3moe-1k      qwen3moe-slice:4  seq 1,024 x 4   128 experts of width 768, top-8: GPU-bound control
# Run it alone on a 2-GPU host (2xH100 asked; a 2xH200 is reported, see the rule):
#   bash real/campaigns/s24bwd3.sh OUTDIR
# Budget: <= 90 s wall (three parts under `timeout` 28 s; the bench's own budget 12 s: no configuration starts
# after it; torchrun start and CUDA/NCCL init ~10 s a part). Rows are written per configuration, so a part cut
# short keeps what it measured. Stops cleanly (exit 0, nothing run) on fewer than 2 GPUs. Every pipeline_step
# row carries GPU name, SM/memory clocks, torch/CUDA/NCCL versions.
# Outputs: OUTDIR/s24bwd3/<part>/{pipeline_step,pipeline_ops,pipeline_routing}.csv, env_pipeline_*.json,
# s24bwd3.log, host_s24bwd3.txt (no traces are needed: pass S24BWD3_KEEP_TRACES=1 to keep them).
# Env: PY (python3), S24BWD3_PARTS (default: the three parts), S24BWD3_TINY (1: CPU dry run on gloo ranks,
# the tiny model), S24BWD3_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s24bwd3.sh OUTDIR}/s24bwd3
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S24BWD3_TINY:-0}
scale=${S24BWD3_TIMEOUT_SCALE:-1}
# part=model:layers:seq_len:sequences a micro-batch (tests/real/test_real_campaign_s24bwd3.py restates them)
CASES="bench-small-5l=bench-small:5:1024:3 bench-small-8l=bench-small:8:512:2 qwen3moe-1k=qwen3moe-slice:4:1024:4"
parts=" ${S24BWD3_PARTS:-bench-small-5l bench-small-8l qwen3moe-1k} "
campaign=s24bwd3
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

quick=(--min-time-s 0.3 --reps-min 3 --reps-max 4)
[ "$tiny" = "1" ] && quick=(--min-time-s 0 --reps-min 2 --reps-max 2)
for case in $CASES; do
  name=${case%%=*}
  case "$parts" in *" $name "*) ;; *) continue ;; esac
  IFS=: read -r model layers seq seqs <<< "${case#*=}"
  shape=(--model "$model" --num-layers "$layers" --seq-len "$seq" --mb-seqs "$seqs")
  [ "$tiny" = "1" ] && shape=(--tiny)
  mkdir -p "$root/$name"
  part "$name" 28 "${torchrun[@]}" -m real.pipeline --out "$root/$name" "${shape[@]}" --precision bf16 \
    --warmup 2 "${quick[@]}" --layouts pp2,ep2 --schedules 1f1b --microbatches 4 --holdout 0 \
    --ep-microbatches 1,2,3,4 --ep-holdout 2,3,4 --budget-s 12
  # the traces are not records (a file-count limit cut s23bwd2's first 2xH200 delivery to one part)
  [ "${S24BWD3_KEEP_TRACES:-0}" = "1" ] || rm -f "$root/$name"/pipeline_trace_*.json
done
echo "s24bwd3 done $(date -u +%FT%TZ)" | tee -a "$log"

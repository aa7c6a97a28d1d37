#!/usr/bin/env bash
# s27epfwd (issue 13): fresh EP2 steps and PP2 pipelines on shapes no record holds, to judge
# docs/notes/s27epfwd_rule.md (committed before this run): the EP forward's host seconds a launch, priced before the
# run from every committed lease's fitting EP forwards (calibration.ep_forward_host, switch ADOPT_EP_FORWARD_HOST),
# in place of one folder's lease.
#
# Parts (each one torchrun on the two GPUs; BF16, unmarked, configurations one after another):
#   EP2 (pp 1, ep 2, dp 2) at 1, 2, 4 micro-batches (1 in the bench's fitting split; the rule judges every row):
#   qwen2-4l2k   qwen2moe-mla-slice:4  seq 2,048 x 1   60 experts top-4, 4 shared: host-bound
#   qwen3-4l3k   qwen3moe-mla-slice:4  seq 3,072 x 1   128 experts top-8: host-bound
#   qwen3g-4l2k  qwen3moe-slice:4      seq 2,048 x 1   grouped-query attention, 128 experts top-8
#   mixtral-2l2k mixtral-mla-slice:2   seq 2,048 x 1   8 experts of 14,336, top-2: mostly GPU-bound
#   v3-3l        v3-slice-2l:3         seq 2,048 x 1   a new model slice: V3 layer shapes (hidden 7,168, MLA 128 heads,
#                                                      32 experts top-8, 1 dense + 2 MoE layers): the GPU-bound control
#   bench-5l2k   bench-small:5         seq 2,048 x 1   the smallest model, the most host-bound
#   PP2 (pp 2, ep 1), every schedule at 4 (fit) and 8 (holdout) micro-batches:
#   qwen3-pp2    qwen3moe-mla-slice:8  seq 2,048 x 1   the control the candidate must leave as it is (ep 1)
# Run it alone on a 2-GPU host (nvidia-h200-x2 asked; a 2xH100 pair is filed under h100x2 and judged the same way):
#   bash real/campaigns/s27epfwd.sh OUTDIR
# Budget: <= 210 s wall (six EP2 parts under 25 s each and the PP2 part under 45 s: the bench's own budget, no
# configuration starts after it; torchrun start and CUDA/NCCL init ~10 s a part). Rows are written per
# configuration, so a part cut short keeps what it measured. Stops cleanly (exit 0, nothing run) on fewer than 2 GPUs.
# Every row carries GPU name, SM/memory clocks, power, torch/CUDA/NCCL versions; host_s27epfwd.txt holds nvidia-smi,
# the topology, the CPU count and load; clocks_s27epfwd.txt holds nvidia-smi -q -d CLOCK.
# Outputs: OUTDIR/s27epfwd/<part>/{pipeline_step,pipeline_ops,pipeline_routing}.csv, env_pipeline_*.json,
# s27epfwd.log, host_s27epfwd.txt, clocks_s27epfwd.txt (no traces unless S27EPFWD_KEEP_TRACES=1).
# Env: PY (python3), S27EPFWD_PARTS (default: every part), S27EPFWD_TINY (1: CPU dry run on gloo ranks, the tiny
# model, one warm-up and one timed step a configuration), S27EPFWD_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s27epfwd.sh OUTDIR}/s27epfwd
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S27EPFWD_TINY:-0}
scale=${S27EPFWD_TIMEOUT_SCALE:-1}
# part=model:layers:seq_len:sequences a micro-batch:layout (tests/real/test_real_campaign_s27epfwd.py restates them)
CASES="qwen2-4l2k=qwen2moe-mla-slice:4:2048:1:ep2 qwen3-4l3k=qwen3moe-mla-slice:4:3072:1:ep2 qwen3g-4l2k=qwen3moe-slice:4:2048:1:ep2 mixtral-2l2k=mixtral-mla-slice:2:2048:1:ep2 v3-3l=v3-slice-2l:3:2048:1:ep2 bench-5l2k=bench-small:5:2048:1:ep2 qwen3-pp2=qwen3moe-mla-slice:8:2048:1:pp2"
default_parts="$(for c in $CASES; do printf '%s ' "${c%%=*}"; done)"
parts=" ${S27EPFWD_PARTS:-$default_parts} "
campaign=s27epfwd
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun
nvidia-smi -q -d CLOCK > "$root/clocks_s27epfwd.txt" 2>&1 || true

quick=(--warmup 2 --min-time-s 0.3 --reps-min 4 --reps-max 6)
# the CPU dry run: one warm-up and one timed step a configuration (every configuration still runs)
[ "$tiny" = "1" ] && quick=(--warmup 1 --min-time-s 0 --reps-min 1 --reps-max 1)
for case in $CASES; do
  name=${case%%=*}
  case "$parts" in *" $name "*) ;; *) continue ;; esac
  IFS=: read -r model layers seq seqs layout <<< "${case#*=}"
  shape=(--model "$model" --num-layers "$layers" --seq-len "$seq" --mb-seqs "$seqs")
  [ "$tiny" = "1" ] && shape=(--tiny)
  mkdir -p "$root/$name"
  if [ "$layout" = "ep2" ]; then
    part "$name" 25 "${torchrun[@]}" -m real.pipeline --out "$root/$name" "${shape[@]}" --precision bf16 \
      "${quick[@]}" --layouts ep2 --microbatches 4 --holdout 0 --ep-microbatches 1,2,4 --ep-holdout 2,4 --budget-s 11
  else
    part "$name" 45 "${torchrun[@]}" -m real.pipeline --out "$root/$name" "${shape[@]}" --precision bf16 \
      "${quick[@]}" --layouts pp2 --schedules 1f1b,zb1p,dualpipev,dualpipe --microbatches 4,8 --holdout 8 --budget-s 28
  fi
  [ "${S27EPFWD_KEEP_TRACES:-0}" = "1" ] || rm -f "$root/$name"/pipeline_trace_*.json
done
echo "s27epfwd done $(date -u +%FT%TZ)" | tee -a "$log"

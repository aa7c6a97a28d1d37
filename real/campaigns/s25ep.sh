#!/usr/bin/env bash
# s25ep (issue 13): fresh EP2 steps on shapes no record holds, to judge s24bwd3's amendment A1 (the EP backward's
# host as an input of the run, calibration.pipeline.ADOPT_EP_BWD_RUN_HOST) and s25ep's candidate (an EP rank's four
# forward argsorts; cub's radix launches at their own host seconds: calibration.predict.ADOPT_EP_FOUR_SORTS,
# ADOPT_CUB_LAUNCH_HOST), alone and together, by docs/notes/s25ep_rule.md (committed before this run).
#
# Parts, in order (the fitting part first):
#   sortsweep        one GPU (GPU 0): real.bench.sort_sweep at 4,000-8,192 elements: the host seconds a cub
#                    radix launch of this host (argsort's radix path against the in-place path; fitting)
#   bench-small-3l   bench-small:3   seq 2,048 x 2   4,096 tokens, 16,384 rows a rank: host-bound
#   bench-small-7l   bench-small:7   seq 512 x 4     2,048 tokens, 8,192 rows a rank: host-bound, most launches
#   qwen2moe-3l      qwen2moe-mla-slice:3  seq 512 x 2  1,024 tokens x top-4 = 4,096: the forward sorts' cliff
#   v2-lite-2l       v2-lite-slice:2 seq 2,048 x 2   4,096 tokens x top-6, 64 experts of 1,408: GPU-bound control
# Round 2 (S25EP_ROUND=2, amendment A2 of the rule: a second blind delivery), the same machinery on:
#   bench-small-6l   bench-small:6   seq 1,024 x 2   2,048 tokens, 8,192 rows a rank: host-bound
#   bench-small-9l   bench-small:9   seq 512 x 3     1,536 tokens, 6,144 rows a rank: host-bound, most launches
#   qwen3moe-3l      qwen3moe-slice:3  seq 512 x 2   1,024 tokens x top-8: 128 experts of 768
#   mixtral-2l       mixtral-slice:2 seq 2,048 x 2   8 experts of 14,336, top-2: GPU-bound control
# Each EP part is one torchrun: EP2 (pp 1, ep 2, dp 2) at 1 micro-batch (split fit: the run's backward input,
# calibration.ep_bwd_run) then at 2, 3, 4 (split holdout), unmarked, BF16.
# Run it alone on a 2-GPU host (2xH100 asked; whichever pair comes is judged, see the rule):
#   bash real/campaigns/s25ep.sh OUTDIR
# Budget: <= 90 s wall (the sweep under `timeout` 15 s; four EP parts under 22 s each, the bench's own budget 9 s:
# no configuration starts after it; torchrun start and CUDA/NCCL init ~10 s a part). Rows are written per
# configuration, so a part cut short keeps what it measured. Stops cleanly (exit 0, nothing run) on fewer than 2
# GPUs. Every row carries GPU name, SM/memory clocks, torch/CUDA/NCCL versions.
# Outputs: OUTDIR/s25ep/sortsweep/{sort_sweep.csv,env_sort_sweep.json},
# OUTDIR/s25ep/<part>/{pipeline_step,pipeline_ops,pipeline_routing}.csv, env_pipeline_*.json, s25ep.log,
# host_s25ep.txt (no traces: pass S25EP_KEEP_TRACES=1 to keep them).
# Env: PY (python3), S25EP_ROUND (1; 2: the second round's shapes), S25EP_PARTS (default: every part of the
# round), S25EP_TINY (1: CPU dry run on gloo ranks, the tiny model, one warm-up and one timed step a configuration;
# the sweep on the CPU at two sizes, 2 calls each way), S25EP_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s25ep.sh OUTDIR}/s25ep
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S25EP_TINY:-0}
scale=${S25EP_TIMEOUT_SCALE:-1}
# part=model:layers:seq_len:sequences a micro-batch (tests/real/test_real_campaign_s25ep.py restates them)
CASES="bench-small-3l=bench-small:3:2048:2 bench-small-7l=bench-small:7:512:4 qwen2moe-3l=qwen2moe-mla-slice:3:512:2 v2-lite-2l=v2-lite-slice:2:2048:2"
# round 2 (S25EP_ROUND=2: the rule's amendment A2, a second delivery on shapes neither round holds)
CASES2="bench-small-6l=bench-small:6:1024:2 bench-small-9l=bench-small:9:512:3 qwen3moe-3l=qwen3moe-slice:3:512:2 mixtral-2l=mixtral-slice:2:2048:2"
[ "${S25EP_ROUND:-1}" = "2" ] && CASES=$CASES2
default_parts="sortsweep $(for c in $CASES; do printf '%s ' "${c%%=*}"; done)"
parts=" ${S25EP_PARTS:-$default_parts} "
campaign=s25ep
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

sizes=4000,4096,4097,4506,8192   # five sizes: the first delivery's six ran into the part's 15 s
sweep_reps=()
# the CPU dry run: the cliff's two sizes, 2 calls each way (a CPU's index_put_ of 4,096 rows takes ~25 ms)
[ "$tiny" = "1" ] && sizes=4096,4097 && sweep_reps=(--reps 2)
mkdir -p "$root/sortsweep"
# the first GPU of the pair only (the sweep is one process)
one_gpu=${CUDA_VISIBLE_DEVICES:-0}
CUDA_VISIBLE_DEVICES=${one_gpu%%,*} part sortsweep 15 "$PY" -m real.bench.sort_sweep \
  --out "$root/sortsweep" --sizes "$sizes" "${sweep_reps[@]}"

quick=(--warmup 2 --min-time-s 0.25 --reps-min 3 --reps-max 4)
# the CPU dry run: one warm-up and one timed step a configuration (every configuration still runs)
[ "$tiny" = "1" ] && quick=(--warmup 1 --min-time-s 0 --reps-min 1 --reps-max 1)
for case in $CASES; do
  name=${case%%=*}
  case "$parts" in *" $name "*) ;; *) continue ;; esac
  IFS=: read -r model layers seq seqs <<< "${case#*=}"
  shape=(--model "$model" --num-layers "$layers" --seq-len "$seq" --mb-seqs "$seqs")
  [ "$tiny" = "1" ] && shape=(--tiny)
  mkdir -p "$root/$name"
  part "$name" 22 "${torchrun[@]}" -m real.pipeline --out "$root/$name" "${shape[@]}" --precision bf16 \
    "${quick[@]}" --layouts ep2 --microbatches 4 --holdout 0 \
    --ep-microbatches 1,2,3,4 --ep-holdout 2,3,4 --budget-s 9
  [ "${S25EP_KEEP_TRACES:-0}" = "1" ] || rm -f "$root/$name"/pipeline_trace_*.json
done
echo "s25ep done $(date -u +%FT%TZ)" | tee -a "$log"

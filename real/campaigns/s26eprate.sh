#!/usr/bin/env bash
# s26eprate (issue 13): fresh EP2 steps on shapes no record holds, each timed step right after a host-pace probe
# on every rank (real/pipeline/hostpace.py: 128 small launches behind a sleeping stream, and a pure-Python loop),
# to judge docs/notes/s26eprate_rule.md (committed before this run): the EP2 step's forward and backward host
# rates a launch put on the lease's own host speed, read from the probe right before each step
# (calibration.ep_probe_rate, switch ADOPT_EP_PROBE_HOST).
#
# Parts (each one torchrun: EP2 = pp 1, ep 2, dp 2; 1 micro-batch in the fitting split, then 2, 3, 4 held out;
# unmarked, BF16; the probe before every timed step of every configuration):
#   bench-small-4l     bench-small:4   seq 768 x 4     3,072 tokens, 12,288 rows a rank: host-bound
#   bench-small-6l512  bench-small:6   seq 512 x 4     2,048 tokens, 8,192 rows a rank: host-bound
#   bench-small-10l    bench-small:10  seq 384 x 4     1,536 tokens, 6,144 rows a rank: host-bound, most launches
#   bench-small-3l1k5  bench-small:3   seq 1,536 x 2   3,072 tokens, 12,288 rows a rank: host-bound, fewest launches
#   mixtral-3l         mixtral-slice:3 seq 1,024 x 2   8 experts of 14,336, top-2: the GPU-bound control
# Run it alone on a 2-GPU host (nvidia-h200-x2 asked; a 2xH100 pair is filed under h100x2 and judged the same way):
#   bash real/campaigns/s26eprate.sh OUTDIR
# Budget: <= 150 s wall (five parts under 25 s each: the bench's own budget 11 s, no configuration starts after
# it; torchrun start and CUDA/NCCL init ~10 s a part). Rows are written per configuration, so a part cut short
# keeps what it measured. Stops cleanly (exit 0, nothing run) on fewer than 2 GPUs. Every row carries GPU name,
# SM/memory clocks, torch/CUDA/NCCL versions (the probe rows too); host_s26eprate.txt holds nvidia-smi, the
# topology, the CPU count and load; clocks_s26eprate.txt holds nvidia-smi -q -d CLOCK.
# Outputs: OUTDIR/s26eprate/<part>/{pipeline_step,pipeline_ops,pipeline_routing,pipeline_host_probe}.csv,
# env_pipeline_ep2.json, s26eprate.log, host_s26eprate.txt, clocks_s26eprate.txt (no traces unless
# S26EPRATE_KEEP_TRACES=1).
# Env: PY (python3), S26EPRATE_PARTS (default: every part), S26EPRATE_TINY (1: CPU dry run on gloo ranks, the
# tiny model, one warm-up and one timed step a configuration), S26EPRATE_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s26eprate.sh OUTDIR}/s26eprate
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S26EPRATE_TINY:-0}
scale=${S26EPRATE_TIMEOUT_SCALE:-1}
# part=model:layers:seq_len:sequences a micro-batch (tests/real/test_real_campaign_s26eprate.py restates them)
CASES="bench-small-4l=bench-small:4:768:4 bench-small-6l512=bench-small:6:512:4 bench-small-10l=bench-small:10:384:4 bench-small-3l1k5=bench-small:3:1536:2 mixtral-3l=mixtral-slice:3:1024:2"
default_parts="$(for c in $CASES; do printf '%s ' "${c%%=*}"; done)"
parts=" ${S26EPRATE_PARTS:-$default_parts} "
campaign=s26eprate
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun
nvidia-smi -q -d CLOCK > "$root/clocks_s26eprate.txt" 2>&1 || true

quick=(--warmup 2 --min-time-s 0.3 --reps-min 4 --reps-max 6)
# the CPU dry run: one warm-up and one timed step a configuration (every configuration still runs)
[ "$tiny" = "1" ] && quick=(--warmup 1 --min-time-s 0 --reps-min 1 --reps-max 1)
for case in $CASES; do
  name=${case%%=*}
  case "$parts" in *" $name "*) ;; *) continue ;; esac
  IFS=: read -r model layers seq seqs <<< "${case#*=}"
  shape=(--model "$model" --num-layers "$layers" --seq-len "$seq" --mb-seqs "$seqs")
  [ "$tiny" = "1" ] && shape=(--tiny)
  mkdir -p "$root/$name"
  part "$name" 25 "${torchrun[@]}" -m real.pipeline --out "$root/$name" "${shape[@]}" --precision bf16 \
    "${quick[@]}" --layouts ep2 --microbatches 4 --holdout 0 \
    --ep-microbatches 1,2,3,4 --ep-holdout 2,3,4 --budget-s 11 --host-probe
  [ "${S26EPRATE_KEEP_TRACES:-0}" = "1" ] || rm -f "$root/$name"/pipeline_trace_*.json
done
echo "s26eprate done $(date -u +%FT%TZ)" | tee -a "$log"

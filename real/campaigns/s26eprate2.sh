#!/usr/bin/env bash
# s26eprate round 2 (issue 13): fresh EP2 steps on shapes no record holds, each timed step run with a companion
# thread on every rank that times a fixed pure-Python loop every ~2 ms *during* the step
# (real/pipeline/hostpace.PaceSampler, real.pipeline --pace-sampler) and, as in round 1, right after a host-pace
# probe (--host-probe), to judge docs/notes/s26eprate2_rule.md (committed before this run): the EP2 step's forward
# and backward host rates a launch put on the host's pace sampled during the held-out steps' own ops
# (calibration.ep_pace_during, switch calibration.pipeline.ADOPT_EP_PACE_DURING).
#
# Parts (each one torchrun: EP2 = pp 1, ep 2, dp 2; 1 micro-batch in the fitting split, then 2, 3, 4 held out;
# unmarked, BF16; sampler and probe at every timed step of every configuration):
#   bench-small-5l640    bench-small:5   seq 640 x 4     2,560 tokens: host-bound
#   bench-small-8l448    bench-small:8   seq 448 x 4     1,792 tokens: host-bound
#   bench-small-12l256   bench-small:12  seq 256 x 4     1,024 tokens: host-bound, most launches
#   bench-small-4l1k28   bench-small:4   seq 1,280 x 2   2,560 tokens: host-bound, fewest launches
#   mixtral-2l1k5        mixtral-slice:2 seq 1,536 x 2   8 experts of 14,336, top-2: the GPU-bound control
# Run it alone on a 2-GPU host (nvidia-h200-x2 asked; a 2xH100 pair is filed under h100x2 and judged the same way):
#   bash real/campaigns/s26eprate2.sh OUTDIR
# Budget: <= 150 s wall (five parts under 25 s each: the bench's own budget 11 s, no configuration starts after
# it; torchrun start and CUDA/NCCL init ~10 s a part). Rows are written per configuration, so a part cut short
# keeps what it measured. Stops cleanly (exit 0, nothing run) on fewer than 2 GPUs. Every row carries GPU name,
# SM/memory clocks, torch/CUDA/NCCL versions; host_s26eprate2.txt holds nvidia-smi, the topology, the CPU count
# and load; clocks_s26eprate2.txt holds nvidia-smi -q -d CLOCK.
# Outputs: OUTDIR/s26eprate2/<part>/{pipeline_step,pipeline_ops,pipeline_routing,pipeline_host_probe,
# pipeline_host_pace}.csv, env_pipeline_ep2.json, s26eprate2.log, host_s26eprate2.txt, clocks_s26eprate2.txt.
# Env: PY (python3), S26EPRATE2_PARTS (default: every part), S26EPRATE2_TINY (1: CPU dry run on gloo ranks, the
# tiny model, one warm-up and one timed step a configuration), S26EPRATE2_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s26eprate2.sh OUTDIR}/s26eprate2
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S26EPRATE2_TINY:-0}
scale=${S26EPRATE2_TIMEOUT_SCALE:-1}
# part=model:layers:seq_len:sequences a micro-batch (tests/real/test_real_campaign_s26eprate2.py restates them)
CASES="bench-small-5l640=bench-small:5:640:4 bench-small-8l448=bench-small:8:448:4 bench-small-12l256=bench-small:12:256:4 bench-small-4l1k28=bench-small:4:1280:2 mixtral-2l1k5=mixtral-slice:2:1536:2"
default_parts="$(for c in $CASES; do printf '%s ' "${c%%=*}"; done)"
parts=" ${S26EPRATE2_PARTS:-$default_parts} "
campaign=s26eprate2
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun
nvidia-smi -q -d CLOCK > "$root/clocks_s26eprate2.txt" 2>&1 || true
{ lscpu; } >> "$root/host_s26eprate2.txt" 2>&1 || true

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
    --ep-microbatches 1,2,3,4 --ep-holdout 2,3,4 --budget-s 11 --host-probe --pace-sampler
  [ "${S26EPRATE2_KEEP_TRACES:-0}" = "1" ] || rm -f "$root/$name"/pipeline_trace_*.json
done
echo "s26eprate2 done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s21ep2 (issue 13): the two-GPU EP2 MoE layer at shapes no record holds, timed and profiled per rank.
#
# Why: the twin's EP2 layer forwards are over by +9% to +12% at 4,096 and 16,384 tokens a rank
# (h200x2/ep.csv, every row held out; 2xH200 EP2 moe_layer P90 11.8%, target 10%). The profiled
# fitting rows (s14epl: 2,048 and 8,192 tokens) put the excess in the token-side memory kernels the
# twin costs twice (calibration.whole_step.ADOPT_EP_LOCAL_EXPERTS_ONLY) and in the grouped GEMMs. That
# switch's figures on ep.csv's rows are known (docs/notes/s16epa_rule.md): this campaign gives the rule
# written before it (docs/notes/s21ep2_rule.md) shapes nobody has seen, in one part:
#   ep_fresh  real/bench/ep_fresh.py on v3-slice-1l (hidden 7,168, experts 2,048 wide, top-8, one shared
#             expert), two ranks: 12,288 / 24,576 / 6,144 tokens a rank at 32 experts, 8,192 at 64 and
#             at 16 experts (skew 0), 12,288 at skew 1, 16,384 at 64 experts skew 0.5, 4,096 at 16
#             experts skew 1, 2,048 at 64 experts skew 0.5 (held out: 9 shapes x 2 precisions), then
#             s14epl's 8,192 x 32 x skew 0 (fit: this run against s14epl's host). Each: dispatch and
#             combine alone, the layer forward and backward in BF16 and FP8 (CUDA events, 10 reps,
#             host marks), and the same calls under the torch profiler on both ranks (each kernel's
#             seconds, its seconds beside an NCCL kernel, the NVML SM clock).
# Run it alone on a 2-GPU host (2xH200 asked; 2xH100 as useful: the same script, its own records):
#   bash real/campaigns/s21ep2.sh OUTDIR
# Budget: <= 150 s wall (part timeout 140 s; the section's own budget 105 s: no case starts after it;
# torchrun start and CUDA/NCCL init ~20 s). Rows are written as they are measured, so a part cut short
# keeps every case it finished. Stops cleanly (exit 0, nothing run) on fewer than 2 GPUs. Every row
# carries the GPU name, SM/memory clocks, torch/CUDA/NCCL versions (real/bench/records.py env columns).
# Outputs: OUTDIR/s21ep2/ep/{ep.csv, ep_kernels.csv, env.json}, s21ep2.log, host_s21ep2.txt.
# Env: PY (python3), S21EP2_TINY (1: CPU dry run on gloo ranks, tiny shapes), S21EP2_TIMEOUT_SCALE
# (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s21ep2.sh OUTDIR}/s21ep2
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S21EP2_TINY:-0}
scale=${S21EP2_TIMEOUT_SCALE:-1}
parts=" ep_fresh "
campaign=s21ep2
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

quick=()
[ "$tiny" = "1" ] && quick=(--quick)
mkdir -p "$root/ep"
part ep_fresh 140 "${torchrun[@]}" -m real.bench --out "$root/ep" --only ep_fresh --budget-s 105 "${quick[@]}"
echo "s21ep2 done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s22epq (issue 13): the EP2 MoE layer of the Qwen-shaped slices, timed and profiled per rank.
#
# Why: every PP2 x EP2 step of qwen2moe-mla-slice / qwen3moe-mla-slice is under-predicted inside its EP
# ops (s21pp4b: qwen2moe F +4 ms an op at stage 0 on ~19 ms with balanced routing, qwen3moe 2-3 ms,
# mixtral ~1 ms; s20epnew's 2xH100 EP2 steps qwen2moe -8%, qwen3moe -5%, mixtral -2%), and no record
# profiles an EP layer of these shapes (every kernel-level EP2 record is v3-slice-1l's). One part:
#   ep_models  real/bench/ep_models.py, two ranks: the EP2 layer of qwen2moe (60 x 1408, top-4, 4-wide
#              shared), qwen3moe (128 x 768, top-8), mixtral (8 x 14336, top-2) at 4,096 tokens a rank
#              (the pipelines' micro-batch), skew 0, then qwen3moe and qwen2moe at skew 1 (uneven rows
#              for the backward grouped GEMMs). Each: dispatch and combine alone, the layer forward and
#              backward in BF16 and FP8 (CUDA events, 10 reps, host marks), and the same calls under the
#              torch profiler on both ranks. Split `fit` (diagnostic; docs/notes/s22epq_rule.md).
# Run it alone on a 2-GPU host (2xH200 asked; 2xH100 as useful: the same script, its own records):
#   bash real/campaigns/s22epq.sh OUTDIR
# Budget: <= 90 s wall (part timeout 85 s; the section's own budget 55 s: no case starts after it;
# torchrun start and CUDA/NCCL init ~20 s). Rows are written as they are measured, so a part cut short
# keeps every case it finished. Stops cleanly (exit 0, nothing run) on fewer than 2 GPUs. Every row
# carries the GPU name, SM/memory clocks, torch/CUDA/NCCL versions (real/bench/records.py env columns).
# Outputs: OUTDIR/s22epq/ep/{ep.csv, ep_kernels.csv, env.json}, s22epq.log, host_s22epq.txt.
# Env: PY (python3), S22EPQ_TINY (1: CPU dry run on gloo ranks, tiny shapes), S22EPQ_TIMEOUT_SCALE
# (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s22epq.sh OUTDIR}/s22epq
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S22EPQ_TINY:-0}
scale=${S22EPQ_TIMEOUT_SCALE:-1}
parts=" ep_models "
campaign=s22epq
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

quick=()
[ "$tiny" = "1" ] && quick=(--quick)
mkdir -p "$root/ep"
part ep_models 85 "${torchrun[@]}" -m real.bench --out "$root/ep" --only ep_models --budget-s 55 "${quick[@]}"
echo "s22epq done $(date -u +%FT%TZ)" | tee -a "$log"

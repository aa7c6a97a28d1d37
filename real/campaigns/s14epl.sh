#!/usr/bin/env bash
# s14epl (issue 13): the EP2 MoE layer's kernels against the twin's kernel classes.
#
# Why: with s12ep's correction A (the EP forward's local layer without the sort and un-sort that
# dispatch and combine run) the 2xH200 EP2 layer cases meet their targets, but the twin's kernel
# classes are offset against the profiler's in every eager layer and step (docs/notes/s14epl_rule.md,
# fitting split: grouped GEMMs 9-15% faster in a layer than the profile's curves, which were fitted
# on CUDA-graph loops at 1,400-1,750 MHz; memory kernels 4-30% slower than the layer fit's blended
# gather_eff). The EP2 layer has no fitting split and no kernel records. This campaign measures, on
# one host in one process (real/bench/ep_kernels.py):
#   ep          the EP2 layer (v3-slice-1l, 32 experts, top-8, as ep.csv) forward and backward and
#               dispatch, timed as ep.csv is, at 2,048 and 8,192 tokens a rank (ep.csv holds 1,024,
#               4,096 and 16,384: these rows are the FITTING split), skew 0 and 1, BF16 and FP8
#   ep_kernels  the same calls under the torch profiler, both ranks: each kernel's seconds, its
#               seconds beside an NCCL kernel on the same GPU, the NVML SM clock while they ran
#   ep_grouped  the layer's two forward grouped GEMMs alone on the same received rows (CUDA graph,
#               back to back, as gemm.csv) with their clock: in-layer kernel vs the same kernel alone
# Run it alone on a 2-GPU host (2xH200 or 2xH100, the same script; both are useful):
#   bash real/campaigns/s14epl.sh OUTDIR
# One part, GPUs 0 and 1, <= 120 s in all (timeout 110 s; the section's own budget 90 s: no
# configuration starts after it). Rows are written as they are measured, so a part cut short keeps
# what it measured. Stops cleanly (exit 0, nothing run) on fewer than 2 GPUs. Every row carries the
# GPU name, SM/memory clocks, torch/CUDA/NCCL versions (real/bench/records.py env columns).
# Outputs: OUTDIR/s14epl/ep/{ep.csv, ep_kernels.csv, ep_grouped.csv, env.json}, s14epl.log, host file.
# Env: PY (python3), S14EPL_TINY (1: CPU dry run on gloo ranks, tiny shapes), S14EPL_TIMEOUT_SCALE
# (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s14epl.sh OUTDIR}/s14epl
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
tiny=${S14EPL_TINY:-0}
scale=${S14EPL_TIMEOUT_SCALE:-1}
parts=" ep_kernels "
campaign=s14epl
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

quick=()
[ "$tiny" = "1" ] && quick=(--quick)
mkdir -p "$root/ep"
part ep_kernels 110 "${torchrun[@]}" -m real.bench --out "$root/ep" --only ep_kernels --budget-s 90 "${quick[@]}"
echo "s14epl done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s14cp (issue 14): the H100's per-kernel view of the TP2 blocks at fitting sizes.
#
# Why: on the 2xH200 the fitting TP2 MoE blocks' traces (h200x2/traces_s8cp, s8cp's tp_traces part)
# split the TP2 miss by component: the MoE block's memory-bound token-side kernels (gathers,
# index_put backward, broadcast multiplies over T*K rows) run ~1.4x the twin's costing and do NOT
# shrink with TP, while its grouped GEMMs, which halve, run ~0.86x it; at TP1 the two cancel
# (-1.5..-3%), at TP2 they leave the block 7-11% short. The H100's own traces of the same blocks
# (s8cp ran them on the H100 on 2026-11-26 but they were never committed) give the H100's factors,
# measured on its GPU, not carried from the H200. Same traced cases as s8cp's part 3
# (real/bench/parallel_blocks.py TP_TRACE_CASES, fitting sizes only): MLA v2-lite 8K with and
# without SP, MoE v3-slice 2K with and without SP and 8K with SP, MLA v3-slice 8K with SP; per rank
# two profiled repetitions (host and device), and the one-GPU reference of each (rank 0).
#
# Run it alone on a 2-GPU host (2xH100 wanted; a 2xH200 run repeats h200x2/traces_s8cp):
#   bash real/campaigns/s14cp.sh OUTDIR
# One part, GPUs 0 and 1, <= 60 s in all:
#   tp_traces  real.bench --only tp_traces under torchrun (timeout 50 s, the bench's budget 30 s:
#              no case starts after it), traces into OUTDIR/s14cp/traces/, the environment (GPU
#              name, clocks, torch / CUDA / NCCL versions) into OUTDIR/s14cp/env_tp_traces.json
# A trace file is written per case and rank as the case ends, so a part cut short keeps the cases
# it finished. Stops cleanly (exit 0, nothing run) on fewer than 2 GPUs.
# Env: PY (python3), S14CP_PARTS (default "tp_traces"), S14CP_TINY (1: CPU dry run on gloo ranks,
# the tiny model), S14CP_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s14cp.sh OUTDIR}/s14cp
mkdir -p "$root/traces"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PY:-python3}
tiny=${S14CP_TINY:-0}
scale=${S14CP_TIMEOUT_SCALE:-1}
parts=" ${S14CP_PARTS:-tp_traces} "
campaign=s14cp
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

quick=()
[ "$tiny" = "1" ] && quick=(--quick)
d="$root/part_tp_traces"
mkdir -p "$d"
REAL_BENCH_TRACE_DIR="$root/traces" part tp_traces 50 "${torchrun[@]}" -m real.bench --out "$d" \
  --only tp_traces --budget-s 30 ${quick[@]+"${quick[@]}"}
[ -e "$d/env.json" ] && mv "$d/env.json" "$root/env_tp_traces.json"
rm -rf "$d"
echo "s14cp done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s17tp (issue 14): per-rank traces of the v2-lite TP2 MoE blocks at their fitting sizes.
#
# Why: the twin predicts the device-bound v2-lite TP2 MoE blocks 11-17% too fast (2xH200: held-out
# 4K -14.4%, 8K -11.1%, 8K SP -15.6%; the fitting 6K rows -13..-17% alike) while their one-GPU
# references are within 2% and the v3-slice TP2 MoE blocks within 2-7%. The only TP MoE traces
# (h200x2/traces_s8cp, h100x2/traces_s14cp) are v3-slice's: nothing shows what a v2-lite TP2 rank
# runs kernel by kernel (64 experts at F/2 = 704 over all T*6 rows, D = 2048) beside its one-GPU
# reference, nor where its device idles. This part traces them at FITTING sizes only
# (real/bench/parallel_blocks.py block_split: 3072 and 6144 are fit; 2K/4K/8K are held out and never
# traced here): MoE v2-lite 6144 with and without SP, 3072 without SP.
#
# Run it alone on a 2-GPU host (2xH200 wanted: its records hold the v2-lite fitting rows; a 2xH100
# gives that GPU's view, also useful):
#   bash real/campaigns/s17tp.sh OUTDIR
# One part, GPUs 0 and 1, <= 60 s in all:
#   tp_traces  real.bench --only tp_traces under torchrun (timeout 50 s, the bench's budget 30 s:
#              no case starts after it), per rank two profiled repetitions (host and device) of each
#              case and the one-GPU reference on rank 0, into OUTDIR/s17tp/traces/; the environment
#              (GPU name, clocks, torch / CUDA / NCCL versions) into OUTDIR/s17tp/env_tp_traces.json
# A trace file is written per case and rank as the case ends, so a part cut short keeps the cases
# it finished. Stops cleanly (exit 0, nothing run) on fewer than 2 GPUs.
# Env: PY (python3), S17TP_PARTS (default "tp_traces"), S17TP_TINY (1: CPU dry run on gloo ranks,
# the tiny model), S17TP_TIMEOUT_SCALE (1; the CPU dry run gives 4).
set -u
root=${1:?usage: s17tp.sh OUTDIR}/s17tp
mkdir -p "$root/traces"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PY:-python3}
tiny=${S17TP_TINY:-0}
scale=${S17TP_TIMEOUT_SCALE:-1}
parts=" ${S17TP_PARTS:-tp_traces} "
campaign=s17tp
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check, part(), torchrun

cases="moe:v2-lite-slice:6144:nosp,moe:v2-lite-slice:6144:sp,moe:v2-lite-slice:3072:nosp"
quick=()
if [ "$tiny" = "1" ]; then
  quick=(--quick)
  cases="moe:tiny:48:nosp,moe:tiny:48:sp"
fi
d="$root/part_tp_traces"
mkdir -p "$d"
REAL_BENCH_TRACE_DIR="$root/traces" REAL_BENCH_TRACE_CASES="$cases" part tp_traces 50 "${torchrun[@]}" \
  -m real.bench --out "$d" --only tp_traces --budget-s 30 ${quick[@]+"${quick[@]}"}
[ -e "$d/env.json" ] && mv "$d/env.json" "$root/env_tp_traces.json"
rm -rf "$d"
echo "s17tp done $(date -u +%FT%TZ)" | tee -a "$log"

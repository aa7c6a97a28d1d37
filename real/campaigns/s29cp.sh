#!/usr/bin/env bash
# s29cp: torchtitan's Llama 3.1 405B 4D CP rows (issue 14; rule docs/notes/s29cp_rule.md, committed before this ran).
# Why: the twin charges those rows the compiled ring attention's rank-meeting loss measured on the 8B block
# (s27cp, twin.costs.context_parallel.COMPILED_CP_SCHEDULE_WAIT_FRAC), borrowed for the 405B block without its
# own schedule. This measures the 405B block's own: one GPU's TP 8 slice (16 heads, one K/V head repeated,
# FFN 6656, hidden 16384; real/bench/cp_block.py MODELS), 32K positions a rank, BF16, full AC in torch.compile,
# allgather, as the 8B block was. Two parts on a two-GPU host:
#   cp2_real   the cp_block section under torchrun, CP2 (S = 64K), the 405B slice: real NCCL, every rank's
#              Chrome trace and the CUDA-event time (the method's check on this block); <= 90 s
#   sched      real/bench/cp_schedule.py --model llama3.1-405b-tp8-block: each rank's compiled schedule at
#              CP 2, 4 and 8 on a fake process group (rank r on GPU r mod 2, ranks timed two at a time, one a
#              GPU), Chrome traces and cp_schedule.csv; <= 370 s
# Run on a two-GPU host whose two GPUs run nothing else meanwhile (kernel times in the traces are the
# measurement; asked as nvidia-h200-x2; on 2x H100 it runs the same, filed by card):
#   bash real/campaigns/s29cp.sh OUTDIR
# Outputs OUTDIR/s29cp/: cp2_real/ (torch_cp*.csv, env.json), sched/ (cp_schedule.csv, traces/), traces/
# (cp2_real's per-rank traces), s29cp.log, host_s29cp.txt (nvidia-smi, topology, clocks).
# Stops cleanly (exit 0, nothing run) on fewer than two GPUs.
# Env: PY (python3), S29CP_TINY (1: the CPU dry run, two gloo ranks and the tiny block, where PyTorch's CP
# cannot run and each part records why), S29CP_TIMEOUT_SCALE (1), S29CP_PARTS ("cp2_real sched"), S29CP_CP (the
# sched part's CP degrees, "2 4 8").
set -u
root=${1:?usage: s29cp.sh OUTDIR}/s29cp
mkdir -p "$root/traces"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PY:-python3}
tiny=${S29CP_TINY:-0}
scale=${S29CP_TIMEOUT_SCALE:-1}
parts=" ${S29CP_PARTS:-cp2_real sched} "
campaign=s29cp
gpus=2
model=llama3.1-405b-tp8-block
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU check, part(), torchrun (2 ranks)
[ "$tiny" = "1" ] || { nvidia-smi -q -d CLOCK; nvidia-smi -q -d POWER; } >> "$root/host_$campaign.txt" 2>&1
quick=()
[ "$tiny" = "1" ] && quick=(--quick)

mkdir -p "$root/cp2_real" "$root/sched"
REAL_BENCH_CP_BLOCK_MODEL=$model REAL_BENCH_TRACE_DIR="$root/traces" part cp2_real 90 "${torchrun[@]}" -m real.bench \
  --out "$root/cp2_real" --only cp_block --budget-s 80 ${quick[@]+"${quick[@]}"}
part sched 370 "$PY" -m real.bench.cp_schedule --out "$root/sched" --cp ${S29CP_CP:-2 4 8} --model $model \
  --budget-s $(( 340 * scale )) ${quick[@]+"${quick[@]}"}
rm -rf "$root/sched"/sync_cp*
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

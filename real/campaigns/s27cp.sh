#!/usr/bin/env bash
# s27cp: torchtitan's 8B CP rows (issue 14; rule docs/notes/s27cp_rule.md, committed before this ran).
# Why: under torch.compile every rank of PyTorch's load-balanced ring attention traces its own graph
# (the later steps branch on the rank), Inductor places each graph's waited-at-issue collectives on its
# own, and every collective meets all ranks: s17cp's CP4 block (h200x4/cp_block) spent 36 ms of its
# forward waiting on one rank's K/V all-gather, issued before its diagonal call where the other ranks
# issued it after theirs (the twin charges the transfer, 6 ms). Two parts on a two-GPU host:
#   cp2_real   the cp_block section (real/bench/cp_block.py) under torchrun, CP2, S = 64K: real NCCL,
#              every rank's Chrome trace (the method's check: the lock-step replay of its own
#              schedules against its CUDA-event time); <= 60 s
#   sched      real/bench/cp_schedule.py: each rank's compiled schedule of the same block at CP4 and CP8
#              on a fake process group (rank r on GPU r mod 2; ranks timed two at a time, one a GPU,
#              the others idle), Chrome traces and cp_schedule.csv; <= 280 s (compiling eight ranks at
#              once, then four turns of two ranks: ~110 s at CP8, ~70 s at CP4)
# Run alone on a two-GPU host (asked as nvidia-h200-x2; on 2x H100 it runs the same, filed by card):
#   bash real/campaigns/s27cp.sh OUTDIR
# Outputs OUTDIR/s27cp/: cp2_real/ (torch_cp*.csv, env.json), sched/ (cp_schedule.csv, traces/),
# traces/ (cp2_real's per-rank traces), s27cp.log, host_s27cp.txt (nvidia-smi, topology, clocks).
# Stops cleanly (exit 0, nothing run) on fewer than two GPUs.
# Env: PY (python3), S27CP_TINY (1: the CPU dry run, two gloo ranks and the tiny block, where PyTorch's
# CP cannot run and each part records why), S27CP_TIMEOUT_SCALE (1), S27CP_PARTS ("cp2_real sched"),
# S27CP_CP (the sched part's CP degrees, "4 8").
set -u
root=${1:?usage: s27cp.sh OUTDIR}/s27cp
mkdir -p "$root/traces"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PY:-python3}
tiny=${S27CP_TINY:-0}
scale=${S27CP_TIMEOUT_SCALE:-1}
parts=" ${S27CP_PARTS:-cp2_real sched} "
campaign=s27cp
gpus=2
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU check, part(), torchrun (2 ranks)
[ "$tiny" = "1" ] || { nvidia-smi -q -d CLOCK; } >> "$root/host_$campaign.txt" 2>&1
quick=()
[ "$tiny" = "1" ] && quick=(--quick)

mkdir -p "$root/cp2_real" "$root/sched"
REAL_BENCH_TRACE_DIR="$root/traces" part cp2_real 60 "${torchrun[@]}" -m real.bench --out "$root/cp2_real" \
  --only cp_block --budget-s 50 ${quick[@]+"${quick[@]}"}
part sched 280 "$PY" -m real.bench.cp_schedule --out "$root/sched" --cp ${S27CP_CP:-4 8} --budget-s $(( 260 * scale )) \
  ${quick[@]+"${quick[@]}"}
rm -rf "$root/sched"/sync_cp*
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

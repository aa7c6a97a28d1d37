#!/usr/bin/env bash
# s29cp round 2: the compiled CP schedule of the blocks as torchtitan's CP rows ran them, with Float8 linears
# (issue 14; rule docs/notes/s29cp2_rule.md, committed before this ran). Why: s29cp found that which ranks put
# their dK/dV hand-overs after all their backward calls (the rank-meeting loss the twin charges) changes with
# the block: the 405B TP 8 slice defers at CP4 where the 8B block (s27cp) does not. s27cp and s29cp compiled
# BF16 blocks; every CP row of Table 2 and Table 6 ran torch.compile + Float8 (tensorwise) linears, whose
# casts change the graph Inductor schedules. Three parts on a two-GPU host:
#   cp2_real   the cp_block section under torchrun, CP2 (S = 64K), the 8B block with Float8 linears
#              (REAL_BENCH_CP_BLOCK_FLOAT8=1): real NCCL, every rank's trace (the method's check); <= 80 s
#   sched8b    real/bench/cp_schedule.py --float8, the 8B block, CP 2, 4 and 8 on a fake process group; <= 230 s
#   sched405   the same, the 405B TP 8 slice; <= 230 s
# Run on a two-GPU host whose two GPUs run nothing else meanwhile (asked as nvidia-h200-x2; on 2x H100 the
# same, filed by card):   bash real/campaigns/s29cp2.sh OUTDIR
# Outputs OUTDIR/s29cp2/: cp2_real/, traces/, sched8b/ and sched405/ (cp_schedule.csv, traces/), s29cp2.log,
# host_s29cp2.txt. Stops cleanly (exit 0, nothing run) on fewer than two GPUs.
# Env: PY (python3), S29CP2_TINY (1: the CPU dry run), S29CP2_TIMEOUT_SCALE (1), S29CP2_PARTS ("cp2_real sched8b
# sched405"), S29CP2_CP (the sched parts' CP degrees, "2 4 8").
set -u
root=${1:?usage: s29cp2.sh OUTDIR}/s29cp2
mkdir -p "$root/traces"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PY:-python3}
tiny=${S29CP2_TINY:-0}
scale=${S29CP2_TIMEOUT_SCALE:-1}
parts=" ${S29CP2_PARTS:-cp2_real sched8b sched405} "
campaign=s29cp2
gpus=2
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU check, part(), torchrun (2 ranks)
[ "$tiny" = "1" ] || { nvidia-smi -q -d CLOCK; nvidia-smi -q -d POWER; } >> "$root/host_$campaign.txt" 2>&1
quick=()
[ "$tiny" = "1" ] && quick=(--quick)

mkdir -p "$root/cp2_real" "$root/sched8b" "$root/sched405"
REAL_BENCH_CP_BLOCK_FLOAT8=1 REAL_BENCH_TRACE_DIR="$root/traces" part cp2_real 80 "${torchrun[@]}" -m real.bench \
  --out "$root/cp2_real" --only cp_block --budget-s 70 ${quick[@]+"${quick[@]}"}
part sched8b 230 "$PY" -m real.bench.cp_schedule --out "$root/sched8b" --cp ${S29CP2_CP:-2 4 8} \
  --model llama3.1-8b-block --float8 --budget-s $(( 210 * scale )) ${quick[@]+"${quick[@]}"}
part sched405 230 "$PY" -m real.bench.cp_schedule --out "$root/sched405" --cp ${S29CP2_CP:-2 4 8} \
  --model llama3.1-405b-tp8-block --float8 --budget-s $(( 210 * scale )) ${quick[@]+"${quick[@]}"}
rm -rf "$root"/sched*/sync_cp*
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

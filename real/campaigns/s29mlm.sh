#!/usr/bin/env bash
# s29mlm (issue 14): how far apart the held (power-capped) rates of a host's boards sit, every board under
# load at once (docs/notes/s29mlm_rule.md, committed before this ran). Why: a synchronous training job runs
# at its slowest board; the twin prices every row on one calibration card's curves. The rule's candidate
# (ADOPT_SLOWEST_BOARD_PACE) takes its spread from these records.
# One process a GPU (CUDA_VISIBLE_DEVICES=i, CUDA_DEVICE_ORDER=PCI_BUS_ID so i is NVML's index too), all
# started together: real.bench.board_spread, two BF16 GEMMs (sustained.csv's reference 8192 x 4096 x 7168,
# Megatron 462B's TP 8 fc1 4096 x 9216 x 18432), each a burst after 2 s idle then held 30 s in 1 s windows.
# Run it ALONE on its host (any other load changes the boards' power and clocks): nvidia-h200-x4 (four boards),
# else nvidia-h200-x2 (two: figures reported, no verdict by the rule). An H100 host runs the same, filed by card.
# Budget: ~15 s torch start + 2 x (2 s idle + ~1 s burst + 30 s hold) = ~85 s; timeout 150 s a board.
# Outputs OUTDIR/s29mlm/: board_spread_gpu<i>.csv (every row: board, serial, GPU name, clocks, power limit,
# driver, torch/CUDA/NCCL versions), env_gpu<i>.json, s29mlm.log, host_s29mlm.txt (nvidia-smi, topology,
# clocks, power limits).
#   bash real/campaigns/s29mlm.sh OUTDIR
# Env: PY (python3), S29MLM_TINY (1: CPU dry run, two processes, tiny shapes and holds), S29MLM_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s29mlm.sh OUTDIR}/s29mlm
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1 CUDA_DEVICE_ORDER=PCI_BUS_ID
PY=${PY:-python3}
tiny=${S29MLM_TINY:-0}
scale=${S29MLM_TIMEOUT_SCALE:-1}
campaign=s29mlm
gpus=2
parts=" boards "
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU-count check (>= 2), part()
[ "$tiny" = "1" ] || { nvidia-smi -q -d CLOCK; nvidia-smi -q -d POWER;
  nvidia-smi --query-gpu=index,name,serial,clocks.sm,clocks.max.sm,power.limit,temperature.gpu --format=csv; } \
  >> "$root/host_$campaign.txt" 2>&1
extra=()
[ "$tiny" = "1" ] && extra=(--quick)
limit=$(( 150 * scale ))
start=$(date +%s)
pids=()
for i in $(seq 0 $(( ngpu - 1 ))); do
  dev=$i
  [ "$tiny" = "1" ] && dev=""   # CPU dry run: no GPU visible
  CUDA_VISIBLE_DEVICES=$dev timeout --kill-after=5 "$limit" "$PY" -m real.bench.board_spread --out "$root" \
    --board-index "$i" ${extra[@]+"${extra[@]}"} >> "$log" 2>&1 &
  pids+=($!)
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}"
  echo "$campaign board gpu$i rc=$? wall_s=$(( $(date +%s) - start ))" | tee -a "$log"
done
[ "$tiny" = "1" ] || nvidia-smi --query-gpu=index,clocks.sm,power.draw,temperature.gpu --format=csv >> "$root/host_$campaign.txt" 2>&1
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

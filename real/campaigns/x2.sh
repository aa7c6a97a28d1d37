#!/usr/bin/env bash
# One GPU campaign on a two-GPU host (2xH100 or 2xH200): every part a branch prepared, each under
# its own time budget, then one archive for the device tool's 8-file limit.
#   bash real/campaigns/x2.sh OUTDIR [PART ...]      (default: every part below that exists)
# A part that overruns its budget is stopped; the rows it already wrote are kept.
set -u
out=${1:?usage: x2.sh OUTDIR [PART ...]}; shift
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(i14real i13pp i15engine i13pred)
declare -A budget_s=([i14real]=120 [i14cp]=70 [i13pp]=150 [i15engine]=150 [i13pred]=140)
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
mkdir -p "$out/campaign"
{
  date -u +%FT%TZ; nvidia-smi; nvidia-smi topo -m
  nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem,power.limit,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'nccl', torch.cuda.nccl.version())"
} > "$out/campaign/host.txt" 2>&1
t0=$(date +%s); total_s=${X2_TOTAL_S:-560}  # the device tool stops a command at 600 s
for part in "${parts[@]}"; do
  script=real/campaigns/$part.sh
  [ -f "$script" ] || { echo "skip $part: no $script" | tee -a "$out/campaign/parts.log"; continue; }
  start=$(date +%s)
  left_s=$(( total_s - (start - t0) - 10 ))
  limit_s=$(( ${budget_s[$part]:-60} + 10 )); [ $limit_s -gt $left_s ] && limit_s=$left_s
  [ $limit_s -lt 20 ] && { echo "skip $part: ${left_s}s left" | tee -a "$out/campaign/parts.log"; continue; }
  timeout --kill-after=5 $limit_s bash "$script" "$out/campaign" \
    > "$out/campaign/$part.log" 2>&1
  rc=$?
  echo "$part rc=$rc wall_s=$(( $(date +%s) - start ))" | tee -a "$out/campaign/parts.log"
done
tar czf "$out/campaign.tgz" -C "$out" campaign && rm -rf "$out/campaign"

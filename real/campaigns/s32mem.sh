#!/usr/bin/env bash
# s32mem (issue 14, the published memory column): the caching allocator's reserved peak beside the live peak on
# the 8B rows' own step, by recomputation mode and allocator setting, and how little headroom the step runs in
# (docs/notes/s32mem_rule.md, committed before this ran).
# Why: the published torchtitan figures are reserved_bytes.all.peak (torchtitan metrics.DeviceMemoryMonitor); the
# twin counts live tensors. Our records hold reserved / allocated peaks only for per-op SAC (eager, compiled, Float8)
# and for compiled full AC at 32K; none for a step without recomputation (the Llama 3 8K rows), eager full AC (the
# 70B / 405B rows' mode), which phase of the step sets the reserved peak, which streams hold the excess, or whether
# the step runs with the allocator capped close to its live peak (whether fits need the reserve).
# Parts, one process each, one GPU (FSDP2 over one rank), real.fsdp_memory with Table 1's shape (Llama 3.1 8B blocks,
# 2 x 8,192, flash SDPA, clip + foreach AdamW), 5 steps, per-phase peaks in every row:
#   op_e / op_n   per-op SAC, 16 blocks (6 on an 80 GB card), expandable segments on / off, segments at the end
#   none_e        no recomputation, 8 blocks (3 on an 80 GB card), expandable segments, segments at the end
#   full_e        full AC, 16 blocks (6), expandable segments, segments at the end
#   cap102_e      op_e capped (torch.cuda.set_per_process_memory_fraction) at 1.02 x op_e's live peak
#   cap102_n / cap106_n   op_n capped at 1.02 / 1.06 x op_n's live peak
# Budget: ~35 s a part (s31pub's eager part: 32 s), ~4 min; timeouts 75 s each (worst case ~9 min).
# One GPU (GPU 0; exits 0 with nothing run without one). Allocator figures do not depend on clocks, so another lane
# may use another GPU of the host. An H100 instead of an H200: run anyway, file by card (the rule judges fractions).
#   bash real/campaigns/s32mem.sh OUTDIR
# Env: PY (python3), S32MEM_TINY (1: CPU dry run, tiny shapes), S32MEM_TIMEOUT_SCALE (1),
# S32MEM_PARTS (" op_e op_n none_e full_e cap102_e cap102_n cap106_n ").
set -u
root=${1:?usage: s32mem.sh OUTDIR}/s32mem
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PY:-python3}
tiny=${S32MEM_TINY:-0}
scale=${S32MEM_TIMEOUT_SCALE:-1}
parts=${S32MEM_PARTS:-" op_e op_n none_e full_e cap102_e cap102_n cap106_n "}
campaign=s32mem
gpus=1
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU-count check, part(), torchrun (one rank)
mem_mib=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits 2>/dev/null | head -1)
big=$([ "${mem_mib:-0}" -ge 120000 ] 2>/dev/null && echo 1 || echo 0)
layers=$([ "$big" = 1 ] && echo 16 || echo 6)
layers_none=$([ "$big" = 1 ] && echo 8 || echo 3)
echo "$campaign: $layers blocks, $layers_none without recomputation (card memory ${mem_mib:-?} MiB)" | tee -a "$log"
step=(--steps 5 --seq-len 8192 --local-batch 2 --sdpa flash --segments)
if [ "$tiny" = "1" ]; then
  step=(--tiny --steps 3 --seq-len 64 --local-batch 2 --segments)
  layers=2 layers_none=2
  export CUDA_VISIBLE_DEVICES=""
else
  { nvidia-smi -q -d CLOCK; nvidia-smi -q -d POWER;
    nvidia-smi --query-gpu=index,name,clocks.sm,clocks.max.sm,clocks.mem,power.limit,power.draw,temperature.gpu \
      --format=csv; } >> "$root/host_$campaign.txt" 2>&1
fi
run() {   # run NAME ALLOC_CONF ARGS...: one part of real.fsdp_memory under that allocator setting
  local name=$1 conf=$2
  shift 2
  PYTORCH_CUDA_ALLOC_CONF=$conf part "$name" 75 "${torchrun[@]}" -m real.fsdp_memory --out "$root/$name" \
    "${step[@]}" --config "s32_$name" "$@"
}
cap() {   # cap BASE RATIO: the fraction of the GPU that is RATIO x BASE's largest steady live peak (empty on the CPU)
  python3 - "$root/$1/fsdp_memory_r0.csv" "$2" <<'EOF'   # the standard library only
import csv, sys
try:
    rows = [r for r in csv.DictReader(open(sys.argv[1])) if r["status"] == "ok" and int(r["step"]) >= 2]
    total = float(rows[0]["total_memory_bytes"] or 0)
    peak = max(float(r["peak_allocated_bytes"]) for r in rows)
    print(f"{float(sys.argv[2]) * peak / total:.6f}" if total > 0 else "")
except (OSError, IndexError, KeyError, ValueError):
    print("none")
EOF
}
capped() {   # capped NAME BASE RATIO ALLOC_CONF: BASE's part under the cap, unless BASE left no steady row
  local frac
  frac=$(cap "$2" "$3")
  [[ "$parts" == *" $1 "* ]] || return 0
  if [ "$frac" = "none" ]; then
    echo "$campaign part $1 skipped: $2 left no steady row" | tee -a "$log"
    return 0
  fi
  echo "$campaign part $1: memory fraction ${frac:-(none on the CPU)} = $3 x $2's live peak" | tee -a "$log"
  run "$1" "$4" --layers "$layers" --ac op ${frac:+--memory-fraction "$frac"}
}
E=expandable_segments:True N=expandable_segments:False   # torchtitan's run_llama_train.sh / torch's default
run op_e "$E" --layers "$layers" --ac op
run op_n "$N" --layers "$layers" --ac op
run none_e "$E" --layers "$layers_none" --ac none
run full_e "$E" --layers "$layers" --ac full
capped cap102_e op_e 1.02 "$E"
capped cap102_n op_n 1.02 "$N"
capped cap106_n op_n 1.06 "$N"
[ "$tiny" = "1" ] || nvidia-smi --query-gpu=index,name,clocks.sm,power.draw,temperature.gpu --format=csv \
  >> "$root/host_$campaign.txt" 2>&1
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

#!/usr/bin/env bash
# s29idle2 (issue 13, round 2 of s29idle): where the first and last pipeline stages' ops spend the ~1 ms a backward
# (and ~1 ms an overlapped end-stage FB pair) the twin misses. Diagnosis only: no candidate is judged on these records
# (docs/notes/s29idle2.md: the op records of round 1's set say which ops run long, not which kernels; the committed
# traces hold op spans only). This run profiles one PP2 step per configuration with every GPU activity and the host
# start of its launching CPU op (real.pipeline.probe --kernel-events), beside unprofiled timed steps with per-op host
# marks (pipeline_host.csv), so pipeline.op_components can split each end stage's B / FB into kernels per component.
# Parts (2 GPUs; timeouts 60 + 55 + 45 s <= 160 s, each with the probe's own budget 45 / 40 / 32 s):
#   dsv2-slice, mixtral-mla-slice (end-stage B ~1 ms long), qwen2moe-mla-slice (not long: the control)
#   4 layers, seq 4096, one sequence a micro-batch, BF16, pp2:zb1p:4 and pp2:dualpipev:4 (micro-batch count 4: the
#   fresh counts of a later judged set stay unseen), warm-up 2, 3 timed steps, one profiled step each.
# Every row is split fit (diagnosis records; no held-out figure is made from them). Rows are written per configuration.
# Need not run alone (no judgement; kernel durations); uses GPUs 0 and 1. Fewer than 2 GPUs: exits 0, nothing run.
# Rows carry GPU name, clocks, power limit, driver-side torch / CUDA / NCCL versions.
#   bash real/campaigns/s29idle2.sh OUTDIR
# Outputs: OUTDIR/s29idle2/<model>/{pipeline_host,pipeline_op_kernels,pipeline_kernel_events}.csv,
# env_pipeline_probe.json; s29idle2.log; host_s29idle2.txt (nvidia-smi, topology, clocks).
# Env: PY (python3), S29IDLE2_PARTS (default: every model), S29IDLE2_TINY (1: CPU dry run on gloo ranks, the tiny
# model, pp2:zb1p:2), S29IDLE2_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s29idle2.sh OUTDIR}/s29idle2
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
PY=${PY:-python3}
tiny=${S29IDLE2_TINY:-0}
scale=${S29IDLE2_TIMEOUT_SCALE:-1}
campaign=s29idle2
parts=" ${S29IDLE2_PARTS:-dsv2-slice mixtral-mla-slice qwen2moe-mla-slice} "
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the two-GPU check (exit 0 on fewer), part(), torchrun
{
  echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset} (the first two)"
  nvidia-smi --query-gpu=index,name,pci.bus_id,power.limit,clocks.max.sm,clocks.sm,clocks.mem --format=csv
  nvidia-smi -q -d CLOCK
} >> "$root/host_$campaign.txt" 2>&1
configs=pp2:zb1p:4,pp2:dualpipev:4
reps=(--warmup 2 --reps 3)
[ "$tiny" = "1" ] && configs=pp2:zb1p:2 && reps=(--warmup 1 --reps 1)
# model:part timeout s:probe budget s
for case in dsv2-slice:60:45 mixtral-mla-slice:55:40 qwen2moe-mla-slice:45:32; do
  IFS=: read -r model limit budget <<< "$case"
  shape=(--model "$model" --num-layers 4 --seq-len 4096 --mb-seqs 1)
  [ "$tiny" = "1" ] && shape=(--tiny)
  mkdir -p "$root/$model"
  part "$model" "$limit" "${torchrun[@]}" -m real.pipeline.probe --out "$root/$model" "${shape[@]}" \
    --configs "$configs" --holdout 0 --ep-holdout 0 "${reps[@]}" --profile-max-microbatches 4 --kernel-events \
    --budget-s "$budget"
done
nvidia-smi --query-gpu=index,clocks.sm,clocks.mem,power.draw,temperature.gpu --format=csv >> "$root/host_$campaign.txt" 2>&1
echo "s29idle2 done $(date -u +%FT%TZ)" | tee -a "$log"

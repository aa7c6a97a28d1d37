#!/usr/bin/env bash
# s8ppep: pipeline parallelism combined with expert parallelism, PP2 x EP2 on four GPUs of one
# host (issue 13: "PP2 with EP"; two GPUs cannot hold it, each stage would own one GPU).
# Budget: 150 s in all. Needs 4 GPUs; on fewer it writes nothing and says so.
#   bash real/campaigns/s8ppep.sh OUTDIR
# Writes OUTDIR/s8ppep/: pipeline_step.csv, pipeline_ops.csv, pipeline_trace_<schedule>.json,
# env_pipeline_pp2ep2.json (part 1), pipeline_host.csv + pipeline_op_kernels.csv (part 2), s8ppep.log.
#   part 1 (<= 95 s): PP2xEP2 under 1f1b, zb1p, dualpipev, dualpipe at 4, 8, 16 micro-batches
#                     (8 held out), the model and shapes of i13pp.sh (v2-lite-slice, 8 layers,
#                     seq 4096, one sequence per micro-batch, BF16)
#   part 2 (<= 50 s): the host/kernel probe of s7pipe.sh on PP2xEP2 at 4 micro-batches
# Env: PY (python), S8PPEP_ARGS (appended to every run; "--tiny --microbatches 4" for the CPU dry
# run), S8PPEP_NPROC (4), S8PPEP_PROBE_ARGS (appended to the probe; "--tiny" on CPU).
set -u
out=${1:?usage: s8ppep.sh OUTDIR}/s8ppep
mkdir -p "$out"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
extra=${S8PPEP_ARGS:-}
probe_extra=${S8PPEP_PROBE_ARGS:-}
nproc=${S8PPEP_NPROC:-4}
log="$out/s8ppep.log"
if [ -z "$extra" ]; then
  ngpu=$("$PY" -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
  [ "$ngpu" -ge 4 ] || { echo "s8ppep: $ngpu GPUs, needs 4: nothing run" | tee -a "$log"; exit 0; }
fi
common=(--model v2-lite-slice --num-layers 8 --seq-len 4096 --mb-seqs 1 --precision bf16
        --warmup 2 --min-time-s 1.0 --reps-min 3 --reps-max 8)
start=$(date +%s)
# shellcheck disable=SC2086
timeout --kill-after=5 95 "$PY" -m torch.distributed.run --standalone --nproc-per-node "$nproc" -m real.pipeline \
  --out "$out" "${common[@]}" --layouts pp2ep2 --schedules 1f1b,zb1p,dualpipev,dualpipe \
  --microbatches 4,8,16 --holdout 8 --trace-microbatches 8 --budget-s 70 $extra >> "$log" 2>&1
echo "s8ppep part pp2ep2 rc=$? wall_s=$(( $(date +%s) - start ))" | tee -a "$log"
start=$(date +%s)
# shellcheck disable=SC2086
timeout --kill-after=5 50 "$PY" -m torch.distributed.run --standalone --nproc-per-node "$nproc" -m real.pipeline.probe \
  --out "$out" --model v2-lite-slice --num-layers 8 --seq-len 4096 --mb-seqs 1 --warmup 2 --reps 3 \
  --configs pp2ep2:1f1b:4,pp2ep2:zb1p:4,pp2ep2:dualpipev:4 --budget-s 35 $probe_extra >> "$log" 2>&1
echo "s8ppep part probe rc=$? wall_s=$(( $(date +%s) - start ))" | tee -a "$log"

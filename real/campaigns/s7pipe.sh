#!/usr/bin/env bash
# s7pipe (issue 13: pipeline per-rank idle and the EP step), on the 2-GPU host: where each
# pipeline op's time goes, per rank (real/pipeline/probe.py under torchrun, both GPUs):
#   pipeline_host.csv        every op's stream marks (CUDA events) beside the host's issue marks
#                            (when the host began / finished issuing it): the host's lead over
#                            the GPU op by op, the first forward of a step, EP's synchronising
#                            dispatch
#   pipeline_op_kernels.csv  one profiled step per configuration: every op's kernels (calls, GPU s)
# Configurations (v2-lite-slice x 8 layers, seq 4096, one sequence per micro-batch, BF16, as
# i13pp): PP2 zb1p / dualpipev / 1f1b / dualpipe at 4 micro-batches and dualpipev at 16 (fit
# split), EP2 (pp 1, dp 2) at 1 and 4 (fit split); warm-up 2, 3 timed steps, and 1 profiled step
# for each configuration of at most 4 micro-batches.
# Budget 140 s: --budget-s 100 (no configuration starts later) inside `timeout 140`; rows are
# written per configuration, so a cut-short run keeps what it measured.
#   bash real/campaigns/s7pipe.sh OUTDIR
# Writes OUTDIR/s7pipe/{pipeline_host.csv,pipeline_op_kernels.csv,env_pipeline_probe.json,s7pipe.log};
# copy the CSVs and the env json to calibration/measurements/<gpu>x2/.
# Env: PY (python, default python3), S7PIPE_ARGS (appended, e.g. "--tiny --configs pp2:zb1p:4"
# for the CPU dry run).
set -u
out=${1:?usage: s7pipe.sh OUTDIR}/s7pipe
mkdir -p "$out"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
PY=${PY:-python3}
extra=${S7PIPE_ARGS:-}
log="$out/s7pipe.log"
start=$(date +%s)
echo "s7pipe campaign $(date -u +%FT%TZ)" | tee -a "$log"
# shellcheck disable=SC2086
timeout --kill-after=5 140 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m real.pipeline.probe \
  --out "$out" --model v2-lite-slice --num-layers 8 --seq-len 4096 --mb-seqs 1 --warmup 2 --reps 3 \
  --budget-s 100 $extra >> "$log" 2>&1
echo "s7pipe probe rc=$? wall_s=$(( $(date +%s) - start ))" | tee -a "$log"

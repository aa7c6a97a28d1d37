#!/usr/bin/env bash
# s20tt (issue 14, torchtitan's 405B rows): torch's micro-pipelined TP fused ops beside their parts,
# re-measured on two GPUs with every operand filled, as the fitting rows of one term.
#
# Why: docs/notes/s20tt.md finds the rows the twin reads too fast share TP 8 with its collectives
# credited as overlapped, and our own fused-op records (h100x2 / h100x4 async_tp.csv) show the fused
# op paying part of its collective beyond its GEMM where the GEMM is the longer (w1, w2), which the
# twin's ring model (comm.pipelined_exposed_s) does not. The 70B rows that fit such a term (s9tt,
# TP2) timed their all-gather GEMM alone on an unfilled buffer (s10atp), so they cannot size it;
# real.bench's async_tp section fills every operand now. docs/notes/s20tt_rule.md says what is
# fitted from these rows and how it is judged.
# Parts (each under `timeout`; real.bench writes each row as it is timed):
#   x2   real.bench --only async_tp,async_tp_405b on 2 ranks (GPUs 0-1): the 70B TP2 slices (fit) and
#        the 405B ones (held out), then the 405B TP8-chunk shapes at TP2 (held out): GEMM alone,
#        NCCL collective alone, in sequence, fused (symmetric memory), the partials' reduction, a
#        peer pull alone and beside the GEMM                          -> OUTDIR/s20tt/x2/async_tp.csv
# Budget: <= 100 s of wall (section budget 60 s, timeout 90 s).
# Every row carries gpu_name, clocks, power, torch/CUDA/NCCL versions, num_gpus (real.bench.records).
# Exits 0 with nothing run on fewer than 2 GPUs. NVLink SHARP (multicast) off, as every campaign.
# 2xH100 is the kind the rule fits from; a 2xH200 run is recorded but is a check only (rule).
#   bash real/campaigns/s20tt.sh OUTDIR
# Env: PY (python3), S20TT_TINY (1: CPU dry run on gloo ranks, --quick sizes), S20TT_TIMEOUT_SCALE (1).
set -u
root=${1:?usage: s20tt.sh OUTDIR}/s20tt
mkdir -p "$root"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=1
PY=${PY:-python3}
tiny=${S20TT_TINY:-0}
scale=${S20TT_TIMEOUT_SCALE:-1}
parts=" x2 "
campaign=s20tt
gpus=2
. "$(dirname "$0")/two_gpu_parts.sh"   # log, host file, the GPU-count check, part()
quick=()
[ "$tiny" = "1" ] && quick=(--quick)
[ "$tiny" = "1" ] && export CUDA_VISIBLE_DEVICES=""   # gloo ranks on the CPU
nvidia-smi --query-gpu=index,name,clocks.sm,clocks.max.sm,clocks.mem,power.limit --format=csv \
  >> "$root/host_$campaign.txt" 2>&1 || true
mkdir -p "$root/x2"
part x2 90 "$PY" -m torch.distributed.run --standalone --nproc-per-node 2 -m real.bench --only async_tp,async_tp_405b \
  ${quick[@]+"${quick[@]}"} --out "$root/x2" --budget-s 60
echo "$campaign done $(date -u +%FT%TZ)" | tee -a "$log"

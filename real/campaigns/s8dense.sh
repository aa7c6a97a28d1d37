#!/usr/bin/env bash
# Issue 14 (session s8dense): dense transformer blocks on ONE GPU (GPU 0), at the per-GPU shapes of
# the published runs beyond DeepSeek (torchtitan's Llama 3.1 8B / 70B-TP8 / 405B-TP8 slices,
# Megatron-LM's GPT sizes as their TP slices), so the twin's dense-block costs can be checked
# against a measured dense block (real/ had only DeepSeek-style MoE/MLA layers):
#   block      block_fwd / block_fwd_bwd of one LlamaBlock / GPTBlock (real/dense.py), SDPA flash
#              (FA2), and cuDNN on the 8B rows; seq 2K..32K for the 8B;
#   head       final norm + output projection + FP32 cross-entropy at 128,256 / 131,072 vocabularies;
#   attention  the SDPA call alone per shape (and 8B heads at 64K / 128K), backends flash, cudnn and
#              efficient each timed separately (the FA2-vs-cuDNN ratio, measured), and enable_gqa;
#   compile    torch.compile'd 8B (2 x 8K) and GPT 1.7B blocks, where time is left.
# One profiled repetition of every config gives its kernels (dense_kernels.csv). Split: every
# Llama 70B-TP8 and GPT 70B-TP8 row held out (real/bench/dense_block.py HOLDOUT_MODELS).
# Budget: one process, its parts under --budget-s 125 (each part ends when its share is spent;
# rows flushed one by one), inside `timeout 150`. The two-GPU host runs nothing more: this is a
# one-GPU campaign (on a 2-GPU host it uses GPU 0 only).
# Writes OUTDIR/s8dense/{dense_block,dense_kernels}.csv, env.json, log.txt.
#   bash real/campaigns/s8dense.sh OUTDIR         (S8DENSE_QUICK=1: tiny shapes, a CPU dry run)
set -u
OUT="${1:?usage: real/campaigns/s8dense.sh OUTDIR}/s8dense"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
PY=${PYTHON:-python3}
QUICK=()
[ "${S8DENSE_QUICK:-0}" = "1" ] && QUICK=(--quick)
{
  echo "s8dense campaign $(date -u +%FT%TZ) on GPU ${CUDA_VISIBLE_DEVICES} ($(nvidia-smi -L 2>/dev/null | wc -l) GPUs on the host)"
  timeout -k 5 150 "$PY" -m real.bench.dense_block --out "$OUT" --budget-s 125 ${QUICK[@]+"${QUICK[@]}"}
  echo "dense_block exit $? at $(date -u +%FT%TZ)"
} 2>&1 | grep -v "SyncActivityProfilerHandler" | tee "$OUT/log.txt"

#!/usr/bin/env bash
# A fresh pre-registered run for session s23hrate (issue 13; docs/notes/s23hrate_rule.md): s22host2's protocol
# (real/bench/host_steps.py: the device synchronised before every timed step, control / probed steps alternating, then
# 29 steps issued back to back after each decode record) on two models no prefill/decode record holds. Why: the
# per-call host term (calibration.op_host_rate, ADOPT_OP_HOST_RATE: a step's host time per kernel is the fitting
# ratio x probe x (0.80 + 15.3 / its ops), fitted on the fitting layers' repetitions only) is judged on a run no session
# has seen. Cases: tiny-gqa (GQA + MoE at a CPU size: ~130 ops a step, factor ~0.92) and megatron-gpt-1.7b (dense,
# 24 layers, learned positions: ~750 ops, factor ~0.82), prompts 384 and 768, 64 generated, prefill batches 1,4,
# decode batches 8,32, BF16. The twin's predictions (plain, back-to-back step-input grid, the candidate's factors) were
# committed before this ran (calibration/measurements/prereg/s23hrate_*); compared by
# `python -m calibration.prereg compare-op-rate --registration s23hrate`.
# One part (the cold process: the first Python process on the machine), <= 70 s wall; one GPU (the first of
# CUDA_VISIBLE_DEVICES); no GPU: exits 0 having run nothing. Budget <= 75 s a GPU.
# Outputs OUTDIR/s23hrate/cold/: model.csv (prefill, decode: the probed steps), serve_steps.csv (every step and fitting
# repetition: block, probe, event and host seconds), host_dispatch.csv (infer, split fit), serve_kernels.csv,
# step_kernels.csv, env.json (GPU name, clocks, torch/CUDA versions; every row carries GPU name and versions);
# OUTDIR/s23hrate/gpu.txt (nvidia-smi name, power limit, clocks; uptime; nproc), log.txt.
#   bash real/campaigns/s23hrate.sh OUTDIR   (S23HRATE_QUICK=1: the tiny model on the CPU, a dry run;
#   S23HRATE_QUICK_GPUS=0: the dry run as a host without a GPU)
set -u
OUT="${1:?usage: real/campaigns/s23hrate.sh OUTDIR}/s23hrate"
CASES="tiny-gqa:384:64:1,4:8,32;tiny-gqa:768:64:1,4:8,32;megatron-gpt-1.7b:384:64:1,4:8,32;megatron-gpt-1.7b:768:64:1,4:8,32"
. "$(dirname "$0")/host_steps_cold.sh"
host_steps_cold s23hrate

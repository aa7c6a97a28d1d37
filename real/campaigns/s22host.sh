#!/usr/bin/env bash
# A fresh pre-registered run for session s22host (issue 13; docs/notes/s22host_rule.md): prefill and decode of two
# models no prefill/decode record holds, every timed step beside its own probe as s21host2 (section host_steps,
# real/bench/host_steps.py: the device synchronised before every timed step, control / probed steps alternating),
# then 29 steps issued back to back after each decode record (block back_to_back, as s21host2b). Why: s21host2b showed
# that a synchronised step pays the GPU work still queued when its host returns (the tail: 0.3-0.9 ms on the mixtral
# slices' grouped expert GEMMs) which back-to-back steps hide; the twin's synchronised window (ADOPT_SYNCED_STEPS) is
# judged here on models never served. Cases: v3-slice-1l (V3's MoE layer, 32 routed experts + 1 shared, MLA) and
# bench-small (4 small MLA layers), prompts 512 and 1024, 64 generated, prefill batches 1,4, decode batches 4,32, BF16.
# The twin's predictions (plain, step-input back-to-back grid, synchronised grid) were committed before this ran
# (calibration/measurements/prereg/s22host_*); compared by `python -m calibration.prereg compare --registration s22host`.
# One part (the cold process: the first Python process on the machine), <= 70 s wall; one GPU (the first of
# CUDA_VISIBLE_DEVICES); no GPU: exits 0 having run nothing. Budget <= 75 s a GPU.
# Outputs OUTDIR/s22host/cold/: model.csv (prefill, decode: the probed steps), serve_steps.csv (every step and fitting
# repetition: block, probe, event and host seconds), host_dispatch.csv (infer, split fit), serve_kernels.csv,
# step_kernels.csv, env.json (GPU name, clocks, torch/CUDA versions; every row carries GPU name and versions);
# OUTDIR/s22host/gpu.txt (nvidia-smi name, power limit, clocks; uptime; nproc), log.txt.
#   bash real/campaigns/s22host.sh OUTDIR   (S22HOST_QUICK=1: the tiny models on the CPU, a dry run;
#   S22HOST_QUICK_GPUS=0: the dry run as a host without a GPU)
set -u
OUT="${1:?usage: real/campaigns/s22host.sh OUTDIR}/s22host"
CASES="v3-slice-1l:512:64:1,4:4,32;v3-slice-1l:1024:64:1,4:4,32;bench-small:512:64:1,4:4,32;bench-small:1024:64:1,4:4,32"
. "$(dirname "$0")/host_steps_cold.sh"
host_steps_cold s22host

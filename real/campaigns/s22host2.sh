#!/usr/bin/env bash
# A fresh pre-registered run for session s22host2 (issue 13; docs/notes/s22host2_rule.md): s22host's protocol
# (real/campaigns/s22host.sh: section host_steps, real/bench/host_steps.py: the device synchronised before every timed
# step, control / probed steps alternating, then 29 steps issued back to back after each decode record) on two models
# no prefill/decode record holds. Why: s22host's two switches (ADOPT_SYNCED_STEPS: a synchronised step pays the GPU
# tail; ADOPT_DECODE_OCCUPANCY: decode prices only the experts uniform routing hits) were judged on rows already seen;
# here they are judged on a fresh run only. Cases: llama3-8b (GQA, dense: Meta-Llama-3-8B's shapes, 32 layers, the LM
# head last) and tiny (MLA, every V3 feature at a CPU size: host-bound, no GPU tail), prompts 512 and 1024, 64
# generated, prefill batches 1,4, decode batches 4,32, BF16. The twin's predictions (plain, back-to-back step-input
# grid, synchronised grid, synchronised + occupancy grid) were committed before this ran
# (calibration/measurements/prereg/s22host2_*); compared by `python -m calibration.prereg compare --registration s22host2`.
# One part (the cold process: the first Python process on the machine), <= 70 s wall; one GPU (the first of
# CUDA_VISIBLE_DEVICES); no GPU: exits 0 having run nothing. Budget <= 75 s a GPU.
# Outputs OUTDIR/s22host2/cold/: model.csv (prefill, decode: the probed steps), serve_steps.csv (every step and fitting
# repetition: block, probe, event and host seconds), host_dispatch.csv (infer, split fit), serve_kernels.csv,
# step_kernels.csv, env.json (GPU name, clocks, torch/CUDA versions; every row carries GPU name and versions);
# OUTDIR/s22host2/gpu.txt (nvidia-smi name, power limit, clocks; uptime; nproc), log.txt.
#   bash real/campaigns/s22host2.sh OUTDIR   (S22HOST2_QUICK=1: the tiny model on the CPU, a dry run;
#   S22HOST2_QUICK_GPUS=0: the dry run as a host without a GPU)
set -u
OUT="${1:?usage: real/campaigns/s22host2.sh OUTDIR}/s22host2"
CASES="llama3-8b:512:64:1,4:4,32;llama3-8b:1024:64:1,4:4,32;tiny:512:64:1,4:4,32;tiny:1024:64:1,4:4,32"
. "$(dirname "$0")/host_steps_cold.sh"
host_steps_cold s22host2

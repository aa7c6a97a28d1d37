#!/usr/bin/env bash
# s29dec2 (issue 13, round 2 of s29dec; docs/notes/s29dec2_rule.md): decode's host cost per kernel actually launched.
# s29dec's probed harness (real/bench/host_steps.py, section host_steps) on fresh shapes: every timed step beside its
# own host probe, then per record one profiled decode step (serve_kernels.csv `kernels`: the kernels the step launches
# at that shape, split-K reduces included: the candidate's fitting count) and one aten-counted step; predictions
# calibration/measurements/prereg/s29dec2_predictions.json (calibration/s29dec2.py), committed before the run.
# One part, one GPU (the first the caller gives; GPU 0 where unset), the cold process: the fitting layer repetitions
# (v3-slice-1l infer, each after its own 3 ms launch probe), then each record's steps alternating control / probed.
# Cases (calibration/s29dec2.py CASES, in order; a test holds them equal): llama3-8b-slice p2048, dsv2-slice p2048,
# phi35moe-slice p1024, olmoe-slice p1024, mixtral-slice p1024 (new), 64 generated, decode batches 4, 16, 32;
# 5 prefill and 15 decode records, BF16.
# Must run alone on the host (the host's speed is what is measured). Budget: one `timeout` of 150 s, expected ~60 s.
# Outputs OUTDIR/s29dec2/cold/: model.csv, serve_steps.csv, host_dispatch.csv, serve_kernels.csv, step_kernels.csv,
# env.json (GPU name, clocks, power, torch/CUDA versions in every row); OUTDIR/s29dec2/host_s29dec2.txt (nvidia-smi,
# clocks, topology, CPU, uptime), s29dec2.log.
# The part itself is real/campaigns/cold_host_steps.sh (the decode campaigns' one script since s31ci; this one's
# outputs, timeout and host record as before).
#   bash real/campaigns/s29dec2.sh OUTDIR
# Env: PY (python3), S29DEC2_TINY (1: CPU dry run, the tiny model), S29DEC2_TINY_GPUS (the dry run's GPU count, 1),
# S29DEC2_TIMEOUT_SCALE (1).
set -u
CASES="llama3-8b-slice:2048:64:2:4,16,32;dsv2-slice:2048:64:4:4,16,32;phi35moe-slice:1024:64:4:4,16,32;olmoe-slice:1024:64:4:4,16,32;mixtral-slice:1024:64:2:4,16,32"
exec bash "$(dirname "$0")/cold_host_steps.sh" s29dec2 "$CASES" "${1:?usage: real/campaigns/s29dec2.sh OUTDIR}"

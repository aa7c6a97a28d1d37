#!/usr/bin/env bash
# s30dec (issue 13, round 3 of s29dec; docs/notes/s30dec_rule.md): a probed decode step as the run issues it.
# s29dec's probed harness (real/bench/host_steps.py, section host_steps) on fresh shapes: every timed step beside its
# own host probe, then per decode record one profiled step (serve_kernels.csv `kernels`: the kernels the step launches
# at that shape, the candidate's fitting count) and one aten-counted step; predictions
# calibration/measurements/prereg/s30dec_predictions.json (calibration/s30dec.py), committed before the run.
# One part, one GPU (the first the caller gives; GPU 0 where unset), the cold process: the fitting layer repetitions
# (v3-slice-1l infer, each after its own 3 ms launch probe), then each record's steps alternating control / probed.
# Cases (calibration/s30dec.py CASES, in order; a test holds them equal): llama3-8b-slice p768, dsv2-slice p768,
# phi35moe-slice p1280, olmoe-slice p1280, mixtral-slice p768, v2-lite-slice p1280 (no host_steps folder holds it);
# 64 generated, prefill batch 3, decode batches 6, 12, 40; 6 prefill and 18 decode records, BF16.
# Must run alone on the host, as the lease's first command (the host's speed is what is measured). Budget: one
# `timeout` of 150 s, expected ~50 s.
# Outputs OUTDIR/s30dec/cold/: model.csv, serve_steps.csv, host_dispatch.csv, serve_kernels.csv, step_kernels.csv,
# env.json (GPU name, clocks, power, torch/CUDA versions in every row); OUTDIR/s30dec/host_s30dec.txt (nvidia-smi,
# clocks, topology, CPU, uptime), s30dec.log.
# The part itself is real/campaigns/cold_host_steps.sh (the decode campaigns' one script since s31ci; this one's
# outputs, timeout and host record as before).
#   bash real/campaigns/s30dec.sh OUTDIR
# Env: PY (python3), S30DEC_TINY (1: CPU dry run, the tiny model), S30DEC_TINY_GPUS (the dry run's GPU count, 1),
# S30DEC_TIMEOUT_SCALE (1).
set -u
CASES="llama3-8b-slice:768:64:3:6,12,40;dsv2-slice:768:64:3:6,12,40;phi35moe-slice:1280:64:3:6,12,40;olmoe-slice:1280:64:3:6,12,40;mixtral-slice:768:64:3:6,12,40;v2-lite-slice:1280:64:3:6,12,40"
exec bash "$(dirname "$0")/cold_host_steps.sh" s30dec "$CASES" "${1:?usage: real/campaigns/s30dec.sh OUTDIR}"

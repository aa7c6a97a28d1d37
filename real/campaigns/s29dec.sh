#!/usr/bin/env bash
# s29dec (issue 13; docs/notes/s29dec_rule.md): decode and prefill on a fresh lease, every timed step beside its own
# host probe, judged blind against predictions committed before the run (calibration/s29dec.py, predictions
# calibration/measurements/prereg/s29dec_predictions.json: a function of this run's probes only).
# Why: s28blind's decode rows (host-paced) missed issue 13 (7.9% / 12.0%) because the lease's host speed per op moved
# -19..+34% between leases and its harness took no probe; the adopted ADOPT_STEP_HOST_INPUT path needs one.
# One part, one GPU (the first the caller gives; GPU 0 where unset), the cold process (the first Python process of the
# campaign): section host_steps (real/bench/host_steps.py): the fitting layer repetitions (v3-slice-1l infer, each
# after its own 3 ms launch probe), then each record's timed steps alternating control / probed (the device
# synchronised before each), a profiled and an aten-counted decode step, then 29 steps issued back to back (reported).
# Cases (calibration/s29dec.py CASES, in order; a test holds them equal): llama3-8b-slice, dsv2-slice, phi35moe-slice,
# olmoe-slice, prompts 1024 / 2048, 64 generated, decode batches 2, 8, 24, 48; 6 prefill and 16 decode records, BF16.
# Must run alone on the host (the host's speed is what is measured). Budget: one `timeout` of 150 s, expected ~60 s.
# Outputs OUTDIR/s29dec/cold/: model.csv (prefill, decode: the probed steps; GPU name, clocks, power, torch/CUDA
# versions in every row), serve_steps.csv, host_dispatch.csv, serve_kernels.csv, step_kernels.csv, env.json;
# OUTDIR/s29dec/host_s29dec.txt (nvidia-smi, clocks, topology, CPU, uptime), s29dec.log.
# The part itself is real/campaigns/cold_host_steps.sh (the decode campaigns' one script since s31ci; this one's
# outputs, timeout and host record as before).
#   bash real/campaigns/s29dec.sh OUTDIR
# Env: PY (python3), S29DEC_TINY (1: CPU dry run, the tiny model), S29DEC_TINY_GPUS (the dry run's GPU count, 1),
# S29DEC_TIMEOUT_SCALE (1).
set -u
CASES="llama3-8b-slice:1024:64:4:2,8,24,48;dsv2-slice:1024:64:2,8:2,8,24,48;phi35moe-slice:2048:64:2:2,8,24,48;olmoe-slice:2048:64:2,8:2,8,24,48"
exec bash "$(dirname "$0")/cold_host_steps.sh" s29dec "$CASES" "${1:?usage: real/campaigns/s29dec.sh OUTDIR}"

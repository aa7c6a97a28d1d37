#!/usr/bin/env bash
# s30dec2 (issue 13: a second fresh lease for the adopted decode pricing, a blind confirmation;
# docs/notes/s30dec2_rule.md): s30dec's part unchanged (real/campaigns/cold_host_steps.sh) on fresh cases, its
# outputs under OUTDIR/s30dec2/.
# Cases (calibration/s30dec2.py CASES, in order; a test holds them equal): llama3-8b-slice p2560, dsv2-slice p512,
# phi35moe-slice p512, olmoe-slice p2560, mixtral-slice p2560, v2-lite-slice p512; 64 generated, prefill batch 3,
# decode batches 3, 20, 56: 6 prefill and 18 decode records, BF16. Predictions
# calibration/measurements/prereg/s30dec2_predictions.json, committed before the run.
# Must run alone on the host, as a fresh lease's first command, GPU 0 (the host's speed is what is measured).
# Budget: one `timeout` of 150 s, expected ~60 s.
# Outputs OUTDIR/s30dec2/cold/ (model.csv, serve_steps.csv, host_dispatch.csv, serve_kernels.csv, step_kernels.csv,
# env.json), OUTDIR/s30dec2/host_s30dec2.txt, s30dec2.log.
#   bash real/campaigns/s30dec2.sh OUTDIR
# Env: PY (python3), S30DEC2_TINY (1: CPU dry run, the tiny model), S30DEC2_TINY_GPUS (the dry run's GPU count, 1),
# S30DEC2_TIMEOUT_SCALE (1).
set -u
CASES="llama3-8b-slice:2560:64:3:3,20,56;dsv2-slice:512:64:3:3,20,56;phi35moe-slice:512:64:3:3,20,56;olmoe-slice:2560:64:3:3,20,56;mixtral-slice:2560:64:3:3,20,56;v2-lite-slice:512:64:3:3,20,56"
exec bash "$(dirname "$0")/cold_host_steps.sh" s30dec2 "$CASES" "${1:?usage: real/campaigns/s30dec2.sh OUTDIR}"

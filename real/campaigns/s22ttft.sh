#!/usr/bin/env bash
# real/campaigns/s21srvnew.sh at new rates and fresh seeds (issue 15, branch s22ttft; one GPU, about 70 s (s21srvnew2: 68 s), hard
# cap 3 x 48 s): plans gpu1-s22-qwen3moe, gpu1-s22-qwen2moe, gpu1-s22-mixtral (real/serve/plans.py S22_PLANS: the s21srvnew
# models, engine and length mix at Poisson 16/s and 32/s and a closed loop of 24, seeds 61-63, run names n22-*), the
# records that judge docs/notes/s22ttft_rule.md (the predictions of both settings of
# calibration.serve_load_validation.ADOPT_WARM_PASS_COVERS_BUDGET registered before this ran:
# calibration/measurements/prereg/s22ttft_predictions.csv).
#   real/campaigns/s22ttft.sh OUTDIR
# Writes OUTDIR/s22ttft/<model>/serve_{load,requests,iterations}.csv + env.json, host.txt and log.txt.
# CPU dry run: as s21srvnew.sh's (S21_DEVICE=cpu S21_PLANS=tiny-new S21_PART_S=60).
S21_NAME=s22ttft S21_PLANS=${S21_PLANS:-gpu1-s22-qwen3moe gpu1-s22-qwen2moe gpu1-s22-mixtral} \
  exec bash "$(dirname "$0")/s21srvnew.sh" "$@"

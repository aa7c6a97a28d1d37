#!/usr/bin/env bash
# real/campaigns/s21srvnew.sh again with fresh seeds (issue 15, branch s21srvnew; one GPU, about 75 s, budget
# 150 s): plans gpu1-new2-qwen3moe, gpu1-new2-qwen2moe, gpu1-new2-mixtral (real/serve/plans.py S21B_PLANS: the
# s21srvnew configurations, seeds 51-53, run names n21b-*), the records that judge docs/notes/s21srvnew2_rule.md
# (the predictions of both settings of twin.serving.timing.ADOPT_LAYER_SCALED_ENGINE registered before this ran:
# calibration/measurements/prereg/s21srvnew2_predictions.csv).
#   real/campaigns/s21srvnew2.sh OUTDIR
# Writes OUTDIR/s21srvnew2/<model>/serve_{load,requests,iterations}.csv + env.json, host.txt and log.txt.
# CPU dry run: as s21srvnew.sh's (S21_DEVICE=cpu S21_PLANS=tiny-new S21_PART_S=60).
S21_NAME=s21srvnew2 S21_PLANS=${S21_PLANS:-gpu1-new2-qwen3moe gpu1-new2-qwen2moe gpu1-new2-mixtral} \
  exec bash "$(dirname "$0")/s21srvnew.sh" "$@"

#!/usr/bin/env bash
# real/campaigns/s21srvnew.sh with fresh seeds (issue 15, branch s23closed; one GPU, about 70 s as s22ttft's 62-72 s,
# hard cap 3 x 48 s): plans gpu1-s23c-qwen3moe, gpu1-s23c-qwen2moe, gpu1-s23c-mixtral (real/serve/plans.py S23C_PLANS: the
# s21srvnew models, engine and length mix at Poisson 24/s and closed loops of 16 and 24, seeds 71-73, run names n23-*),
# (Ran at 1187cd8, 00:34 UTC, under the plan names gpu1-s23-*; renamed gpu1-s23c-* at the merge beside s23srvh's plans.)
# fresh held-out records that judge docs/notes/s23closed_rule.md's third candidate (the closed loops' start: the
# score term at the model's head-layers and a one-GPU eager iteration's launch floor), stated before this ran.
#   real/campaigns/s23closed.sh OUTDIR
# Writes OUTDIR/s23closed/<model>/serve_{load,requests,iterations}.csv + env.json (GPU name, clocks, torch / CUDA /
# NCCL versions), host.txt and log.txt. Exits 0 doing nothing without a GPU.
# CPU dry run: S21_DEVICE=cpu S21_PLANS=tiny-new S21_PART_S=60 (tests/real/test_real_campaign_s23closed.py).
S21_NAME=s23closed S21_PLANS=${S21_PLANS:-gpu1-s23c-qwen3moe gpu1-s23c-qwen2moe gpu1-s23c-mixtral} \
  exec bash "$(dirname "$0")/s21srvnew.sh" "$@"

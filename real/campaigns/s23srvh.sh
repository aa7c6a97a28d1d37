#!/usr/bin/env bash
# real/campaigns/s21srvnew.sh at new rates and fresh seeds, each run's load preceded by the pause probe (issue 15,
# branch s23srvh; one GPU, about 95 s (s22ttft: 62-72 s, plus 9 pause probes of ~2.5 s), hard cap 3 x 48 s): plans
# gpu1-s23-qwen3moe, gpu1-s23-qwen2moe, gpu1-s23-mixtral (real/serve/plans.py S23_PLANS: the s21srvnew models, engine
# and length mix at Poisson 12/s and 28/s and a closed loop of 20, seeds 71-73, run names n23-*), with
# --pause-probe 2 (real/serve/hostspeed.py pause_probe: 2 s of eager launch chains right before each run's load,
# the chains 2 ms or more over their median kept as the host's pauses, pause_* columns of serve_load.csv): the
# records that judge docs/notes/s23srvh_rule.md (ADOPT_GRAPH_DECODE_HOST_UNSCALED, ADOPT_HOST_STALLS).
#   real/campaigns/s23srvh.sh OUTDIR
# Writes OUTDIR/s23srvh/<model>/serve_{load,requests,iterations}.csv + env.json (GPU name, clocks, torch / CUDA /
# NCCL versions in every row and env file), host.txt and log.txt. Exits 0 doing nothing without a GPU.
# CPU dry run: S21_DEVICE=cpu S21_PLANS=tiny-new S21_PART_S=60 (tests/real/test_real_campaign_s23srvh.py).
S21_NAME=s23srvh S21_PLANS=${S21_PLANS:-gpu1-s23-qwen3moe gpu1-s23-qwen2moe gpu1-s23-mixtral} \
  S21_EXTRA="--pause-probe ${S23_PAUSE_S:-2}" exec bash "$(dirname "$0")/s21srvnew.sh" "$@"

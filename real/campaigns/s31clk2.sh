#!/usr/bin/env bash
# s31clk2 (issue 13, round 2): a fresh PP2 set judging the per-rank clock priced from each kernel class's reference
# clock (pipeline.ADOPT_RANK_REF_CLOCK, calibration.rank_clock; docs/notes/s31clk2_rule.md, committed before this runs).
# real/campaigns/s31clk.sh at this round's cases (not a copy): dsv2-slice (PP records hold 4 / 6 / 10 micro-batches),
# v2-lite-slice (no PP record), qwen3moe-mla-slice (PP2 records hold 4 / 8), 4 layers, seq 4096, one sequence a
# micro-batch, BF16, every schedule (1f1b, zb1p, dualpipev, dualpipe) at 8 and 12 micro-batches: 24 pipeline rows, both
# GPUs' SM clock and power every 100 ms (gpu_clocks.csv).
# NEEDS TWO GPUs (nvidia-h200-x2) and must run ALONE on the host (judged blind); fewer than 2 GPUs: exits 0 with a note.
# Budget: parts under `timeout` 95 + 80 + 80 s (<= 255 s; expected ~150-180 s).
# Outputs OUTDIR/s31clk2/: <model>/pipeline_step.csv, pipeline_ops.csv, env_pipeline_pp2.json, gpu_clocks.csv;
# s31clk2.log; host_s31clk2.txt.
#   bash real/campaigns/s31clk2.sh OUTDIR
# Env: PY (python3), S31CLK2_PARTS (default: every model), S31CLK2_TINY (1: CPU dry run on 2 gloo ranks),
# S31CLK2_TIMEOUT_SCALE (1).
# model:layers:part timeout s:bench budget s, in calibration/s31clk2.py FRESH_CASES's order (a test holds them equal)
PP="dsv2-slice:4:95:82 v2-lite-slice:4:80:68 qwen3moe-mla-slice:4:80:68"
mbs=8,12
export S31CLK_CAMPAIGN=s31clk2 S31CLK_PP="$PP" S31CLK_MBS="$mbs" S31CLK_TINY=${S31CLK2_TINY:-0} \
  S31CLK_TIMEOUT_SCALE=${S31CLK2_TIMEOUT_SCALE:-1}
[ -n "${S31CLK2_PARTS:-}" ] && export S31CLK_PARTS="$S31CLK2_PARTS"
exec bash "$(dirname "$0")/s31clk.sh" "$@"

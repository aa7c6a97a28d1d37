#!/usr/bin/env bash
# s18probe (issue 13): s17alt's interleaved schedules with a host-pace probe before every timed cycle,
# on every rank (real/pipeline/hostpace.py; docs/notes/s18reg_rule.md, "Lead's decision").
#
# Why: s18reg found the 4xH200 8-micro-batch part ran with pipeline rank 0's host at another pace (30 us
# a forward launch) than either half of the 4-micro-batch fitting part (41, then 22 us), and the twin
# ranks that part's DualPipe pair as measured only when given that pace. But the pace was solved from the
# judged ops' own host marks (host-paced ops last about as long as their issue), so it could not be an
# input. This run measures the pace apart from the steps: before each timed cycle every rank times 128
# small kernel launches issued while its stream sleeps (host issue time alone, us a launch) and 8 passes
# of a pure-Python loop, into pipeline_host_probe.csv (cycle, rank, probe, us_per_call, the GPU's clocks,
# versions, timestamp). The probe runs between cycles, after the last step's end and before the next
# step's own barrier: no step's order, op or sync point changes. ~15 ms a cycle (the sleep covers 100 us
# a launch, 12.8 ms): ~1.5% of a 4-micro-batch cycle (~1.03 s on 4xH200), ~0.8% at 8.
# Parts, by the GPUs of the host (as s17alt):
#   >= 4 GPUs  interleaved  PP2 x EP2: dualpipe, dualpipev, 1f1b, zb1p interleaved at 4, then at 8
#                           micro-batches                                   -> OUTDIR/s18probe/interleaved/
#   2-3 GPUs   interleaved  PP2 (GPUs 0 and 1): the same                    -> OUTDIR/s18probe/interleaved/
#   < 2 GPUs   nothing (exit 0).
# Each: real.pipeline --interleave --host-probe, warm-up 2 cycles, 12-24 timed cycles a count
# (--whole-reps), unpinned, v2-lite-slice, 8 layers, seq 4096, one sequence per micro-batch, BF16, the
# 8-micro-batch rows held out (--holdout 8): s17alt's command otherwise.
# Outputs: s17alt's (pipeline_step.csv, pipeline_ops.csv, pipeline_routing.csv, pipeline_interleaved.csv,
# pipeline_trace_*.json, env_pipeline_<layout>.json) plus pipeline_host_probe.csv; s18probe.log,
# host_s18probe.txt (nvidia-smi, topology, lscpu, numactl, clocks).
#
# Run it alone on 4xH200 and on 2xH200 (a 4xH100 / 2xH100 serves the same purpose on its own host kind):
#   bash real/campaigns/s18probe.sh OUTDIR
# Budget: <= 150 s a host (timeout 140 s; the bench's own budget 118 s: no count's timed cycles start
# unless 12 fit within it), as s17alt (~100 s on 4xH200) plus ~1.5% for the probes. Rows are written as
# each count ends, so a run cut short keeps the counts it finished.
# Env: PY (python3), S18PROBE_TINY (1: the CPU dry run on gloo ranks, the tiny model, two schedules at 4),
# S18PROBE_GPUS (the dry run's ranks, default 2), S18PROBE_TIMEOUT_SCALE (1; the dry run more).
set -u
# s17alt's command (real/campaigns/s17alt.sh) under this campaign's name, with the probe
S17ALT_NAME=s18probe S17ALT_EXTRA=--host-probe S17ALT_TINY=${S18PROBE_TINY:-0} S17ALT_GPUS=${S18PROBE_GPUS:-2} \
  S17ALT_TIMEOUT_SCALE=${S18PROBE_TIMEOUT_SCALE:-1} exec bash "$(dirname "$0")/s17alt.sh" "$@"

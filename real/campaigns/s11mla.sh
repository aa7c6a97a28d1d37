#!/usr/bin/env bash
# Issue 13 (session s11mla: the H100 MLA-layer P90), one GPU: the host's time per repetition of an
# MLA layer record's loop beside the host time of its timed call and its setup alone
# (real/bench/mla_loop.py), BF16 and FP8 block-wise, at V3-slice 1x1024, 1x4096 (fitting split)
# and V2-Lite 4x1024, 1x4096 (the held-out records' shapes, a diagnostic and a fresh measure of
# those records), fwd and bwd, 5 rounds of 8 repetitions each.
# Decides: whether the records' loop spends host time outside the setup forward and the timed call
# (events, the Python loop, the last repetition's graph and tensors released) that the twin's loop
# (calibration.predict timed_window_s) lacks: with it the V2-Lite backward starts after the host,
# not behind the setup forward's GPU tail, which s10mla's traces leave open (calibration.mla_traces:
# the -15% BF16 backward at 1 x 4,096 replays to 1.46 ms starting cold, 1.31 ms behind the tail;
# measured 1.41); and, inside the record's own loop, the autograd engine's start unprofiled (host, from
# the timed call's start to its first node) and the GPU's wait at the backward's start (GPU, from
# the start event to an event the first node records): zero if the setup forward's GPU tail hides
# the engine's start, as the twin has it. The rules that take them are stated in
# calibration/layer_gaps.py before the run.
# Writes OUTDIR/s11mla/mla_loop.csv (rows flushed one by one), env.json, log.txt. Budget <= 60 s of
# GPU time (`timeout 55` around the part: a run cut short keeps its rows; ~20-30 s expected).
#   bash real/campaigns/s11mla.sh OUTDIR          (S11MLA_DEVICE=cpu: a CPU dry run, tiny shapes)
set -u
OUT="${1:?usage: real/campaigns/s11mla.sh OUTDIR}/s11mla"
mkdir -p "$OUT"
source "$(dirname "$0")/gpus.sh"
export PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES="$ONE_GPU"
DEV="${S11MLA_DEVICE:-cuda}"
{
  echo "s11mla campaign $(date -u +%FT%TZ) on GPU ${CUDA_VISIBLE_DEVICES} (${NGPU} GPU(s) seen; one used), device $DEV"
  nvidia-smi 2>/dev/null | head -20
  echo "load average: $(cat /proc/loadavg 2>/dev/null)"
  python3 - "$OUT/env.json" "$DEV" <<'PY'
import json, sys, torch
from real.bench.device import environment
from real.telemetry import Telemetry
dev = torch.device(sys.argv[2])
env = environment(dev, Telemetry(0)) if dev.type == "cuda" else {"gpu_name": dev.type, "torch_version": torch.__version__}
try:
    v = torch.cuda.nccl.version() if dev.type == "cuda" else ""
    env["nccl_version"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
except Exception as e:   # the loop needs no NCCL; the env says why it is missing
    env["nccl_version"] = f"unavailable: {e}"
json.dump(env, open(sys.argv[1], "w"), indent=1, default=str)
PY
  echo "env exit $?"
  Q=()
  [ "$DEV" != "cuda" ] && Q=(--quick)
  timeout -k 5 55 python3 -m real.bench.mla_loop --device "$DEV" --out "$OUT" "${Q[@]}"
  echo "mla_loop exit $?"
  echo "load average: $(cat /proc/loadavg 2>/dev/null)"
  echo "s11mla campaign done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

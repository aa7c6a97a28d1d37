#!/usr/bin/env bash
# Issue 13 (session s10mla: the H100 MLA-layer P90), one GPU (GPU 0): the aten operators real/'s MLA
# and MoE layers dispatch on CUDA, per model (V3-slice, V2-Lite), precision (BF16 and the best FP8),
# phase (fwd, infer, bwd) and two shapes each, split into those dispatched inside real/'s
# autograd.Functions (real/fp8.py) and the rest (real/bench/aten_count.py, a TorchDispatchMode; no
# timing, no profiler). Decides: whether the counts the calibration takes off CUDA (the meta device,
# with the fused SDPA and RMSNorm CUDA runs counted as one operator each) are the CUDA counts, and
# how an FP8 layer's operators split between autograd.Functions (grad mode off) and the rest, which
# a host time per dispatched operator for FP8 layers would need (calibration.layer_gaps).
# Then (real/bench/aten_count.py timelines) one torch.profiler Chrome trace of a warm BF16 MLA forward
# and backward each at V3-slice 1x1024 and 1x4096 (fitting split's shapes) and V2-Lite 4x1024 and
# 1x4096 (the held-out records' shapes, a diagnostic: the -15% H100 backward at 1x4096): where the
# host's dispatch time falls against the kernels (the twin spreads it evenly over a layer's launches),
# and whether the -15% backward is GPU time the twin misses (cuDNN's SDPA backward at B x H = 16, a
# shape no attention record has) or host time (a diagnostic: the fit never sees these traces).
# Writes OUTDIR/s10mla/aten_ops.csv (rows flushed one by one), timelines/mla_timeline.csv and
# timelines/trace_*.json, env.json, log.txt. Budget <= 90 s of GPU time: `timeout 50` and
# `timeout 30` around the two parts (a part cut short keeps its rows).
#   bash real/campaigns/s10mla.sh OUTDIR          (S10MLA_DEVICE=meta: a CPU dry run)
set -u
OUT="${1:?usage: real/campaigns/s10mla.sh OUTDIR}/s10mla"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES:-0}"
DEV="${S10MLA_DEVICE:-cuda}"
{
  echo "s10mla campaign $(date -u +%FT%TZ) on GPU ${CUDA_VISIBLE_DEVICES} ($(nvidia-smi -L 2>/dev/null | wc -l) GPU(s) seen; one used), device $DEV"
  nvidia-smi 2>/dev/null | head -20
  python3 - "$OUT/env.json" "$DEV" <<'PY'
import json, sys, torch
from real.bench.device import environment
from real.telemetry import Telemetry
dev = torch.device(sys.argv[2])
env = environment(dev, Telemetry(0)) if dev.type == "cuda" else {"gpu_name": dev.type, "torch_version": torch.__version__}
try:
    v = torch.cuda.nccl.version() if dev.type == "cuda" else ""
    env["nccl_version"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
except Exception as e:   # the counts need no NCCL; the env says why it is missing
    env["nccl_version"] = f"unavailable: {e}"
json.dump(env, open(sys.argv[1], "w"), indent=1, default=str)
PY
  echo "env exit $?"
  timeout -k 5 50 python3 -m real.bench.aten_count --device "$DEV" --out "$OUT/aten_ops.csv"
  echo "aten_count exit $?"
  TL=()
  [ "$DEV" != "cuda" ] && TL=(--quick)
  timeout -k 5 30 python3 -m real.bench.aten_count timelines --device "${DEV/meta/cpu}" --out "$OUT/timelines" "${TL[@]}"
  echo "timelines exit $?"
  echo "s10mla campaign done $(date -u +%FT%TZ)"
} 2>&1 | tee "$OUT/log.txt"

"""Where real/'s composed layers spend time their named kernels do not: measured from the torch
profiler's kernel records (calibration/measurements/<gpu>/kernels.csv, real/bench/kernels.py).

For every profiled MoE/MLA layer configuration the records give the kernels one call launches and
their GPU time (`calls`, `time_s` per repetition; a backward configuration also runs its untimed
forward inside the profiled region, so backward = bwd configuration - fwd configuration). Set
beside the layer's timed record (moe_layer.csv / attention.csv, CUDA events around each eager
repetition) and the twin's eager op list (calibration.predict), a layer's time splits into:

  kernel sum            GPU busy time (the profiler's kernel durations)
  idle                  timed time - kernel sum: the GPU waiting for the host (dispatch, autograd,
                        the allocator) and the gaps between kernels
  twin GPU / twin idle  the same two parts as the twin predicts them
  calls vs twin ops     kernels launched per call against the kernels the op list names

The committed records show (2026-11-26, `python -m calibration.layer_gaps`): a MoE layer's
forward launches 84-86 kernels where the op list names 38 (BF16; FP8 156-203 vs 110), its backward
66-73 vs 27: argsort's radix-sort passes (8 onesweep kernels per sort of 64-bit keys, histogram,
exclusive sum, memsets), index bookkeeping (arange, remainder, fill, cumsum scans) and device
copies; MLA 31 vs 27 forward, 47 vs 35 backward. Each such kernel is launch-bound (1-4 us) and
its op is dispatched by the host, so small layers, which are host-bound, are predicted too fast.

`eager_terms` turns this into two measured terms of the profile (Profile.eager), from the
fitting split only (calibration/split.py applied to the profiled configuration's shape):
  extra_kernels  per layer, direction and precision: median over the fitting-split profiled
                 configurations of (kernels launched - kernels the op list names);
  host_s         per direction, the host dispatch per launched kernel MEASURED by the
                 host_dispatch campaign section (real/bench/host_dispatch.py: host seconds of a call
                 over the kernels it launches, fitting-split layer rows; measured_host_s), when
                 calibration/measurements/<gpu>/host_dispatch.csv is committed. Until then each
                 missing kernel is dispatched at the profile's host_s per op like the named ops.
                 A host time FITTED to the layer records is not used:
                 the fitting split's layers are GPU-bound and leave it unfixed (fitted, it went to
                 11 / 20 us forward / backward on the H100, soaking up GPU residuals), while the
                 host-bound layers (V2-Lite MLA backward: 36 kernels in 1.3 ms, ~36 us a kernel
                 under autograd) are all held out.

  optimizer_eff  the HBM bandwidth fractions of MasterAdamW's kernels (the grads' casting copy,
                 the fused AdamW, the copy back), measured from step_kernels.csv
                 (measured_optimizer_eff) when committed; until then they run at memory_eff (a
                 copy kernel's rate). H200, 2026-11-26: 0.41, 0.71, 0.76.
  radix_sort_kernels  the radix-sort kernels among a MoE layer's missing ones: below
                 SMALL_SORT_ELEMS routed rows torch runs one in-place sort kernel instead.

Effect on the held-out layer cases (2026-11-26): signed median -0.6% -> +0.3% (H100), -1.0% ->
+0.3% (H200); |error| P90 9.0% -> 7.2%, 10.1% -> 7.7%. What stays: the MLA layers (kernel costs
of the V3 MLA backward and FP8 forward 7-11% low in the kernel sum itself; V2-Lite's host-bound
backward).
Host time by op class (s8mla, 2026-11-26): the kernels an FP8 layer dispatches inside real/fp8.py's
autograd.Functions run with grad mode off and are costed at the `infer` rate (predict.NoGradHost);
`fwd` / `bwd` are then measured on the BF16 layers' rows alone (measured_host_s, function_kernels).
Held-out MLA layers: H200 median 9.7% -> 2.9%, P90 27.6% -> 9.3%; H100 6.1% -> 3.1%, 19.3% -> 15.2%.

Host time per dispatched operator (s10mla; the rule stated before any held-out figure was computed
under it). The host's dispatch cost follows the aten operators a layer dispatches (each passes the
dispatcher, autograd and the allocator whether it launches a kernel, several, or none), not the
kernels: V2-Lite's MLA backward dispatches 2.03 operators a kernel, V3-slice's 1.80
(host_dispatch.csv `aten_ops`, a TorchDispatchMode count: real/bench/host_dispatch.py,
real/bench/aten_count.py). So, for BF16 MLA layers:
  host_s_per_op  per direction (fwd, bwd), the median over the fitting split's BF16 MLA
                 host_dispatch rows of host_s / aten_ops (measured_host_s_per_op);
  aten_ops       per direction and model, the operators one call dispatches, as CUDA counts them
                 (host_dispatch.csv, every row of the configuration: a count of the code path, not
                 a timing, identical at every shape and on the H100 and the H200; aten_op_counts);
and a BF16 MLA layer's host time is host_s_per_op x aten_ops, spread evenly over its op list's
dispatched launches (predict.Eager.host_per_op), wherever real/'s eager MLA layer runs (layer
records, train steps). Not applied where the fitting rows do not support it: FP8 MLA layers (on
the fitting rows the no-grad host time per KERNEL agrees between the BF16 and the FP8 layer, 19.2
vs 20.0 us on the H100 and 18.7 vs 19.0 us on the H200, where per operator it differs by 19% and
16%) and MoE layers (their operators take 1.6-2.8x the MLA layer's per operator on the fitting
rows: index_put_ with accumulation, the sort launching cub's radix passes from one dispatch); both
keep the per-kernel rates above.
Result on the committed records (s10mla, 2026-11-26): NOT adopted (ADOPT_HOST_PER_OP). Held-out
MLA layers H100 median 3.1% -> 5.2%, P90 15.2% -> 14.9%; H200 2.9% -> 3.6%, 9.3% -> 10.3%. The
per-operator host of V2-Lite's BF16 layer (H100: 0.68 ms forward, 1.00 ms backward) sits inside
the spread of its own host_dispatch rows (0.62-0.70, 1.09-1.18 ms) about as well as the per-kernel
one did (0.73, 1.07 ms): the twin's per-kernel host already charged V2-Lite more per real kernel,
since its op list carries V3-slice's missing kernels (extra_kernels, 8 in the backward, where
V2-Lite launches 1 beyond its named ops: 43 launches for 36 kernels, 29.6 us a real kernel, 1.19x
V3-slice's). The H100's P90 rests on the BF16 backward at 1 x 4,096 (-15%), which the twin predicts
GPU-bound (1.19 ms of kernels over ~1.0 ms of host) where it ran 1.41 ms: where in the op sequence
the host time falls, not how much of it, and the FP8 backward at 1 x 4,096 (-22%, its own P10-P90
4.6-7.2 ms).

A timed call's host edges (s11mla; the rule stated, and fitted on the fitting split only, before
any held-out figure under it was computed). The torch.profiler traces of warm BF16 MLA layer calls
(h100/s10mla_traces, real/bench/aten_count.py timelines; calibration.mla_traces) show the host's
time is not even over a call's launches: from the start event to the end of its first launch the
host runs the autograd engine's start (graph task, dependencies, the device thread's wake-up) and
the first node's dispatch (backward) or the module call and the first op (forward), and from its
last launch to its return the engine's or the module's return. At the unprofiled host speed (each
host instant times host_dispatch.csv's host_s over the call's profiled host span) the fitting
traces (V3-slice 1x1024, 1x4096) put 102-119 us before the first launch of a forward and 154-197
us of a backward, 48-75 us after the last, where the twin put one op's share (~25 us) and nothing.
Where the GPU is idle at the call's start (host_dispatch rows) the backward waits there: the
fitting rows' V3-slice BF16 backward at 1 x 1,024 runs 0.25 ms (H100) / 0.45 ms (H200) idle where
the even spread gives 0.05 / 0.07. So:
  call_edges     per direction, the host time before a call's first launch (`start`) and after
                 its last launch (`end`) in kernels' worth of the direction's measured host time
                 per kernel (host_s above), the median over the FITTING split's traces
                 (mla_traces.call_edges; a count of kernels' worth carries to the H200's host, which
                 has no traces: trace_call_edges). H100 traces: forward 4.41 / 2.18, backward 7.07 /
                 2.95 kernels' worth.
and each timed MLA layer call (a layer record's repetition and its untimed setup forward; any
precision: the edges are outside the layer's ops) takes `start` on its first dispatched op and
ends with a host-only op of `end`, both carved out of the host time its ops share (the call's host
total unchanged: the per-kernel rate was measured over whole calls, edges included)
(predict.Eager.call_edges, applied in predict_s). MoE layers (no traces) and layers inside whole
steps (one engine start a step) keep the even spread. On the fitting split: GPU-bound V3-slice
records unchanged; the fitting host_dispatch rows (GPU idle at the call's start) H100 BF16
backward -6.1% -> +1.0%, forward +5.9% -> +3.7%, FP8 backward -1.0% -> +0.6%, forward -9.3% ->
-9.5%; H200 -13.6% -> -3.7%, +5.4% -> +3.3%, -3.4% -> -0.7%, -7.7% -> -7.9%.
Adopted (ADOPT_CALL_EDGES) only if both GPUs' held-out MLA layer targets (median <= 5%, P90 <= 10%)
hold and the kernels' held-out figures do not get worse.
Result on the committed records (s11mla, 2026-11-26): NOT adopted. Held-out MLA layers H100 median
3.1% -> 4.3%, P90 15.2% -> 14.4%; H200 2.9% -> 3.6%, 9.3% -> 9.5% (kernels and layers H100 2.83% /
8.07% unchanged, H200 2.72% / 7.92% -> 2.73% / 7.95%; MoE layers unchanged). On the held-out
host_dispatch rows (GPU idle at the call's start) it helps as on the fitting ones (H100 BF16 4 x
4,096 backward -1.9% -> +1.7%, H200 -6.1% -> -1.0%), but the records repeat the layer back to back,
and there the backward starts while the GPU still runs its setup forward's last kernels (V2-Lite:
the SDPA forward and the output projection, ~0.2 ms after the host's last launch), which hide most
of the start edge; the even spread's slower middle ops then leave the backward faster (H200
V2-Lite BF16 backward at 1 x 4,096 -4.9% -> -9.2%). The H100's -15% backward (1 x 4,096) moves to
-14.0%. Its per-component residual (calibration.mla_traces, H100 traces): kernel sum 1,236 us
traced against the twin's 1,193 (attention 624 vs 528 us: cuDNN's SDPA backward at B x H = 16, a
shape no attention record has, with its dO.O preprocessing and dQ conversion; GEMMs 321 vs 338,
the rest 291 vs 309, launches 0 vs 17); at the unprofiled host speed the traced call idles 160 us
before its first kernel and 60 us between kernels (49 us before the SDPA backward's first launch,
after the output projection's two GEMMs), a cold replay of 1,456 us against the record's 1,408;
the twin, with the forward's GPU tail ahead of its host, idles 0. What stays unexplained (~0.1 ms)
is within the host-bound V2-Lite records' own spread across rounds (1.5-1.9x, h100/s9mla_paired).
`python -m calibration.layer_gaps --call-edges` prints the terms (and --update writes them), to
repeat the test.

The records' loop (s11mla; stated before real/campaigns/s11mla.sh ran). A per-repetition record
(real/bench/timing.py Timer) runs its setup (the backward's forward), two events and the timed
call back to back. In the twin's loop (predict.timed_window_s) the backward's start waits only
where the host's way to its first launch outlasts the setup forward's GPU tail (V2-Lite: the SDPA
forward and the output projection, ~0.2 ms after the forward's last launch); host time outside both
calls (the loop, the events, the last repetition's graph released) falls before the setup and
cannot change that (a host-only op there leaves the V2-Lite backward's window as it is), so it is
measured (mla_loop.csv host_other_s) but not modelled. What decides is measured inside the loop:
engine_start_s (the host from the timed call's start to the engine's first node, unprofiled) and
start_wait_s (the GPU's wait from the start event to that node's event). The rule, with the run:
the backward's start edge is re-measured as the median over the FITTING split's loop rows
(V3-slice, BF16) of engine_start_s plus the traces' first node's way to its first launch
(mla_traces, scaled as above), in kernels' worth of the direction's host time per kernel
(loop_call_edges), the other edges as the traces give them; evaluated on the held-out records
like the trace-only edges and adopted under the same criterion. The twin's predicted wait at the
V2-Lite backward's start set beside the measured start_wait_s is reported either way (a diagnostic:
held out).
Result (h100/mla_loop.csv, 2026-11-26 17:56 UTC): the engine's start takes 206 / 237 us of host on
the fitting BF16 rows (median 221 us; the run's host was slow, its calls alone 1.4-1.8x
host_dispatch.csv's), with the traces' first node 66 us: a backward start edge of 11.6 kernels'
worth (the traces alone: 7.1). NOT adopted: held-out MLA layers H100 3.1% / 15.2% -> 3.4% / 14.4%,
H200 2.9% / 9.3% -> 3.6% / 9.4% (kernels and layers unchanged). In the records' own loop the GPU
waits at every V2-Lite backward's start (BF16 4 x 1,024 208 us, 1 x 4,096 191 us; FP8 312, 245 us)
and never at V3-slice's (1-2 us). With the loop's edges the twin waits 215, 4, 309 and 273 us there:
right but for the BF16 backward at 1 x 4,096, whose setup forward ends with the SDPA forward (188
us) and the output projection, which the twin still has running ~0.28 ms after the host's return
and the loop shows done before the start event. The traces' even rescaling of the profiled host
put the engine's start at 100-120 us where the loop measures 148-237 us unprofiled: the
profiler's slowdown is per op, so fixed-cost stretches (the engine's start, a module's return)
come out short, the forward's end edge likely as well. What would decide it: the forward's end
edge measured unprofiled in the loop on the fitting shapes (a CUDA event at the setup's start
beside the host clock: whether the forward ends host-bound), the rule stated before.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import mla_traces
from calibration import records as rec
from calibration.predict import (SMALL_SORT_ELEMS, NoGradHost, _mla_ops, _moe_ops, expert_rows, gpu_spec, mla_layer_ops,
                                 predict_s, timed_window_s, twin_precision, zipf_expert_rows)
from calibration.split import is_held_out
from calibration.records_io import csv_exists, read_csv
from twin.core.specs import get_model
from twin.costs.flops import param_counts
from twin.costs.profile import PROFILES, profile_from_json

_MOE_CFG = re.compile(r"moe_layer (\S+) t(\d+) e(\d+) skew([\d.]+) (fwd|bwd)")
_MLA_CFG = re.compile(r"mla_layer (\S+) b(\d+) s(\d+) (fwd|bwd)")


def parse_config(config: str) -> dict | None:
    """A kernels.csv `config` -> the shape of the layer record it profiles (None if unknown)."""
    m = _MOE_CFG.fullmatch(config.strip())
    if m:
        return {"bench": f"moe_layer_{m[5]}", "model": m[1], "tokens": int(m[2]), "num_experts": int(m[3]),
                "skew": float(m[4]), "direction": m[5]}
    m = _MLA_CFG.fullmatch(config.strip())
    if m:
        return {"bench": f"mla_layer_{m[4]}", "model": m[1], "batch": int(m[2]), "seq_len": int(m[3]), "direction": m[4]}
    return None


def load_kernels(gpu: str, root: Path | str | None = None) -> pd.DataFrame:
    root = rec.records_root() if root is None else root
    path = Path(root) / gpu / "kernels.csv"
    return read_csv(path) if csv_exists(path) else pd.DataFrame()


def profiled_layers(kernels: pd.DataFrame) -> pd.DataFrame:
    """One row per profiled layer configuration, direction and precision: kernels launched per call
    (`calls`) and their GPU time (`kernel_s`), backward net of its forward."""
    if kernels.empty:
        return pd.DataFrame()
    agg = kernels.groupby(["config", "precision"]).agg(calls=("calls", "sum"), kernel_s=("time_s", "sum")).reset_index()
    rows = []
    for r in agg.itertuples():
        shape = parse_config(r.config)
        if shape is None:
            continue
        calls, kernel_s = float(r.calls), float(r.kernel_s)
        if shape["direction"] == "bwd":
            fwd = agg[(agg.config == r.config[:-3] + "fwd") & (agg.precision == r.precision)]
            if fwd.empty:
                continue
            calls -= float(fwd.calls.iloc[0])
            kernel_s -= float(fwd.kernel_s.iloc[0])
        rows.append({**shape, "config": r.config, "precision": r.precision, "calls": calls, "kernel_s": kernel_s,
                     "held_out": is_held_out({**shape, "num_experts": shape.get("num_experts", 0)})})
    return pd.DataFrame(rows)


def _record_for(layer: dict, df: pd.DataFrame):
    """The timed record of a profiled configuration (None if the records lack it)."""
    sel = (df.bench == layer["bench"]) & (df.model == layer["model"]) & (df.precision == layer["precision"])
    if layer["bench"].startswith("moe"):
        sel &= (df.tokens == layer["tokens"]) & (df.num_experts == layer["num_experts"]) & (df["skew"] == layer["skew"])
    else:
        sel &= (df.batch == layer["batch"]) & (df.seq_len == layer["seq_len"])
    hit = df[sel]
    return hit.iloc[0] if len(hit) else None


def _named_ops(layer: dict, record, gpu: str, profile):
    """The twin's op lists (forward, backward) of a profiled layer, without the missing kernels."""
    spec, g = get_model(layer["model"]), gpu_spec(gpu)
    if layer["bench"].startswith("moe"):
        return _moe_ops(spec, layer["tokens"], expert_rows(record, spec.top_k), layer["precision"], g, profile)
    return _mla_ops(spec, layer["batch"], layer["seq_len"], layer["precision"], g, profile)


def decomposition(gpu: str, profile, df: pd.DataFrame | None = None,
                  root: Path | str | None = None) -> list[dict]:
    """Per profiled layer: measured time, kernel sum, idle, kernels launched; the twin's named-op
    count, GPU sum and prediction (with `profile`, whatever its eager terms)."""
    root = rec.records_root() if root is None else root
    df = rec.load_records(gpu, root) if df is None else df
    out = []
    for layer in profiled_layers(load_kernels(gpu, root)).to_dict("records"):
        record = _record_for(layer, df)
        if record is None:
            continue
        f, b = _named_ops(layer, record, gpu, profile)
        named = f if layer["direction"] == "fwd" else b
        pred = predict_s(record, gpu_spec(gpu), profile)
        meas = float(record["time_s"])
        twin_gpu = sum(g for _, g in named.ops)
        out.append({"config": layer["config"], "precision": layer["precision"], "bench": layer["bench"],
                    "held_out": bool(layer["held_out"]), "measured_s": meas, "kernel_s": layer["kernel_s"],
                    "idle_s": meas - layer["kernel_s"], "kernel_calls": layer["calls"], "named_ops": len(named.ops),
                    "twin_named_gpu_s": twin_gpu,
                    "twin_named_window_s": timed_window_s([] if layer["direction"] == "fwd" else f.ops, named.ops),
                    "predicted_s": float(pred), "rel_error": float(pred / meas - 1.0)})
    return out


def host_decomposition(gpu: str, profile, df: pd.DataFrame | None = None,
                       root: Path | str | None = None) -> list[dict]:
    """Per MLA layer record (attention.csv mla_layer_*) with a host_dispatch row of the same shape
    and phase: the record's time beside the host seconds, kernels and GPU kernel seconds of that
    row (its own run), and the twin's host sum, GPU sum, op count and prediction: which of the
    host and the GPU sets the record, and which one the twin misses."""
    root = rec.records_root() if root is None else root
    df = rec.load_records(gpu, root) if df is None else df
    path = Path(root) / gpu / "host_dispatch.csv"
    if not csv_exists(path):
        return []
    hd = read_csv(path)
    out = []
    for _, r in df[df["bench"].isin(("mla_layer_fwd", "mla_layer_bwd"))].iterrows():
        direction = r["bench"].rsplit("_", 1)[-1]
        cfg = f"mla_layer {r['model']} b{int(r['batch'])} s{int(r['seq_len'])}"
        h = hd[(hd["config"] == cfg) & (hd["phase"] == direction) & (hd["precision"] == r["precision"])]
        if h.empty:
            continue
        h = h.iloc[-1]
        f, b = mla_layer_ops(get_model(r["model"]), int(r["batch"]), int(r["seq_len"]), r["precision"], gpu_spec(gpu),
                             profile)
        ops = f.ops if direction == "fwd" else b.ops
        pred = float(predict_s(r, gpu_spec(gpu), profile))
        out.append({"config": f"{cfg} {direction}", "precision": r["precision"], "held_out": bool(is_held_out(r)),
                    "measured_s": float(r["time_s"]), "host_s": float(h["host_s"]), "kernels": float(h["kernels"]),
                    "kernel_s": float(h["kernel_s"]), "twin_host_s": sum(x for x, _ in ops if x),
                    "twin_gpu_s": sum(g for _, g in ops), "twin_ops": len(ops), "predicted_s": pred,
                    "rel_error": pred / float(r["time_s"]) - 1.0})
    return out


SORT_KERNELS = "RadixSort|Memset"   # cub's radix-sort passes and the memsets around them


def radix_sort_kernels(gpu: str, root: Path | str | None = None) -> dict:
    """{"moe_layer_fwd": n, "moe_layer_bwd": n}: the radix-sort kernels (and their memsets) one MoE
    layer call launches, the median over the fitting split's profiled configurations (backward net
    of its forward). torch.sort / argsort take cub's radix sort only above SMALL_SORT_ELEMS
    elements; below it one in-place sort kernel runs instead (Eager.missing_kernels)."""
    root = rec.records_root() if root is None else root
    k = load_kernels(gpu, root)
    if k.empty:
        return {}
    k = k[k["kernel"].str.contains(SORT_KERNELS)]
    out: dict[str, list[float]] = {}
    layers = profiled_layers(k)
    for layer in layers.to_dict("records") if not layers.empty else []:
        if layer["bench"].startswith("moe") and not layer["held_out"] and layer["precision"] == "bf16":
            out.setdefault(layer["bench"], []).append(layer["calls"])
    return {b: float(np.median(v)) for b, v in out.items()}


def extra_kernel_counts(gpu: str, profile, df: pd.DataFrame, root: Path | str | None = None) -> dict:
    """{"<bench>/<bf16|fp8>": kernels launched - kernels named}, the median over the fitting split's
    profiled configurations (held-out configurations never enter)."""
    root = rec.records_root() if root is None else root
    diffs: dict[str, list[float]] = {}
    for layer in profiled_layers(load_kernels(gpu, root)).to_dict("records"):
        record = _record_for(layer, df)
        if layer["held_out"] or record is None:
            continue
        f, b = _named_ops(layer, record, gpu, profile)
        named = f if layer["direction"] == "fwd" else b
        key = f"{layer['bench']}/{twin_precision(layer['precision'])}"
        diffs.setdefault(key, []).append(layer["calls"] - len(named.ops))
    return {k: float(max(0.0, round(float(np.median(v))))) for k, v in sorted(diffs.items())}


# the copy of a transposed BF16 view into contiguous memory (Tensor.contiguous(), AccumulateGrad's
# clone into a parameter's strides): TensorIterator's non-vectorised direct copy, BF16 to BF16
TRANSPOSE_COPY_KERNEL = re.compile(r"elementwise_kernel<128, 4, at::native::gpu_kernel_impl_nocast<at::native::"
                                   r"direct_copy_kernel_cuda.*c10::BFloat16\)#1\} const&\)::\{lambda\(int\)#1\}\)$")


def measured_transpose_eff(gpu: str, profile, root: Path | str | None = None) -> float | None:
    """The streaming-bandwidth fraction that copies of transposed BF16 views reach, MEASURED by the
    profiler (kernels.csv): over the fitting split's profiled FP8 layer backwards (real/fp8.py
    makes W^T, dY^T and X^T contiguous), the bytes the op list names for those copies
    (Eager.transpose) over the measured seconds of the transposed-copy kernels
    (TRANSPOSE_COPY_KERNEL), at the profile's memory_eff. None without kernel records. (2026-11-26:
    0.137 on the H200 and 0.162 on the H100, every profiled shape within 0.13-0.16; the layer fit's
    transpose_eff, which also soaks up other residuals of the FP8 layers, is 0.093 / 0.108.)"""
    root = rec.records_root() if root is None else root
    kernels = load_kernels(gpu, root)
    if kernels.empty:
        return None
    try:
        df = rec.load_records(gpu, root)
    except FileNotFoundError:
        return None
    layers = profiled_layers(kernels)
    if layers.empty:
        return None
    g = gpu_spec(gpu)
    named = seconds = 0.0
    for _, layer in layers[(layers.direction == "bwd") & (layers.precision != "bf16") & ~layers.held_out].iterrows():
        record = _record_for(layer.to_dict(), df)
        if record is None:
            continue
        _, b = _named_ops(layer.to_dict(), record, gpu, profile)
        copies = kernels[(kernels.config == layer["config"]) & (kernels.precision == layer["precision"])
                         & kernels.kernel.astype(str).str.contains(TRANSPOSE_COPY_KERNEL)]
        if b.transposed_bytes > 0 and copies["time_s"].sum() > 0:
            named += b.transposed_bytes
            seconds += float(copies["time_s"].sum())
    if seconds <= 0:
        return None
    return named / (seconds * g.hbm_bytes_per_s * profile.memory_eff)


VECTORIZED_GATHER_KERNEL = "vectorized_gather_kernel"
GATHERS_PER_MOE_FORWARD = 3   # x_TD[order // K], y_NpD[pos], y_ND[argsort(order)]: N rows each


def measured_vectorized_gather_eff(gpu: str, profile, root: Path | str | None = None) -> float | None:
    """The streaming-bandwidth fraction torch's vectorized_gather_kernel (tensor[index] over the
    rows of a contiguous 2-D tensor) reaches, MEASURED by the profiler (kernels.csv): over the
    fitting split's profiled MoE layer forwards, whose three such gathers each read and write
    N = tokens x top_k rows of hidden_size BF16 values (real/model.py MoE.routed, expert_ffn;
    the kernel records show three calls a forward), the bytes over the kernels' measured seconds,
    at the profile's memory_eff. The layer fit's gather_eff blends these with the slower
    index_copy and index_put kernels; real/ep.py's dispatch and combine launch gathers of this
    kind only (calibration.whole_step._row_gather). None without kernel records.
    (2026-11-26: H200 0.88 over t1024 e128 and t16384 e64, BF16 and FP8; gather_eff 0.447.)"""
    root = rec.records_root() if root is None else root
    kernels = load_kernels(gpu, root)
    if kernels.empty:
        return None
    g = gpu_spec(gpu)
    named = seconds = 0.0
    for config in sorted(set(kernels["config"].astype(str))):
        shape = parse_config(config)
        if (shape is None or shape["bench"] != "moe_layer_fwd"
                or is_held_out({**shape, "num_experts": shape["num_experts"]})):
            continue
        spec = get_model(shape["model"])
        gathers = kernels[(kernels.config == config) & kernels.kernel.astype(str).str.contains(VECTORIZED_GATHER_KERNEL)]
        for _, k in gathers.iterrows():
            if int(k["calls"]) != GATHERS_PER_MOE_FORWARD or not float(k["time_s"]) > 0:
                continue   # a forward this rule does not describe: left out, not guessed
            N = shape["tokens"] * spec.top_k
            named += GATHERS_PER_MOE_FORWARD * 2.0 * N * spec.hidden_size * 2.0
            seconds += float(k["time_s"])
    if seconds <= 0:
        return None
    return named / (seconds * g.hbm_bytes_per_s * profile.memory_eff)


HOST_PHASES = ("fwd", "bwd", "infer")   # infer: a layer forward under torch.no_grad (prefill, decode)


# what each phase's profiled region also ran before it (real/bench/host_dispatch.py profiles the
# phase's setup with it): its kernels are netted out by subtracting the setup phase's row
SETUP_PHASE = {"bwd": "fwd", "train_bwd": "train_fwd", "train_opt": "train_bwd"}


def _with_setup(r) -> bool:
    """Records written before the bench profiled the phase alone (no `profiled` column) hold the
    phase's setup kernels too."""
    p = r.get("profiled") if hasattr(r, "get") else None
    return not (isinstance(p, str) and p == "phase")


def net_kernels(hd: pd.DataFrame) -> pd.Series:
    """Kernels launched by each host_dispatch row's phase alone: in records profiled with their
    setup (_with_setup) a backward's region also held its forward, an optimizer's its forward and
    backward; rows whose setup row is missing keep their count."""
    index = {(r["config"], r["precision"], r["phase"]): r["kernels"] for _, r in hd.iterrows()}
    net = []
    for _, r in hd.iterrows():
        setup = SETUP_PHASE.get(r["phase"]) if _with_setup(r) else None
        net.append(r["kernels"] - index.get((r["config"], r["precision"], setup), 0.0) if setup else r["kernels"])
    return pd.Series(net, index=hd.index, dtype=float)


def radix_kernels_of_rows(hd: pd.DataFrame, radix: dict) -> pd.Series:
    """The radix-sort kernels among each host_dispatch row's kernels: a MoE layer whose routed
    rows (tokens x top-k) exceed SMALL_SORT_ELEMS sorts them with cub's radix passes, launched
    from inside the sort's one dispatch (`radix`: radix_sort_kernels, per moe_layer direction;
    the no-grad forward `infer` launches the forward's)."""
    out = []
    for _, r in hd.iterrows():
        cfg = str(r.get("config", ""))
        n = 0.0
        if cfg.startswith("moe_layer") and str(r.get("model", "")) and pd.notna(r.get("tokens")):
            rows = float(r["tokens"]) * get_model(str(r["model"])).top_k
            if rows > SMALL_SORT_ELEMS:
                n = float(radix.get("moe_layer_bwd" if r["phase"] == "bwd" else "moe_layer_fwd", 0.0))
        out.append(n)
    return pd.Series(out, index=hd.index, dtype=float)


def function_kernels(hd: pd.DataFrame, gpu: str, profile) -> pd.Series:
    """The kernels each host_dispatch layer row's phase dispatches inside autograd.Functions
    (real/fp8.py _Fp8Linear, _Fp8GroupedMM: an FP8 layer's GEMMs, quantizations and transposed
    copies), counted as the twin's op list of that layer names them (predict.NoGradHost); 0 for a
    BF16 layer, an `infer` phase (no-grad throughout) and rows that are not MoE/MLA layers."""
    out = []
    for _, r in hd.iterrows():
        cfg, phase, label = str(r.get("config", "")), str(r.get("phase", "")), str(r.get("precision", ""))
        n = 0
        if phase in ("fwd", "bwd") and twin_precision(label) != "bf16" and pd.notna(r.get("tokens")):
            spec, g = get_model(str(r["model"])), gpu_spec(gpu)
            if cfg.startswith("mla_layer"):
                f, b = _mla_ops(spec, int(r["batch"]), int(r["seq_len"]), label, g, profile)
            elif cfg.startswith("moe_layer"):
                spec = dataclasses.replace(spec, num_routed_experts=int(r["num_experts"]))
                f, b = _moe_ops(spec, int(r["tokens"]), zipf_expert_rows(int(r["tokens"]), spec.num_routed_experts,
                                                                          spec.top_k, 0.0), label, g, profile)
            else:
                out.append(0.0)
                continue
            n = sum(isinstance(op, NoGradHost) for op in (f if phase == "fwd" else b).ops)
        out.append(float(n))
    return pd.Series(out, index=hd.index, dtype=float)


# Which fitting rows give the `fwd` / `bwd` rates (docs/notes/s13mla_rule.md): "class" (adopted since
# s8mla) the rows whose kernels are all autograd-class (BF16); tested by s13mla on the committed
# records, NOT adopted: "every_solved" (R2) every row of the phase, each FP8 row's autograd-class rate
# solved with the `infer` rate for its kernels inside autograd.Functions; "every_raw" (R) every row's
# host_s / kernels. Held-out MLA layers H100 3.1% / 15.2% -> 8.8% / 40.3% (R2), 7.0% / 19.3% (R);
# H200 2.9% / 9.3% -> 2.9% / 9.0%, 6.5% / 22.0%. `python -m calibration.host_rate_rows` repeats the test.
HOST_RATE_ROWS = "class"
HOST_RATE_ROW_RULES = ("class", "every_solved", "every_raw")


def measured_host_s(gpu: str, root: Path | str | None = None, radix: dict | None = None,
                    profile=None, rows: str = HOST_RATE_ROWS) -> dict:
    """{"fwd": s, "bwd": s, "infer": s}: host dispatch seconds per launched kernel of real/'s eager
    layers, measured (host_dispatch.csv, real/bench/host_dispatch.py): per fitting-split layer row
    host_s / its own kernels (net_kernels) less the radix-sort kernels its sorts launch from one
    dispatch (radix_kernels_of_rows, where `radix` is given), the median per phase. {} without
    the file or rows.
    By op class (with `profile`, whose op lists count them: function_kernels): the kernels an FP8
    layer dispatches inside autograd.Functions run with grad mode off, as a no-grad forward's do
    (predict.NoGradHost), so they are costed at the `infer` rate, and the `fwd` / `bwd` rates are
    those of the kernels autograd records (forward) or its engine runs (backward), each measured on
    the rows whose kernels are all of that class: the BF16 layers' (function_kernels 0). An FP8
    row mixes both classes and, with ~200 of its ~230 kernels inside Functions, leaves the
    other class's rate ill-determined (a difference of two large host times over ~30 kernels);
    it is predicted, not used. (2026-11-26 s7dec records, H200: the MLA BF16 backward's kernels
    at 35.5 us, the no-grad forward's at 18.8 us; the FP8 backward's 234 kernels at 21.3 us, which
    the classes put at 21.0 us: 205 inside Functions, 29 engine-run; one rate per phase gave them
    the MoE-and-MLA mix's 28 us.)"""
    root = rec.records_root() if root is None else root
    path = Path(root) / gpu / "host_dispatch.csv"
    if not csv_exists(path):
        return {}
    return host_rates_of(read_csv(path), gpu, radix, profile, rows)


def host_rates_of(hd: pd.DataFrame, gpu: str, radix: dict | None = None, profile=None,
                  rows: str = HOST_RATE_ROWS) -> dict:
    """measured_host_s on host_dispatch rows given as a frame (one round's, one run's); `rows`
    chooses the rows of the `fwd` / `bwd` medians (HOST_RATE_ROWS; without `profile` every row's
    host_s / kernels)."""
    if rows not in HOST_RATE_ROW_RULES:
        raise ValueError(f"rows={rows!r}: expected one of {', '.join(HOST_RATE_ROW_RULES)}")
    hd = hd.assign(net=net_kernels(hd) - (radix_kernels_of_rows(hd, radix) if radix else 0.0))
    hd = hd[(hd["split"] == "fit") & hd["phase"].isin(HOST_PHASES) & (hd["net"] > 0) & (hd["host_s"] > 0)]
    if profile is None or hd.empty or rows == "every_raw":
        return {ph: float((g["host_s"] / g["net"]).median()) for ph, g in hd.groupby("phase")}
    fk = function_kernels(hd, gpu, profile)
    if rows == "class":
        hd = hd[fk == 0]
        return {ph: float((g["host_s"] / g["net"]).median()) for ph, g in hd.groupby("phase")}
    return _class_solved_rates(hd.assign(fk=fk))


def _class_solved_rates(hd: pd.DataFrame) -> dict:
    """Per phase the median over every row of its autograd-class rate: the no-grad `infer` rate
    (every infer row's host_s / kernels) charged to the row's kernels inside autograd.Functions
    (`fk`), the rest of its host time over its other kernels. Rows with no other kernel, and rows
    with Function kernels where no infer row gives their rate, are left out."""
    infer = hd[hd["phase"] == "infer"]
    out = {"infer": float((infer["host_s"] / infer["net"]).median())} if len(infer) else {}
    for ph, g in hd[hd["phase"] != "infer"].groupby("phase"):
        g = g[(g["net"] > g["fk"]) & ((g["fk"] == 0) | ("infer" in out))]
        if len(g):
            out[ph] = float(((g["host_s"] - g["fk"] * out.get("infer", 0.0)) / (g["net"] - g["fk"])).median())
    return out


# the layers whose host time the per-operator rule takes per dispatched aten operator (module docstring)
PER_OP_LAYERS = ("mla_layer_fwd/bf16", "mla_layer_bwd/bf16")
# Tested by s10mla on the committed records and NOT adopted: held-out MLA layers H100 median 3.1% ->
# 5.2%, P90 15.2% -> 14.9%; H200 2.9% -> 3.6%, 9.3% -> 10.3% (and the H200's kernels-and-layers
# P90 7.92% -> 7.97%). `python -m calibration.layer_gaps --per-op --update` writes the terms, to
# repeat the test.
ADOPT_HOST_PER_OP = False


def _layer_rows(hd: pd.DataFrame) -> pd.DataFrame:
    """host_dispatch rows of MoE / MLA layer calls with an operator count, keyed by `key`
    ("<layer>_<phase>/<bf16|fp8>") and `model`."""
    if "aten_ops" not in hd.columns:
        return hd.iloc[0:0]
    layer = hd["config"].astype(str).str.split(" ").str[0]
    hd = hd[layer.isin(("mla_layer", "moe_layer")) & hd["phase"].isin(HOST_PHASES) & (hd["aten_ops"] > 0)]
    return hd.assign(key=[f"{c.split(' ')[0]}_{ph}/{twin_precision(str(p))}"
                          for c, ph, p in zip(hd["config"], hd["phase"], hd["precision"])])


def aten_op_counts(hd: pd.DataFrame, keys=PER_OP_LAYERS) -> dict:
    """{"<layer>_<phase>/<precision>/<model>": aten operators one call dispatches}: the CUDA counts
    of the host_dispatch rows (every row of the configuration, any split: the count of a code path,
    not a timing). A configuration whose rows disagree is left out (it would not be a property of
    the configuration)."""
    out = {}
    for (key, model), g in _layer_rows(hd).groupby(["key", "model"]):
        if key in keys and g["aten_ops"].nunique() == 1:
            out[f"{key}/{model}"] = int(g["aten_ops"].iloc[0])
    return dict(sorted(out.items()))


def measured_host_s_per_op(hd: pd.DataFrame, keys=PER_OP_LAYERS) -> dict:
    """{"<layer>_<phase>/<precision>": host seconds per dispatched aten operator}: the median over
    the fitting split's host_dispatch rows of that layer, phase and precision of host_s / aten_ops."""
    rows = _layer_rows(hd)
    rows = rows[(rows["split"] == "fit") & (rows["host_s"] > 0)]
    return {key: float((g["host_s"] / g["aten_ops"]).median()) for key, g in rows.groupby("key") if key in keys}


# MasterAdamW.step's kernels (real/train.py), each matched by name in step_kernels.csv, and the
# bytes per parameter it moves: grads upcast (read BF16, write FP32; an unvectorised casting copy),
# the fused AdamW on the FP32 masters (reads p, g, m, v; writes p, m, v), the copy back to BF16
OPTIMIZER_KERNELS = {"grad_cast": ("direct_copy_kernel.*LoadWithCast", 6.0), "adamw": ("ADAM_MODE", 28.0),
                     "copy_back": ("CopyFunctor", 6.0)}
ANNOTATION = r"^[\w.]+#[\w.]+$"   # a profiler range ("Optimizer.step#AdamW.step"), not a kernel
_STEP_CFG = re.compile(r"train_step (\S+) b(\d+) s(\d+) train_opt")


def measured_optimizer_eff(gpu: str, root: Path | str | None = None) -> dict | None:
    """HBM bandwidth fractions MasterAdamW's kernels reach ({"grad_cast", "adamw", "copy_back"}),
    from step_kernels.csv (real/bench/host_dispatch.py, the optimizer phase): a kernel class's bytes
    per parameter times the model's parameters over its GPU time, over the catalog HBM bandwidth;
    the median over the profiled models and precisions. Profiler range annotations (names with
    '#') are not kernels and are left out. None without the file. A kernel's measured rate, like
    cat_eff: the step's time is never used."""
    root = rec.records_root() if root is None else root
    path = Path(root) / gpu / "step_kernels.csv"
    if not csv_exists(path):
        return None
    k = read_csv(path)
    k = k[~k["kernel"].str.contains(ANNOTATION)]
    with_setup = "profiled" not in k.columns or (k["profiled"] != "phase").any()
    effs: dict[str, list[float]] = {}
    for (cfg, prec), g in k.groupby(["config", "precision"]):
        m = _STEP_CFG.fullmatch(str(cfg).strip())
        if m is None:
            continue
        params = param_counts(get_model(m[1]))["total_params"]
        # in records profiled with their setup the optimizer phase also holds the forward and
        # backward: kernels of a class they launch too (casting copies) are netted against the
        # backward phase's row (which holds the forward and backward)
        setup = k[(k["config"] == str(cfg).replace("train_opt", "train_bwd")) & (k["precision"] == prec)]
        for name, (pattern, bytes_per_param) in OPTIMIZER_KERNELS.items():
            t = float(g[g["kernel"].str.contains(pattern)]["time_s"].sum())
            if with_setup:
                t -= float(setup[setup["kernel"].str.contains(pattern)]["time_s"].sum())
            if t > 0:
                effs.setdefault(name, []).append(params * bytes_per_param / t / gpu_spec(gpu).hbm_bytes_per_s)
    return {n: float(np.median(v)) for n, v in effs.items()} or None


# a timed MLA layer call's host edges (module docstring, s11mla; calibration.mla_traces, predict.Eager.call_edges).
# Tested by s11mla on the committed records and NOT adopted: held-out MLA layers H100 median 3.1% ->
# 4.3%, P90 15.2% -> 14.4%; H200 2.9% -> 3.6%, 9.3% -> 9.5%; with the backward's start from the records'
# loop (loop_call_edges, h100/mla_loop.csv) H100 3.4% / 14.4%, H200 3.6% / 9.4%, not adopted either.
# `python -m calibration.layer_gaps --call-edges [--loop-edges] --update` writes the terms, to repeat the test.
ADOPT_CALL_EDGES = False


def trace_call_edges(gpu: str, root: Path | str | None = None) -> tuple[dict, str]:
    """(call edges in kernels' worth of host per direction, the GPU folder whose traces gave them):
    `gpu`'s own fitting-split traces, else the first other GPU folder with traces (each folder's
    edges in its own host time per kernel: a count of kernels' worth carries to another host,
    seconds would not). ({}, "") without traces."""
    root = rec.records_root() if root is None else root
    folders = [gpu] + [g for g in rec.gpu_dirs(root) if g != gpu]
    for g in folders:
        if not (Path(root) / g / mla_traces.TRACE_DIR).is_dir():
            continue
        rates = measured_host_s(g, root, radix_sort_kernels(g, root), _committed_profile(g))
        edges = mla_traces.call_edges(g, rates, root) if rates else {}
        if edges:
            return edges, f"{g}/{mla_traces.TRACE_DIR}"
    return {}, ""


LOOP_FILE = "mla_loop.csv"   # real/bench/mla_loop.py (real/campaigns/s11mla.sh)


def loop_engine_start_s(gpu: str, root: Path | str | None = None) -> float | None:
    """The autograd engine's start inside a record's loop, unprofiled: the median over the FITTING
    split's BF16 GPU rows of <gpu>/mla_loop.csv of engine_start_s. None without rows."""
    root = rec.records_root() if root is None else root
    path = Path(root) / gpu / LOOP_FILE
    if not csv_exists(path):
        return None
    loop = read_csv(path)
    loop = loop[(loop["split"] == "fit") & (loop["device"] == "cuda") & (loop["phase"] == "bwd")
                & (loop["precision"] == "bf16") & loop["engine_start_s"].notna()]
    return float(loop["engine_start_s"].median()) if len(loop) else None


def loop_call_edges(gpu: str, root: Path | str | None = None) -> tuple[dict, str]:
    """trace_call_edges with the backward's start re-measured (module docstring, the records'
    loop): the loop's engine start (loop_engine_start_s) plus the traces' first node's way to its
    first launch (mla_traces.first_node_s), in kernels' worth of that GPU's backward host time per
    kernel; taken from the first GPU folder holding both. ({}, "") without."""
    root = rec.records_root() if root is None else root
    edges, source = trace_call_edges(gpu, root)
    if not edges:
        return {}, ""
    for g in [gpu] + [x for x in rec.gpu_dirs(root) if x != gpu]:
        engine, node = loop_engine_start_s(g, root), mla_traces.first_node_s(g, "bwd", root)
        rate = measured_host_s(g, root, radix_sort_kernels(g, root), _committed_profile(g)).get("bwd")
        if engine is not None and node is not None and rate:
            bwd = {**edges["bwd"], "start": (engine + node) / rate}
            return {**edges, "bwd": bwd}, f"{source}+{g}/{LOOP_FILE}"
    return {}, ""


def _committed_profile(gpu: str):
    path = Path(str(PROFILES)) / f"{gpu}.json"
    return dataclasses.replace(profile_from_json(json.loads(path.read_text())), eager={}) if path.is_file() else None


def eager_terms(gpu: str, profile, df: pd.DataFrame | None = None, root: Path | str | None = None,
                per_op: bool = ADOPT_HOST_PER_OP, call_edges: bool = ADOPT_CALL_EDGES, loop_edges: bool = False,
                host_rows: str = HOST_RATE_ROWS) -> dict:
    """Profile.eager of a GPU from its kernel records and the fitting split ({} without kernels.csv),
    with the measured host time per kernel where host_dispatch.csv is committed (and, with
    `per_op`, the per-operator rule's host_s_per_op and aten_ops: module docstring). Every reader under `root`
    (calibration.records.records_root: the kernel rates keyed by a GPU alone too)."""
    root = rec.records_root() if root is None else root
    with rec.records_root_scope(root):
        return _eager_terms(gpu, profile, df, root, per_op, call_edges, loop_edges, host_rows)


def _eager_terms(gpu: str, profile, df: pd.DataFrame | None, root: Path | str, per_op: bool, call_edges: bool,
                 loop_edges: bool, host_rows: str) -> dict:
    df = rec.load_records(gpu, root) if df is None else df
    base = dataclasses.replace(profile, eager={})
    counts = extra_kernel_counts(gpu, base, df, root)
    if not counts:
        return {}
    radix = radix_sort_kernels(gpu, root)
    host = measured_host_s(gpu, root, radix, base, host_rows)
    hd_path = Path(root) / gpu / "host_dispatch.csv"
    hd = read_csv(hd_path) if csv_exists(hd_path) else pd.DataFrame(columns=["config"])
    per_op, op_counts = (measured_host_s_per_op(hd), aten_op_counts(hd)) if per_op else ({}, {})
    edges, edges_from = (loop_call_edges(gpu, root) if loop_edges else
                         trace_call_edges(gpu, root) if call_edges else ({}, ""))
    opt_eff = measured_optimizer_eff(gpu, root)
    copy_eff = measured_transpose_eff(gpu, base, root)
    gather_eff = measured_vectorized_gather_eff(gpu, base, root)
    return {"extra_kernels": counts, "radix_sort_kernels": radix,
            **({"host_s": host} if host else {}),
            **({"host_s_per_op": per_op, "aten_ops": op_counts} if per_op and op_counts else {}),
            **({"call_edges": edges, "call_edges_source": edges_from} if edges else {}),
            **({"optimizer_eff": opt_eff} if opt_eff else {}),
            **({"transpose_copy_eff": copy_eff} if copy_eff else {}),
            **({"vectorized_gather_eff": gather_eff} if gather_eff else {}),
            "source": f"calibration.layer_gaps from {gpu}/kernels.csv (fitting-split configurations) and the "
                      "fitting split's moe_layer/mla_layer records"}


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.layer_gaps", description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="append", help="GPU folder(s) (default: all with kernels.csv)")
    ap.add_argument("--per-op", action="store_true",
                    help="include the per-operator host rule's terms (tested, not adopted: ADOPT_HOST_PER_OP)")
    ap.add_argument("--call-edges", action="store_true",
                    help="include the call-edge host terms (tested, not adopted: ADOPT_CALL_EDGES)")
    ap.add_argument("--loop-edges", action="store_true",
                    help="the call edges with the backward's start from the records' loop (mla_loop.csv)")
    ap.add_argument("--update", action="store_true",
                    help="write the measured eager terms into the committed profiles (twin/data/profiles)")
    args = ap.parse_args(argv)
    profiles_dir = Path(str(PROFILES))
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    gpus = args.gpu or [g for g in rec.gpu_dirs() if csv_exists(root / g / "kernels.csv")]
    for gpu in gpus:
        path = profiles_dir / f"{gpu}.json"
        data = json.loads(path.read_text())
        prof = profile_from_json(data)
        df = rec.load_records(gpu)
        terms = eager_terms(gpu, prof, df, root, per_op=args.per_op or ADOPT_HOST_PER_OP,
                            call_edges=args.call_edges or ADOPT_CALL_EDGES, loop_edges=args.loop_edges)
        new = dataclasses.replace(prof, eager=terms)
        print(f"{gpu}: {json.dumps(terms, indent=1)}")
        print(f"{'config':46} {'prec':6} {'meas ms':>8} {'kern ms':>8} {'idle ms':>8} {'calls':>5} {'named':>5} "
              f"{'named err':>9} {'now err':>8}")
        for d in decomposition(gpu, new, df, root):
            print(f"{d['config']:46} {d['precision'][:6]:6} {d['measured_s'] * 1e3:8.3f} {d['kernel_s'] * 1e3:8.3f} "
                  f"{d['idle_s'] * 1e3:8.3f} {d['kernel_calls']:5.0f} {d['named_ops']:5d} "
                  f"{d['twin_named_window_s'] / d['measured_s'] - 1:+9.3f} {d['rel_error']:+8.3f}"
                  f"{'  held out' if d['held_out'] else ''}")
        print(f"{'MLA record (host_dispatch row of the same shape)':46} {'prec':6} {'meas ms':>8} {'host ms':>8} "
              f"{'kern ms':>8} {'kern':>5} {'twin host':>9} {'twin gpu':>9} {'ops':>4} {'err':>7}")
        for d in host_decomposition(gpu, new, df, root):
            print(f"{d['config']:46} {d['precision'][:6]:6} {d['measured_s'] * 1e3:8.3f} {d['host_s'] * 1e3:8.3f} "
                  f"{d['kernel_s'] * 1e3:8.3f} {d['kernels']:5.0f} {d['twin_host_s'] * 1e3:9.3f} "
                  f"{d['twin_gpu_s'] * 1e3:9.3f} "
                  f"{d['twin_ops']:4d} {d['rel_error']:+7.3f}{'  held out' if d['held_out'] else ''}")
        if args.update:
            rec.write_profile_terms(path, data, {"eager": terms})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Where one MLA layer call spends its time, from the torch.profiler Chrome traces of
calibration/measurements/<gpu>/s10mla_traces/ (real/bench/aten_count.py timelines; issue 13).

Each trace holds one warm BF16 MLA layer call (forward, or backward after an untimed forward),
the GPU idle at its start, between two CUDA events: the host's ops and runtime calls, the kernels,
and which launch started each kernel (correlation ids). From it, per call:

  kernels by class   GPU busy time of the GEMMs (nvjet / cuBLAS, split-K reductions included), the
                     attention (cuDNN's SDPA kernels, its backward's dO.O preprocessing and dQ
                     conversion included), memsets, and the rest (elementwise, cat, reductions,
                     norms): `memory`; beside the twin's kernel prediction of the same layer and
                     shape by component (calibration.predict Eager.component_s)
  idle               start (the start event to the first kernel: the host's way to its first
                     launch), middle (gaps between kernels; each with the op whose launch ends it),
                     end (last kernel to the end event: the host still returning)
  host edges         the host time from the start event to the end of the call's first launch,
                     and from its last launch to the end event

The profiler slows the host 2.3-3.4x and stalls the first launch of a profiled region for
~300-370 us (CUPTI; a launch call over STALL_US), so nothing here is read as a time of the records.
What carries over is the host's SHAPE: every host instant is rescaled by the call's unprofiled host
time (host_dispatch.csv host_s of the same model, precision and phase, its median over shapes:
the host's work does not depend on them) over its profiled host span (the stall taken out), and
the kernels are replayed against those instants (`replay`): the call as it would run unprofiled
if the profiler's slowdown were even over the host's work.

    python -m calibration.mla_traces [--gpu h100]
"""

from __future__ import annotations

import json
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration.predict import gpu_spec, mla_layer_ops
from calibration.split import is_held_out
from calibration.records_io import csv_exists, glob_traces, load_trace, read_csv, trace_name
from twin.core.specs import get_model
from twin.costs.profile import PROFILES, profile_from_json

TRACE_DIR = "s10mla_traces"
LAUNCH_CALLS = ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx", "cudaMemsetAsync",
                "cudaMemcpyAsync")
EVENT_RECORD = ("cudaEventRecord", "cudaEventRecordWithFlags")
STALL_US = 100.0            # a launch call this long is the profiler's one-time stall, not the host's work
NODE = "autograd::engine::evaluate_function: "
_NAME = re.compile(r"trace_(?P<model>.+)_b(?P<batch>\d+)_s(?P<seq>\d+)_(?P<phase>fwd|bwd)\.json")   # a plain name (trace_name)


def kernel_class(name: str) -> str:
    """A kernel's component as the twin counts them (gemm, attention, memory) or `memset`."""
    if name.startswith("Memset"):
        return "memset"
    if re.search(r"sdpa|flash|cudnn|fmha|attention", name, re.I):   # cuDNN's SDPA and its pre/post kernels
        return "attention"
    if re.search(r"nvjet|gemm|cutlass|cublas|splitKreduce", name, re.I):
        return "gemm"
    return "memory"


def load_events(path: Path | str) -> list[dict]:
    """The trace's events (a Chrome trace .json, or its committed .json.xz or gzipped .json.gz: records_io)."""
    return load_trace(path)["traceEvents"]


@dataclass
class Kernel:
    start_us: float        # on the GPU, from the start event
    dur_us: float
    name: str
    ready_us: float        # its launch call's end on the host, from the start event, the stall taken out
    node: str              # the autograd node (backward) or top-level op (forward) that launched it
    op: str                # the innermost aten op around the launch


@dataclass
class CallTrace:
    """One traced call: host instants from the start event (us), the profiler's stall taken out of
    every instant after it."""
    name: str
    model: str
    batch: int
    seq_len: int
    phase: str
    end_us: float          # the end event's record on the host
    stall_us: float
    first_op_us: float = 0.0   # the call's first CPU op (a backward: the engine's first node)
    launches_us: list[float] = field(default_factory=list)   # each launch call's end
    kernels: list[Kernel] = field(default_factory=list)

    @property
    def kernel_us(self) -> float:
        return sum(k.dur_us for k in self.kernels)

    def by_class(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for k in self.kernels:
            c = kernel_class(k.name)
            out[c] = out.get(c, 0.0) + k.dur_us
        return out

    def host_edges_us(self) -> tuple[float, float]:
        """(start event -> end of the first launch call, end of the last launch call -> end event)."""
        return self.launches_us[0], self.end_us - self.launches_us[-1]


def _enclosing(ops: list[dict], ts: float, tid) -> list[dict]:
    return [o for o in ops if o["tid"] == tid and o["ts"] <= ts <= o["ts"] + o["dur"]]


def parse_call(events: list[dict], name: str = "") -> CallTrace:
    """The call between the trace's first two event records."""
    m = _NAME.fullmatch(name) if name else None
    rt = sorted((e for e in events if e.get("ph") == "X" and e.get("cat") in ("cuda_runtime", "cuda_driver")),
                key=lambda e: e["ts"])
    records = [e for e in rt if e["name"] in EVENT_RECORD]
    if len(records) < 2:
        raise ValueError(f"{name or 'trace'}: fewer than two CUDA event records (start and end)")
    t0, t1 = records[0]["ts"], records[1]["ts"]
    launches = [e for e in rt if e["name"] in LAUNCH_CALLS and t0 <= e["ts"] <= t1]
    if not launches:
        raise ValueError(f"{name or 'trace'}: no kernel launch between the event records")
    typical = statistics.median(e["dur"] for e in launches)
    stall = max(launches, key=lambda e: e["dur"])
    stall_us = stall["dur"] - typical if stall["dur"] > STALL_US else 0.0

    def host(ts: float) -> float:
        return ts - t0 - (stall_us if stall_us and ts >= stall["ts"] + stall["dur"] else 0.0)

    by_corr = {e["args"].get("correlation"): e for e in launches}
    ops = sorted((e for e in events if e.get("ph") == "X" and e.get("cat") == "cpu_op"), key=lambda e: e["ts"])
    kernels = []
    for k in sorted((e for e in events if e.get("ph") == "X" and e.get("cat") in ("kernel", "gpu_memset")),
                    key=lambda e: e["ts"]):
        launch = by_corr.get(k["args"].get("correlation"))
        if launch is None:
            continue
        stack = _enclosing(ops, launch["ts"], launch["tid"])
        node = next((o["name"][len(NODE):] for o in stack if o["name"].startswith(NODE)), stack[0]["name"] if stack else "")
        aten = [o["name"] for o in stack if o["name"].startswith("aten::")]
        kernels.append(Kernel(start_us=k["ts"] - t0 - (stall_us if k["ts"] >= stall["ts"] else 0.0),
                              dur_us=k["dur"], name=k["name"], ready_us=host(launch["ts"] + launch["dur"]),
                              node=node, op=aten[-1] if aten else ""))
    return CallTrace(name=name, model=m["model"] if m else "", batch=int(m["batch"]) if m else 0,
                     seq_len=int(m["seq"]) if m else 0, phase=m["phase"] if m else "", end_us=host(t1), stall_us=stall_us,
                     first_op_us=next((host(o["ts"]) for o in ops if t0 <= o["ts"] <= t1), 0.0),
                     launches_us=[host(e["ts"] + e["dur"]) for e in launches], kernels=kernels)


def load_calls(gpu: str, root: Path | str | None = None) -> list[CallTrace]:
    root = rec.records_root() if root is None else root
    folder = Path(root) / gpu / TRACE_DIR
    out = []
    for path in glob_traces(folder, "trace_*.json"):
        name = trace_name(path)   # the name the campaign wrote (mla_timeline.csv's), however it is stored
        if _NAME.fullmatch(name):
            out.append(parse_call(load_events(path), name))
    return out


def replay(call: CallTrace, scale: float) -> dict:
    """The call with every host instant times `scale` (the kernels as traced): its event time and
    where the GPU idles (start, middle, end), each kernel starting at max(its predecessor's end,
    its launch's end); `gaps`: the middle gaps over 5 us as (idle us, node, op, kernel)."""
    gpu = first = mid = 0.0
    gaps = []
    for i, k in enumerate(call.kernels):
        ready = k.ready_us * scale
        if i == 0:
            start = first = ready
        else:
            start = max(gpu, ready)
            mid += start - gpu
            if start - gpu > 5.0:
                gaps.append((start - gpu, k.node, k.op, k.name))
        gpu = start + k.dur_us
    end = max(gpu, call.end_us * scale)
    return {"time_us": end, "start_idle_us": first, "mid_idle_us": mid, "end_idle_us": end - gpu,
            "gaps": sorted(gaps, reverse=True)}


def as_traced(call: CallTrace) -> dict:
    """The traced call itself (scale 1: the profiled host)."""
    return replay(call, 1.0)


def unprofiled_host_s(gpu: str, root: Path | str | None = None) -> dict[tuple[str, str], float]:
    """{(model, phase): host_s}: the median over shapes of host_dispatch.csv's BF16 MLA rows."""
    root = rec.records_root() if root is None else root
    path = Path(root) / gpu / "host_dispatch.csv"
    if not csv_exists(path):
        return {}
    hd = read_csv(path)
    hd = hd[hd["config"].astype(str).str.startswith("mla_layer") & (hd["precision"] == "bf16")]
    return {(m, ph): float(g["host_s"].median()) for (m, ph), g in hd.groupby(["model", "phase"])}


def scale_of(call: CallTrace, host: dict) -> float | None:
    """Unprofiled over profiled host time of the call (None without a host_dispatch row)."""
    h = host.get((call.model, call.phase))
    return None if h is None else h * 1e6 / call.end_us


def held_out(call: CallTrace) -> bool:
    return bool(is_held_out({"model": call.model, "batch": call.batch, "seq_len": call.seq_len, "num_experts": 0,
                             "bench": f"mla_layer_{call.phase}"}))


def call_edges(gpu: str, host_rates: dict, root: Path | str | None = None) -> dict:
    """{"fwd": {"start": n, "end": n}, "bwd": {...}}: a call's host time before its first launch and
    after its last launch, in kernels' worth of the direction's host time per kernel (`host_rates`,
    Profile.eager host_s), at the unprofiled host speed (scale_of); the median over the FITTING
    split's traces. {} without traces or host rows."""
    root = rec.records_root() if root is None else root
    host = unprofiled_host_s(gpu, root)
    acc: dict[str, dict[str, list[float]]] = {}
    for call in load_calls(gpu, root):
        scale, rate = scale_of(call, host), host_rates.get(call.phase)
        if held_out(call) or scale is None or not rate:
            continue
        start, end = call.host_edges_us()
        d = acc.setdefault(call.phase, {"start": [], "end": []})
        d["start"].append(start * scale * 1e-6 / rate)
        d["end"].append(end * scale * 1e-6 / rate)
    return {ph: {k: float(statistics.median(v)) for k, v in d.items()} for ph, d in sorted(acc.items())}


def first_node_s(gpu: str, phase: str = "bwd", root: Path | str | None = None) -> float | None:
    """Seconds from a call's first CPU op (a backward: the engine's first node) to the end of its
    first launch, at the unprofiled host speed (scale_of): the median over the FITTING split's
    traces of `phase`. None without traces."""
    root = rec.records_root() if root is None else root
    host = unprofiled_host_s(gpu, root)
    got = [(c.launches_us[0] - c.first_op_us) * scale * 1e-6 for c in load_calls(gpu, root)
           if c.phase == phase and not held_out(c) and (scale := scale_of(c, host))]
    return float(statistics.median(got)) if got else None


def measured_time_s(call: CallTrace, df: pd.DataFrame, hd: pd.DataFrame) -> tuple[float | None, str]:
    """The unprofiled time of the same configuration: the layer record (attention.csv, warm
    back-to-back repetitions) or else the host_dispatch row (GPU idle at the call's start)."""
    r = df[(df["bench"] == f"mla_layer_{call.phase}") & (df["model"] == call.model) & (df["precision"] == "bf16")
           & (df["batch"] == call.batch) & (df["seq_len"] == call.seq_len)]
    if len(r):
        return float(r["time_s"].iloc[0]), "record"
    h = hd[(hd["config"] == f"mla_layer {call.model} b{call.batch} s{call.seq_len}") & (hd["phase"] == call.phase)
           & (hd["precision"] == "bf16")] if len(hd) else hd
    if len(h):
        return float(h["time_s"].median()), "host_dispatch"
    return None, ""


def decomposition(gpu: str, profile, root: Path | str | None = None) -> list[dict]:
    """Per traced call: the per-component residual (traced kernels by class against the twin's
    kernel prediction of the same layer), the idle at the profiled and at the unprofiled host speed
    (replay), the measured unprofiled time, the host edges, the biggest gaps."""
    root = rec.records_root() if root is None else root
    df = rec.load_records(gpu, root)
    hd_path = Path(root) / gpu / "host_dispatch.csv"
    hd = read_csv(hd_path) if csv_exists(hd_path) else pd.DataFrame()
    host = unprofiled_host_s(gpu, root)
    out = []
    for call in load_calls(gpu, root):
        f, b = mla_layer_ops(get_model(call.model), call.batch, call.seq_len, "bf16", gpu_spec(gpu), profile)
        e = f if call.phase == "fwd" else b
        twin = {k: v * 1e6 for k, v in e.component_s.items()}
        scale = scale_of(call, host)
        traced, unprof = as_traced(call), replay(call, scale) if scale else None
        meas, source = measured_time_s(call, df, hd)
        start, end = call.host_edges_us()
        out.append({"call": call.name, "held_out": held_out(call), "phase": call.phase,
                    "kernels": len(call.kernels), "twin_ops": len(e.ops),
                    "kernel_us": call.kernel_us, "by_class_us": call.by_class(),
                    "twin_kernel_us": sum(g for _, g in e.ops) * 1e6, "twin_by_class_us": twin,
                    "profiled_host_us": call.end_us, "stall_us": call.stall_us, "host_scale": scale,
                    "traced": traced, "unprofiled": unprof, "measured_us": meas * 1e6 if meas else None,
                    "measured_source": source, "host_start_us": start, "host_end_us": end})
    return out


def _fmt_row(d: dict) -> list[str]:
    c, t = d["by_class_us"], d["twin_by_class_us"]
    lines = [f"{d['call']:36} {'held out' if d['held_out'] else 'fit':8} kernels {d['kernels']:3d} (twin ops "
             f"{d['twin_ops']}): kernel sum {d['kernel_us']:7.0f} us vs twin {d['twin_kernel_us']:7.0f} "
             f"({d['twin_kernel_us'] / d['kernel_us'] - 1:+.1%})",
             "    by class (traced / twin us): " + ", ".join(
                 f"{k} {c.get(k, 0):.0f}/{t.get(k, 0):.0f}" for k in ("gemm", "attention", "memory", "memset", "launch")
                 if c.get(k, 0) or t.get(k, 0))]
    tr = d["traced"]
    lines.append(f"    profiled: event {d['profiled_host_us']:6.0f} us host span (stall {d['stall_us']:.0f} us removed); "
                 f"idle start {tr['start_idle_us']:.0f}, middle {tr['mid_idle_us']:.0f}, end {tr['end_idle_us']:.0f}; "
                 f"host edges {d['host_start_us']:.0f} / {d['host_end_us']:.0f} us")
    u = d["unprofiled"]
    if u:
        meas = f"{d['measured_us']:.0f} us ({d['measured_source']})" if d["measured_us"] else "none"
        lines.append(f"    unprofiled replay (host x {d['host_scale']:.3f}): {u['time_us']:6.0f} us, measured {meas}; "
                     f"idle start {u['start_idle_us']:.0f}, middle {u['mid_idle_us']:.0f}, end {u['end_idle_us']:.0f}; "
                     f"host edges {d['host_start_us'] * d['host_scale']:.0f} / {d['host_end_us'] * d['host_scale']:.0f} us")
        for gap, node, op, kern in u["gaps"][:3]:
            lines.append(f"      gap {gap:5.0f} us before {kern[:48]} ({node} / {op})")
    return lines


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.mla_traces", description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="append", help="GPU folder(s) with s10mla_traces/ (default: all)")
    ap.add_argument("--json", action="store_true", help="print the decomposition as JSON")
    args = ap.parse_args(argv)
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    gpus = args.gpu or [g for g in rec.gpu_dirs() if (root / g / TRACE_DIR).is_dir()]
    result = {}
    for gpu in gpus:
        prof = profile_from_json(json.loads((Path(str(PROFILES)) / f"{gpu}.json").read_text()))
        result[gpu] = {"calls": decomposition(gpu, prof, root),
                       "call_edges": call_edges(gpu, (prof.eager or {}).get("host_s", {}), root)}
    if args.json:
        print(json.dumps(result, indent=1, default=str))
        return 0
    for gpu, r in result.items():
        print(f"{gpu}: call edges (kernels' worth of host, fitting traces): {r['call_edges']}")
        for d in r["calls"]:
            print("\n".join(_fmt_row(d)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

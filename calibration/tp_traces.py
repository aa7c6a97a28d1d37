"""The kernels of the TP blocks' Chrome traces (real/bench/parallel_blocks.py tp_traces: two
profiled repetitions of a TP2 block on each rank, and of its one-GPU reference on rank 0), by
component, per repetition (issue 14).

What they show (h200x2/traces_s8cp, fitting sizes only): per component, the traced kernel time
over the twin's costing of the same block (calibration.parallel_blocks.tp_block_ops'
Eager.component_s) is one figure for a block kind whether the block runs on one GPU or two:
the MoE block's memory-bound kernels (the token-side gathers over T*K rows, index_put's
sort-based backward, broadcast multiplies by the routing weights, fills) ~1.4x, its grouped
GEMMs ~0.86x, its dense GEMMs ~0.93x. At TP1 these cancel; at TP2 the grouped GEMMs halve while
the token-side kernels do not (every rank routes all T tokens), so the TP2 block falls short by the
memory-bound kernels' excess (calibration.parallel_blocks.block_component_factors measures the
factors, tp_block_ops applies them).

The files: trace_tp_<block>_<model>_<tokens>_<sp|nosp>_<rank0|rank1|tp1>.json.gz (committed as
.json.xz; records_io.load_trace reads each form) in a two-GPU records folder's traces*/ subfolders (the
default cases of real/'s first TP traces, trace_tp_<block>_<sp|nosp>_rank<r>, name no model and are not
read).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from calibration.records_io import glob_traces, load_trace, trace_name

COMPONENTS = ("gemm", "grouped_gemm", "attention", "nccl", "memory")
KERNEL_CATS = ("kernel", "gpu_memset", "gpu_memcpy")
TRACED_REPS = 2   # real/bench/parallel_blocks.py _trace_two_reps

_NAME = re.compile(r"trace_tp_(?P<block>mla|moe)_(?P<model>.+)_(?P<tokens>\d+)_(?P<sp>sp|nosp)_"
                   r"(?P<who>rank\d+|tp1)\.json$")   # the plain name (records_io.trace_name)


def kernel_component(name: str) -> str:
    """A traced kernel's component, in Eager.component_s's names (calibration.pipeline's rule):
    NCCL, CUTLASS grouped GEMMs, the other GEMMs (nvjet, cuBLAS, CUTLASS), fused attention
    (cuDNN's SDPA and its pre/post kernels, flash); everything else (elementwise, copies,
    gathers, index_put, sorts, reductions, norms, memsets) is memory."""
    n = name.lower()
    if "nccl" in n:
        return "nccl"
    if "groupproblemshape" in n or "grouped" in n:
        return "grouped_gemm"
    if re.search(r"nvjet|gemm|cutlass|cublas|xmma|splitkreduce", n):
        return "gemm"
    if re.search(r"sdpa|flash|fmha|cudnn|attention", n):
        return "attention"
    return "memory"


@dataclass(frozen=True)
class TracedBlock:
    """One trace file: which block, model, tokens and form, whose (a TP rank or the one-GPU
    reference), and its kernel seconds a repetition by component."""
    path: Path
    block: str
    model: str
    tokens: int
    sequence_parallel: bool
    tp: int                      # 2 for a rank's trace (the campaigns trace TP2), 1 for the reference
    rank: int
    kernel_s: dict


def parse_name(path: Path | str) -> dict | None:
    """The case a trace file holds, from its name; None for a name without model and tokens."""
    m = _NAME.match(trace_name(path))
    if not m:
        return None
    who = m["who"]
    return {"block": m["block"], "model": m["model"], "tokens": int(m["tokens"]),
            "sequence_parallel": m["sp"] == "sp" and who != "tp1", "tp": 1 if who == "tp1" else 2,
            "rank": 0 if who == "tp1" else int(who[4:])}


def kernel_seconds(path: Path | str, reps: int = TRACED_REPS) -> dict[str, float]:
    """{component: GPU seconds of its kernels (memsets and copies included) a repetition}."""
    events = load_trace(path)["traceEvents"]
    out = {c: 0.0 for c in COMPONENTS}
    for e in events:
        if e.get("ph") == "X" and e.get("cat") in KERNEL_CATS:
            out[kernel_component(e.get("name", ""))] += float(e["dur"]) * 1e-6 / reps
    return out


def traced_blocks(folder: Path | str) -> list[TracedBlock]:
    """Every named TP block trace under the folder's traces*/ subfolders."""
    out = []
    for path in glob_traces(folder, "traces*/trace_tp_*.json"):
        case = parse_name(path)
        if case is not None:
            out.append(TracedBlock(path=path, kernel_s=kernel_seconds(path), **case))
    return out


def repetition_spans(path: Path | str, reps: int = TRACED_REPS) -> list[tuple[float, float]] | None:
    """[(span_s, busy_s)] of each profiled repetition of a trace, in order: the device's span from
    the repetition's first kernel to its last kernel's end, and the kernels' own time in it (their
    union; the block's kernels run on one stream at a time). The repetitions launch the same
    kernels, so the time-ordered kernels split evenly; None where they do not. The first follows
    time_reps' warm-up, which ends with a device sync (the GPU idle, waiting on the host's first
    ops, as every repetition of a timed two-GPU row starts: real/bench/parallel_blocks.py
    time_reps); the second runs back to back after it, the host's lead carried (docs/notes/
    s17tp_rule.md)."""
    events = load_trace(path)["traceEvents"]
    kernels = sorted(((float(e["ts"]), float(e["dur"])) for e in events
                      if e.get("ph") == "X" and e.get("cat") in KERNEL_CATS), key=lambda k: k[0])
    if not kernels or len(kernels) % reps:
        return None
    n = len(kernels) // reps
    out = []
    for r in range(reps):
        part = kernels[r * n:(r + 1) * n]
        busy, end = 0.0, part[0][0]
        for ts, dur in part:   # the union of the kernels' intervals
            busy += max(0.0, ts + dur - max(ts, end))
            end = max(end, ts + dur)
        out.append(((end - part[0][0]) * 1e-6, busy * 1e-6))
    return out

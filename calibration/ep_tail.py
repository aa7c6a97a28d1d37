"""Where an EP step's op time goes past its host, kernel by kernel (issue 13, s12ep2).

    python -m calibration.ep_tail FOLDER [--kind F] [--json]

Reads FOLDER/pipeline_kernel_events.csv[.gz] (real/pipeline/probe.py --kernel-events: one profiled
step per configuration, every GPU activity with its stream and start/end, and each op's host range,
in us on the rank's profiler axis; profiler_t0_ns places that axis on the host's clock, which the
ranks of one host share). Two decompositions, per configuration, rank and op of `--kind`:

  tail   the op's GPU time past the moment its host finished issuing it (the last kernel's end
         less the host range's end), split by kernel group into the part of each group's kernels
         that runs after the host's end (clipped at it; kernels of several streams overlap, so
         the groups may sum past the tail) and `idle`, the stretch of the tail no kernel covers
  nccl   the op's NCCL kernels: GPU seconds, and of those the wait for the peer rank (the k-th
         NCCL kernel of an op on each rank is one collective: a rank's wait is the latest rank's
         start less its own, on the shared clock) and the rest (transfer and the kernel's own)

Pure functions of DataFrames (tail_table, nccl_table); the CLI prints both (ms).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration.records_io import csv_exists, read_csv, resolve_csv

CONFIG_KEYS = ["model", "schedule", "pp", "ep", "num_microbatches"]
OP_KEYS = CONFIG_KEYS + ["rank", "op_index"]

# kernel groups, first match wins (torch eager kernel names on H100/H200, CUDA 13)
GROUPS = (
    ("nccl", r"nccl"),
    ("grouped_gemm", r"groupproblemshape|grouped"),
    ("gemm", r"nvjet|gemm|cutlass|xmma|sm90_"),
    ("attention", r"sdpa|flash|fmha"),
    ("gather", r"gather|index_select|indexselect|index_elementwise"),
    ("scatter", r"scatter|index_put|indexput|index_copy|indexcopy|index_add"),
    ("sort", r"sort|radix|cub::"),
    ("softmax_loss", r"softmax|nll_loss|cross_entropy|logsumexp"),
    ("reduce", r"reduce"),
    ("copy", r"copy|memcpy|cat|catarray"),
    ("memset", r"memset|fill"),
    ("elementwise", r"elementwise|vectorized|unrolled"),
)


def kernel_group(name: str) -> str:
    """A GPU activity's group by its name (GROUPS; `other` for none)."""
    n = str(name).lower()
    for group, pattern in GROUPS:
        if re.search(pattern, n):
            return group
    return "other"


def _gpu_rows(ev: pd.DataFrame) -> pd.DataFrame:
    """The GPU activities (no host ranges, no `nccl:` annotations: the profiler's GPU-side mirror
    of a collective's record_param_comms range, the same interval as its NCCL kernel)."""
    return ev[(ev["event"] != "op_host") & ~ev["name"].astype(str).str.startswith("nccl:")]


def attribute_in_issue_order(ev: pd.DataFrame, op_kernels: pd.DataFrame) -> pd.DataFrame:
    """`ev` with each GPU activity's op_index / kind / microbatch taken from the order of issue,
    where the profiler did not link activities to their launching CPU op (torch 2.11's events
    carry no linked_correlation_id; op_index -1 throughout): a rank's activities run on one stream
    in launch order, so after those that start before its first op's host range (launched before
    any op: the step's barrier) the next `calls` of op 0 (pipeline_op_kernels.csv, the same
    profiled step, attributed by the launching op) are op 0's, the next op 1's, and so on; any
    left over stay -1."""
    ev = ev.copy()
    hosts = ev[ev["event"] == "op_host"]
    gpu = _gpu_rows(ev)
    for key, g in gpu.groupby(CONFIG_KEYS + ["rank"]):
        sel = dict(zip(CONFIG_KEYS + ["rank"], key))
        h = hosts
        k = op_kernels
        for c, v in sel.items():
            h, k = h[h[c] == v], k[k[c] == v]
        if h.empty or k.empty:
            continue
        cols = [c for c in ("kind", "microbatch", "chunk") if c in ev.columns]
        meta = h.set_index("op_index")[cols]
        g = g[g["start_us"] >= float(h["start_us"].min())].sort_values("start_us")
        counts = k[k["op_index"] >= 0].groupby("op_index")["calls"].sum().sort_index()
        at = 0
        for op, n in counts.items():
            idx = g.index[at:at + int(n)]
            at += int(n)
            ev.loc[idx, "op_index"] = int(op)
            if op in meta.index:
                ev.loc[idx, cols] = meta.loc[op].to_list()
    return ev


def _covered_us(intervals: list[tuple[float, float]]) -> float:
    """The length of a union of intervals."""
    total, end = 0.0, -np.inf
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def tail_table(ev: pd.DataFrame, kind: str = "F") -> pd.DataFrame:
    """One row per configuration, rank and op of `kind`: host_end_ms and gpu_end_ms (from the
    host range's start), tail_ms (gpu end less host end, >= 0 when the GPU runs past the host),
    and per kernel group `<group>_ms`, the time its kernels run after the host's end, plus idle_ms
    (the tail no kernel covers)."""
    hosts = ev[(ev["event"] == "op_host") & (ev["kind"] == kind)]
    gpu = _gpu_rows(ev)
    gpu = gpu.assign(group=gpu["name"].map(kernel_group))
    by_op = {k: g for k, g in gpu.groupby(OP_KEYS)}
    out = []
    for _, h in hosts.iterrows():
        key = tuple(h[k] for k in OP_KEYS)
        g = by_op.get(key)
        if g is None or g.empty:
            continue
        h0, h1 = float(h["start_us"]), float(h["end_us"])
        g_end = float(g["end_us"].max())
        row = {k: h[k] for k in OP_KEYS} | {"microbatch": h["microbatch"], "host_end_ms": (h1 - h0) / 1e3,
                                             "gpu_start_ms": (float(g["start_us"].min()) - h0) / 1e3,
                                             "gpu_end_ms": (g_end - h0) / 1e3, "tail_ms": (g_end - h1) / 1e3}
        after = g[g["end_us"] > h1]
        clipped = after.assign(part=after["end_us"] - np.maximum(after["start_us"], h1))
        for group, gg in clipped.groupby("group"):
            row[f"{group}_ms"] = float(gg["part"].sum()) / 1e3
        spans = [(max(a, h1), b) for a, b in zip(after["start_us"], after["end_us"])]
        row["idle_ms"] = max(0.0, g_end - h1 - _covered_us(spans)) / 1e3 if g_end > h1 else 0.0
        row["tail_kernels"] = int(len(after))
        out.append(row)
    return pd.DataFrame(out).fillna(0.0)


def nccl_table(ev: pd.DataFrame, kind: str | None = None) -> pd.DataFrame:
    """One row per configuration, rank and op (of `kind`, or all): nccl_ms (its NCCL kernels' GPU
    time), wait_ms (the part spent before the last rank's matching kernel started: the peer's
    lateness) and rest_ms (nccl_ms - wait_ms), calls; the k-th NCCL kernel of an op on every rank
    is taken as one collective (ranks run the same program in an EP-only step)."""
    g = _gpu_rows(ev)
    g = g[g["name"].astype(str).str.contains("nccl", case=False)]
    if kind is not None:
        g = g[g["kind"] == kind]
    if g.empty:
        return pd.DataFrame(columns=OP_KEYS + ["kind", "microbatch", "nccl_ms", "wait_ms", "rest_ms", "calls"])
    t0 = pd.to_numeric(g["profiler_t0_ns"], errors="coerce").fillna(0.0) / 1e3
    g = g.assign(abs_start=g["start_us"] + t0, abs_end=g["end_us"] + t0).sort_values("abs_start")
    g = g.assign(k=g.groupby(OP_KEYS).cumcount())
    latest = g.groupby(CONFIG_KEYS + ["op_index", "k"])["abs_start"].transform("max")
    g = g.assign(wait=np.minimum(latest - g["abs_start"], g["abs_end"] - g["abs_start"]),
                 dur=g["abs_end"] - g["abs_start"])
    out = g.groupby(OP_KEYS).agg(kind=("kind", "first"), microbatch=("microbatch", "first"),
                                 nccl_ms=("dur", "sum"), wait_ms=("wait", "sum"), calls=("dur", "size")).reset_index()
    out[["nccl_ms", "wait_ms"]] = out[["nccl_ms", "wait_ms"]] / 1e3
    out["rest_ms"] = out["nccl_ms"] - out["wait_ms"]
    return out


def _is_sync_copy(name: str) -> bool:
    """A device-to-host copy: what a host synchronisation (.tolist(), .item()) waits for."""
    n = str(name).lower()
    return "memcpy" in n and ("dtoh" in n or "device -> pageable" in n or "device -> pinned" in n)


def segments_table(ev: pd.DataFrame, kind: str = "F") -> pd.DataFrame:
    """An op's GPU work split at its device-to-host copies (the host's synchronisations: EP's
    split sizes to the host), one row per configuration, rank, op and segment: span_ms (from the
    previous copy's end, or the op's first activity, to this segment's last end), busy per kernel
    group `<group>_ms` (kernel seconds, streams overlapping), idle_ms (the span no activity covers:
    the GPU waiting for the host's launches after a synchronisation, or for a peer) and sync (1
    where the segment ends at a copy)."""
    gpu = _gpu_rows(ev)
    gpu = gpu[gpu["kind"] == kind]
    out = []
    for key, g in gpu.groupby(OP_KEYS):
        g = g.sort_values("start_us")
        copies = g[g["name"].map(_is_sync_copy)]
        bounds = list(copies["end_us"]) + [np.inf]
        t_prev = float(g["start_us"].min())
        for i, b in enumerate(bounds):
            seg = g[(g["start_us"] >= t_prev) & (g["start_us"] < b) if np.isfinite(b) else (g["start_us"] >= t_prev)]
            if seg.empty:
                continue
            end = float(seg["end_us"].max())
            row = dict(zip(OP_KEYS, key)) | {"segment": i, "sync": int(np.isfinite(b)),
                                              "span_ms": (end - t_prev) / 1e3}
            dur = (seg["end_us"] - seg["start_us"]) / 1e3
            for group, d in dur.groupby(seg["name"].map(kernel_group)):
                row[f"{group}_ms"] = float(d.sum())
            covered = _covered_us(list(zip(seg["start_us"], seg["end_us"])))
            row["idle_ms"] = max(0.0, end - t_prev - covered) / 1e3
            row["kernels"] = int(len(seg))
            out.append(row)
            t_prev = end if not np.isfinite(b) else float(b)
    return pd.DataFrame(out).fillna(0.0)


def group_seconds(ev: pd.DataFrame, kind: str = "F") -> pd.DataFrame:
    """GPU ms per configuration, rank, op and kernel group of the ops of `kind` (whole op, not
    only its tail): the per-kernel view beside tail_table."""
    g = _gpu_rows(ev)
    g = g[g["kind"] == kind]
    g = g.assign(group=g["name"].map(kernel_group), ms=(g["end_us"] - g["start_us"]) / 1e3)
    return g.groupby(OP_KEYS + ["group"]).agg(ms=("ms", "sum"), calls=("ms", "size")).reset_index()


def load(folder: Path) -> pd.DataFrame:
    """pipeline_kernel_events.csv; where no GPU activity was linked to its op (torch 2.11) and
    pipeline_op_kernels.csv is beside it, attributed in issue order (attribute_in_issue_order)."""
    path = Path(folder) / "pipeline_kernel_events.csv"
    path = resolve_csv(path)   # committed records are gzipped
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no kernel events (real/pipeline/probe.py --kernel-events writes them)")
    ev = read_csv(path, dtype={"kind": str})
    kpath = Path(folder) / "pipeline_op_kernels.csv"
    if (_gpu_rows(ev)["op_index"] < 0).all() and csv_exists(kpath):
        ev = attribute_in_issue_order(ev, read_csv(kpath))
    return ev


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.ep_tail", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", type=Path)
    ap.add_argument("--kind", default="F", help="op kind to decompose (F, BW, ...)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    try:
        ev = load(args.folder)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    tail, nccl, groups = tail_table(ev, args.kind), nccl_table(ev, args.kind), group_seconds(ev, args.kind)
    segs = segments_table(ev, args.kind)
    if args.json:
        print(json.dumps({"tail": tail.to_dict("records"), "nccl": nccl.to_dict("records"),
                          "segments": segs.to_dict("records"),
                          "groups": groups.to_dict("records")}, default=str))
        return 0
    with pd.option_context("display.width", 250, "display.max_columns", 40):
        print(f"{args.kind} ops: GPU time past the host's end, by kernel group (ms)")
        print(tail.round(3).to_string(index=False))
        print(f"\n{args.kind} ops: NCCL kernels, waiting for the peer and the rest (ms)")
        print(nccl.round(3).to_string(index=False))
        print(f"\n{args.kind} ops: GPU work between the host's synchronisations (ms)")
        print(segs.round(3).to_string(index=False))
        print(f"\n{args.kind} ops: GPU ms per kernel group (whole op)")
        print(groups.pivot_table(index=OP_KEYS, columns="group", values="ms").round(3).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

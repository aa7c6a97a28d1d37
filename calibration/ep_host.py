"""Where an EP step's host time goes, mark by mark, against the twin's issue model (issue 13, s13ep).

(`python -m calibration.ep_host_compare MARKS_FOLDER --records ROOT --gpu GPU` prints it beside
the twin's forward.)

MARKS_FOLDER: a `real.pipeline --host-marks` folder (marks_host/ or marks_events/): ep_host_marks.csv
(real/ep.py's marks: each starts a segment of host work, real/ep.MARK_SEGMENTS) beside
pipeline_ops.csv (each op's host issue interval and stream marks). For every forward (F op) of
every rank and timed step it splits the host interval into
  issue        Python issuing kernels: the segments between the marks that are neither of the below
               (`head`: from the op's start to its first dispatch, `tail`: from the last combine to
               the op's end: the last layer's rest, the head and the loss)
  collective   the all_to_all_single calls (the counts exchange, dispatch's and combine's tokens)
  wait         the two .tolist() of each dispatch, from the call to the return
and, where the marks carry CUDA events (marks_events), each send-splits .tolist() further into
  local        the host waiting for its own GPU to reach the counts exchange
  a2a_peer     the exchange on the stream, from the later of (GPU there, host there) to its end:
               the all-to-all's own time and its wait for the peer rank
  return       from the exchange's end on the stream to the host's return (the sum, the copy to
               the host, the wake-up)
twin_forward replays the twin's forward op list step by step (calibration.pipeline.issue's model):
its launches' host seconds, its waits at the synchronisations, its host time between them.
ep_host_terms: the EP host terms calibration.pipeline takes from a records folder (s13ep).

Pure functions of DataFrames; imported by calibration.pipeline, so it imports none of calibration.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from calibration.records_io import csv_exists, read_csv

CONFIG_KEYS = ["model", "schedule", "pp", "ep", "num_microbatches", "micro_batch_seqs", "seq_len", "precision"]
OP_KEYS = CONFIG_KEYS + ["rep", "rank", "op_index"]
SEGMENT_CLASS = {
    "dispatch": "issue", "gather": "issue", "dispatch_post": "issue", "dispatch_end": "issue",
    "combine": "issue", "combine_post": "issue", "combine_end": "issue", "head": "issue", "tail": "issue",
    "counts_a2a": "collective", "tokens_a2a": "collective", "combine_a2a": "collective",
    "tolist_send": "wait", "tolist_recv": "wait",
}
CLASSES = ("issue", "collective", "wait")


def load(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(marks, ops) of a --host-marks folder (ep_host_marks.csv[.gz], pipeline_ops.csv[.gz])."""
    def read(name):
        if not csv_exists(folder / name):
            raise FileNotFoundError(folder / name)
        return read_csv(folder / name)
    return read("ep_host_marks.csv"), read("pipeline_ops.csv")


def forward_segments(marks: pd.DataFrame, ops: pd.DataFrame) -> pd.DataFrame:
    """One row per segment of host work of every forward: OP_KEYS, layer, segment (a mark's label,
    or head / tail), seconds, split. A segment runs from its mark to the next mark of the op (the
    last to the op's host end; `head` from the op's host start to its first mark)."""
    f = ops[ops["kind"] == "F"]
    m = marks[(marks["kind"] == "F") & (marks["thread"] == "main")]
    out = []
    for key, g in m.groupby(OP_KEYS, sort=False):
        op = f
        for k, v in zip(OP_KEYS, key):
            op = op[op[k] == v]
        if op.empty:
            continue
        start, end = float(op["host_start_s"].iloc[0]), float(op["host_end_s"].iloc[0])
        g = g.sort_values("host_s")
        t = g["host_s"].to_numpy()
        labels, layers = g["mark"].to_list(), g["layer"].to_list()
        nxt = np.append(t[1:], end)
        base = dict(zip(OP_KEYS, key), split=str(g["split"].iloc[0]))
        out.append({**base, "layer": -1, "segment": "head", "seconds": t[0] - start})
        for i, (label, layer) in enumerate(zip(labels, layers)):
            seg = "tail" if (label == "combine_end" and i == len(labels) - 1) else label
            out.append({**base, "layer": int(layer), "segment": seg, "seconds": float(nxt[i] - t[i])})
    return pd.DataFrame(out)


def between_syncs(marks: pd.DataFrame, ops: pd.DataFrame) -> pd.DataFrame:
    """Per forward, the host's time between dispatch's synchronisations: `first` from the op's host
    start to the first layer's send-splits .tolist() call, `mid` the median over the later layers
    of the time from the previous layer's receive-splits return to this layer's call (the rest of
    the previous MoE layer, the next attention and gate, dispatch's first part: issue and
    collective calls), `last` from the last return to the op's host end. OP_KEYS, split, seconds."""
    f = ops[ops["kind"] == "F"].set_index(OP_KEYS)
    m = marks[(marks["kind"] == "F") & (marks["thread"] == "main") & marks["mark"].isin(["tolist_send", "gather"])]
    out = []
    for key, g in m.groupby(OP_KEYS, sort=False):
        if key not in f.index:
            continue
        op = f.loc[key]
        calls = g[g["mark"] == "tolist_send"].sort_values("layer")["host_s"].to_numpy()
        returns = g[g["mark"] == "gather"].sort_values("layer")["host_s"].to_numpy()
        if not len(calls) or len(calls) != len(returns):
            continue
        mids = calls[1:] - returns[:-1]
        out.append({**dict(zip(OP_KEYS, key)), "split": str(g["split"].iloc[0]),
                    "first": calls[0] - float(op["host_start_s"]),
                    "mid": float(np.median(mids)) if len(mids) else float("nan"),
                    "last": float(op["host_end_s"]) - returns[-1]})
    return pd.DataFrame(out)


def backward_calls(marks: pd.DataFrame, ops: pd.DataFrame) -> pd.DataFrame:
    """Per backward (B / BW op) the host interval and its all-to-all calls (the autograd nodes of
    dispatch's and combine's token all-to-alls, begin to end on the autograd thread): OP_KEYS,
    split, host (seconds), calls (their count), call_s (their summed seconds)."""
    b = ops[ops["kind"].isin(["B", "BW"])].set_index(OP_KEYS)
    m = marks[marks["kind"].isin(["B", "BW"])]
    out = []
    for key, g in m.groupby(OP_KEYS, sort=False):
        if key not in b.index:
            continue
        op = b.loc[key]
        begin = g[~g["mark"].str.endswith("_end")].set_index(["layer", "mark"])["host_s"]
        end = g[g["mark"].str.endswith("_end")].assign(mark=lambda d: d["mark"].str[:-4]).set_index(
            ["layer", "mark"])["host_s"]
        dur = (end - begin).dropna()
        out.append({**dict(zip(OP_KEYS, key)), "split": str(g["split"].iloc[0]),
                    "host": float(op["host_end_s"]) - float(op["host_start_s"]),
                    "calls": int(len(dur)), "call_s": float(dur.sum())})
    return pd.DataFrame(out)


def sync_split(marks: pd.DataFrame) -> pd.DataFrame:
    """Each dispatch's send-splits .tolist() of the forwards, split by its CUDA events (events-mode
    marks; rows without events are dropped): OP_KEYS, layer, split, wait (call to return), local,
    a2a_peer, return (seconds; see the module doc), peer_late (how much later the peer rank's
    stream or host reached the same exchange than this rank's, 0 if earlier)."""
    m = marks[(marks["kind"] == "F") & (marks["thread"] == "main")
              & marks["mark"].isin(["counts_a2a", "tolist_send", "tolist_recv"])]
    if m.empty or m["gpu_s"].isna().all():
        return pd.DataFrame()
    wide = m.pivot_table(index=OP_KEYS + ["microbatch", "layer", "split"], columns="mark",
                         values=["host_s", "gpu_s"], aggfunc="first")
    wide.columns = [f"{a}_{b}" for a, b in wide.columns]
    wide = wide.reset_index().dropna(subset=["gpu_s_counts_a2a", "gpu_s_tolist_send"])
    call, ret = wide["host_s_tolist_send"], wide["host_s_tolist_recv"]
    gpu_pre, gpu_post = wide["gpu_s_counts_a2a"], wide["gpu_s_tolist_send"]
    ready = np.maximum(gpu_pre, call)   # the exchange can start once the stream and the host are there
    out = wide[OP_KEYS + ["microbatch", "layer", "split"]].copy()
    out["wait"] = ret - call
    out["local"] = np.clip(gpu_pre - call, 0, None)
    out["a2a_peer"] = gpu_post - ready
    out["return"] = ret - gpu_post
    out["ready"] = ready
    # the same exchange on the other rank(s): same step, forward micro-batch and layer
    peer_keys = CONFIG_KEYS + ["rep", "microbatch", "layer"]
    latest = out.groupby(peer_keys)["ready"].transform("max")
    out["peer_late"] = latest - out["ready"]
    return out.drop(columns="ready")


def forward_summary(segments: pd.DataFrame, waits: pd.DataFrame | None = None,
                    between: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per configuration, the median over its forwards (ranks, steps, micro-batches) of each class's
    seconds per forward, the host interval (their sum), and per segment label; with `waits`
    (sync_split) also the medians of local / a2a_peer / return / peer_late summed over a forward."""
    if segments.empty:
        return pd.DataFrame()
    seg = segments.assign(cls=segments["segment"].map(SEGMENT_CLASS))
    per_op = seg.pivot_table(index=OP_KEYS + ["split"], columns="cls", values="seconds", aggfunc="sum").fillna(0.0)
    per_op["host"] = per_op[[c for c in CLASSES if c in per_op.columns]].sum(axis=1)
    by_label = seg.pivot_table(index=OP_KEYS + ["split"], columns="segment", values="seconds", aggfunc="sum")
    per_op = per_op.join(by_label.add_prefix("seg_"))
    if waits is not None and not waits.empty:
        w = waits.groupby(OP_KEYS)[["local", "a2a_peer", "return", "peer_late"]].sum()
        per_op = per_op.join(w.add_prefix("sync_"), on=OP_KEYS)
    if between is not None and not between.empty:
        per_op = per_op.join(between.set_index(OP_KEYS)[["first", "mid", "last"]].add_prefix("between_"), on=OP_KEYS)
    return per_op.reset_index().groupby(CONFIG_KEYS + ["split"]).median(numeric_only=True).drop(
        columns=["rep", "rank", "op_index"], errors="ignore").reset_index()


def _read_optional(folder: Path, name: str) -> pd.DataFrame | None:
    return read_csv(folder / name) if csv_exists(folder / name) else None


def pacing_segments(segments: pd.DataFrame, marks: pd.DataFrame) -> pd.DataFrame:
    """`segments` of the pacing rank only: at each exchange (a configuration's step, forward
    micro-batch and MoE layer) the rank whose host reached the send-splits .tolist() last. The EP
    ranks wait for each other at every dispatch (the counts' exchange completes when both have
    issued it), so the step follows, layer by layer, the later rank's host; the twin's one simulated
    rank stands for it. Segments of other ranks and head / tail (layer -1) are left out."""
    calls = marks[(marks["kind"] == "F") & (marks["mark"] == "tolist_send")]
    keys = CONFIG_KEYS + ["rep", "microbatch", "layer"]
    latest = calls.groupby(keys)["host_s"].transform("max")
    pacing = calls.loc[calls["host_s"] == latest, OP_KEYS + ["layer"]].drop_duplicates()
    return segments.merge(pacing, on=OP_KEYS + ["layer"])


def ep_host_terms(marks: pd.DataFrame, ops: pd.DataFrame, fwd_rate_s: float) -> dict:
    """The EP forward's host terms (calibration.pipeline.EP_HOST_TERMS) from the FITTING split's
    forwards of host-marks records (`marks`, `ops`: a marks_host folder), on the pacing rank of
    each MoE layer (pacing_segments), medians over the steps, micro-batches and layers:
      ep_counts_a2a  host seconds of the counts' all_to_all_single call
      ep_tokens_a2a  host seconds of a token all-to-all call (dispatch's and combine's)
      ep_send_sync   the send-splits .tolist() less the twin's two launches before it at the
                     forward's rate `fwd_rate_s` (on the pacing rank the GPU and the peer are done
                     when it arrives: the .tolist()'s own cost, the sum, the copy, the wake-up)
      ep_recv_sync   the same for the receive-splits .tolist()
    (each sync term clipped at 0). {} without fitting forwards."""
    seg = forward_segments(marks[marks["split"] == "fit"], ops)
    if seg.empty:
        return {}
    seg = pacing_segments(seg, marks)
    out: dict = {}
    for key, labels, less in (("ep_counts_a2a", ["counts_a2a"], 0.0),
                              ("ep_tokens_a2a", ["tokens_a2a", "combine_a2a"], 0.0),
                              ("ep_send_sync", ["tolist_send"], 2 * fwd_rate_s),
                              ("ep_recv_sync", ["tolist_recv"], 2 * fwd_rate_s)):
        v = seg.loc[seg["segment"].isin(labels), "seconds"]
        if len(v):
            out[key] = max(0.0, float(v.median()) - less)
    return out


def folder_terms(folder: Path, fwd_rate_s: float) -> dict:
    """ep_host_terms of a records folder's ep_host_marks.csv[.gz] (a --host-marks host run's marks)
    and ep_host_ops.csv[.gz] (that run's pipeline_ops.csv); {} without them."""
    marks, ops = _read_optional(folder, "ep_host_marks.csv"), _read_optional(folder, "ep_host_ops.csv")
    if marks is None or ops is None:
        return {}
    return ep_host_terms(marks, ops, fwd_rate_s)


# a MoE layer's host work in groups both sides can be cut into: the measured segments of each group
# and, in the twin's op list, the stretch between its EP ops (calibration.predict.EpOp)
GROUPS = {
    "to_counts": ("combine_post", "combine_end", "dispatch"),   # layer 0: ("head", "dispatch")
    "counts_call": ("counts_a2a",),
    "send_sync": ("tolist_send",),
    "recv_sync": ("tolist_recv",),
    "gather": ("gather",),
    "tokens_call": ("tokens_a2a",),
    "experts": ("dispatch_post", "dispatch_end", "combine"),
    "combine_call": ("combine_a2a",),
}


def measured_groups(segments: pd.DataFrame) -> pd.DataFrame:
    """Per forward and MoE layer, the seconds of each GROUPS group (layer 0's `to_counts` from the
    op's start: the head segment; the last layer's combine_post and tail, past its combine call,
    as `after`): OP_KEYS, split, layer, one column per group."""
    rows = []
    for key, g in segments.groupby(OP_KEYS, sort=False):
        by = g.groupby(["layer", "segment"])["seconds"].sum()
        layers = sorted(x for x in g["layer"].unique() if x >= 0)
        for layer in layers:
            row = {**dict(zip(OP_KEYS, key)), "split": str(g["split"].iloc[0]), "layer": int(layer)}
            here = by.get(layer, pd.Series(dtype=float))
            for name, labels in GROUPS.items():
                row[name] = float(sum(here.get(x, 0.0) for x in labels if x not in ("combine_post", "combine_end")))
            before = by.get(layer - 1, pd.Series(dtype=float))
            row["to_counts"] += float(before.get("combine_post", 0.0) + before.get("combine_end", 0.0)
                                      + before.get("head", 0.0))
            if layer == layers[-1]:
                row["after"] = float(here.get("combine_post", 0.0) + here.get("tail", 0.0))
            rows.append(row)
    return pd.DataFrame(rows)


def twin_groups(op_list: list) -> list[dict]:
    """The twin's forward op list cut at its EP ops (calibration.predict.EpOp `term`) into the
    GROUPS of each MoE layer: host launch seconds of each (a synchronisation's group holds the
    launches before it; its wait is twin_forward's), and `after` on the last layer (everything past
    its combine call: the last layer's rest, the head and the loss)."""
    layers: list[dict] = []
    cur: dict = {}
    group, tokens = "to_counts", 0
    nxt = {"ep_counts_a2a": "send_sync", "ep_send_sync": "recv_sync", "ep_recv_sync": "gather"}
    for op in op_list:
        term = getattr(op, "term", "")
        h = op[0] or 0.0
        if term in nxt:
            if term == "ep_counts_a2a":
                cur["counts_call"] = h
            group = nxt[term]
        elif term == "ep_tokens_a2a":
            tokens += 1
            if tokens % 2:          # dispatch's token all-to-all
                cur["tokens_call"], group = h, "experts"
            else:                   # combine's: the layer ends
                cur["combine_call"] = h
                layers.append(cur)
                cur, group = {}, "to_counts"
        else:
            cur[group] = cur.get(group, 0.0) + h
    if layers:
        layers[-1]["after"] = cur.get("to_counts", 0.0)
    return layers


def twin_forward(op_list: list, lead_s: float = 0.0, gap_s: float = 0.0) -> dict:
    """The twin's forward from level (calibration.pipeline.issue's model, step by step): host
    seconds launching, host seconds waiting at each synchronisation (list), the host's end and
    the GPU's end (seconds from the op's start)."""
    host, gpu, launch, waits, between, since = -lead_s, 0.0, 0.0, [], [], 0.0
    for h, g in op_list:
        if h is None:
            waits.append(max(0.0, gpu - host))
            between.append(since)
            host, since = max(host, gpu), 0.0
            continue
        host += h
        launch += h
        since += h
        gpu = max(gpu + gap_s, host) + g
    between.append(since)
    # between[0]: to the first sync; then per layer (send->recv, recv->next send); the last: to the end
    return {"launch_s": launch, "waits_s": waits, "wait_s": float(sum(waits)), "host_s": host, "gpu_s": gpu,
            "between_s": between}

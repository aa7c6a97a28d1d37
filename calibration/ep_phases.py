"""s23bwd (issue 13, docs/notes/s23bwd.md): where an EP2 step's time goes, measured beside the twin's, per phase.

An EP2 step (pp 1, ep 2, dp 2: real/pipeline's `ep2` layout) runs on each rank its micro-batches' forward
(op kind F), their fused backward (BW: input and weight gradients in one loss.backward()) and, at the end,
the gradient reduction and the optimizer (allreduce). pipeline_ops.csv times each op on the compute stream
(start_s / end_s, CUDA events) and the host's issue of it (host_start_s / host_end_s) on one axis a rank.

measured_phases sums each phase's spans per rank and timed step (the median over steps), so that a step
splits into F + BW + allreduce + the rest (the gaps between ops and the step's start); the `pacer` rank is
the one whose backward ends last (the EP all-to-alls hold the other rank's GPU to it). host_lag_s is each
phase's GPU end minus its host end (0: the GPU ran level with its host, a host-bound phase; > 0: work queued
behind the host).

twin_phases gives the twin's seconds of the same phases for the same row as s20epnew's / s23ephost's held-out
steps are priced (prereg.two_gpu_inputs of the committed `<gpu>x2` folder, the run's routing): one micro-batch's
F, B and W windows (calibration.pipeline.stage_ops, .steady) and the step's remainder (the reduction, the
optimizer, the host between ops); with each op list's host and GPU seconds and its EP calls.

    python -m calibration.ep_phases FOLDER [FOLDER ...] [--gpu h100]   (FOLDER: a model folder with
    pipeline_step.csv and pipeline_ops.csv, e.g. h100x2/s23ephost_<stamp>/holdout/bench-small)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

import calibration.pipeline as pipe
from calibration import entry
from calibration import prereg
from calibration.predict import EpCountsCall, EpOp, gpu_spec
from calibration.records_io import csv_exists, read_csv

PHASES = ("F", "BW", "allreduce")


def rank_phases(ops: pd.DataFrame) -> pd.DataFrame:
    """Per (num_microbatches, rep, rank) of an EP2 step's pipeline_ops rows: each PHASES kind's GPU
    seconds (sum of end_s - start_s), host seconds (sum of host_end_s - host_start_s) and host lag
    (the last op of the kind: end_s - host_end_s), the step's span on the rank (first start to last end)
    and `gaps_s` the span less the phases."""
    ops = ops.assign(gpu_s=ops["end_s"] - ops["start_s"], host_s=ops["host_end_s"] - ops["host_start_s"])
    out = []
    for (n, rep, rank), g in ops.groupby(["num_microbatches", "rep", "rank"]):
        row = {"num_microbatches": int(n), "rep": int(rep), "rank": int(rank),
               "span_s": float(g["end_s"].max() - g["start_s"].min())}
        for kind in PHASES:
            k = g[g["kind"] == kind].sort_values("op_index")
            row[f"{kind}_gpu_s"] = float(k["gpu_s"].sum())
            row[f"{kind}_host_s"] = float(k["host_s"].sum())
            row[f"{kind}_lag_s"] = float(k["end_s"].iloc[-1] - k["host_end_s"].iloc[-1]) if len(k) else 0.0
        row["gaps_s"] = row["span_s"] - sum(row[f"{k}_gpu_s"] for k in PHASES)
        out.append(row)
    return pd.DataFrame(out)


def measured_phases(ops: pd.DataFrame) -> pd.DataFrame:
    """Per (num_microbatches, rank): rank_phases' columns, the median over timed steps, and `pacer` True
    on the rank whose backward GPU seconds are the larger (the EP peers' all-to-alls hold the other's GPU
    to it: its backward is the step's)."""
    per = rank_phases(ops[(ops["pp"] == 1) & (ops["ep"] == 2)])
    med = per.drop(columns="rep").groupby(["num_microbatches", "rank"], as_index=False).median()
    slowest = med.groupby("num_microbatches")["BW_gpu_s"].transform("max")
    return med.assign(pacer=med["BW_gpu_s"] == slowest)


def _host_s(ops: list) -> float:
    return float(sum(h for h, _ in ops if h is not None))


def _gpu_s(ops: list) -> float:
    return float(sum(g for _, g in ops))


def twin_phases(folder: Path, gpu: str, inputs: tuple | None = None) -> pd.DataFrame:
    """Per ep_step row of a model folder (pipeline_step.csv, priced at its pipeline_routing.csv): twin_rows."""
    folder = Path(folder)
    steps = read_csv(folder / "pipeline_step.csv")
    steps = steps[(steps["bench"] == "ep_step") & (steps["time_s"] > 0)]
    routing = read_csv(folder / "pipeline_routing.csv") if csv_exists(folder / "pipeline_routing.csv") else pd.DataFrame()
    return twin_rows(steps.to_dict("records"), routing, gpu, inputs)


def twin_rows(rows: list[dict], routing: pd.DataFrame, gpu: str, inputs: tuple | None = None) -> pd.DataFrame:
    """Per EP2 step row (model, num_layers, pp, ep, dp, num_microbatches, micro_batch_seqs, seq_len, precision,
    schedule; time_s the measured step where known): the twin's step (prereg.predict_ep's pricing: the committed
    `<gpu>x2` folder's host rates and EP terms, each MoE layer at its most loaded EP rank's rows in `routing`,
    balanced where empty), one micro-batch's F, B, W windows and their host / GPU seconds, the launches and EP
    calls of F and B, and `rest_s`: the step less its micro-batches' F + B + W."""
    profile, accumulate, host, hold_s = inputs or prereg.two_gpu_inputs(gpu)
    out = []
    for r in rows:
        row = pd.Series({"gpu": gpu, **r})
        spec = pipe._spec_of(row)
        ep_rows = pipe.ep_layer_rows(routing, row, prereg.get_model(str(r["model"])).top_k)
        ops = pipe.stage_ops(spec, range(spec.num_layers), True, True, int(r["micro_batch_seqs"]), int(r["seq_len"]),
                             str(r["precision"]), gpu_spec(gpu), profile, int(r["ep"]), 0.0, accumulate, host, ep_rows)
        cost = ops.steady()
        _, step_s, _ = pipe.simulate_row(row, gpu_spec(gpu), profile, accumulate, host, None, ep_rows, hold_s)
        n = int(r["num_microbatches"])
        out.append({"model": r["model"], "num_microbatches": n, "measured_s": float(r.get("time_s", np.nan)),
                    "twin_s": float(step_s), "F_s": cost.f_s, "B_s": cost.b_s, "W_s": cost.w_s,
                    "rest_s": float(step_s) - n * (cost.f_s + cost.b_s + cost.w_s),
                    "F_host_s": _host_s(ops.f), "F_gpu_s": _gpu_s(ops.f), "B_host_s": _host_s(ops.b),
                    "B_gpu_s": _gpu_s(ops.b), "W_host_s": _host_s(ops.w), "W_gpu_s": _gpu_s(ops.w),
                    "F_launches": sum(h is not None for h, _ in ops.f), "B_launches": sum(h is not None for h, _ in ops.b),
                    "W_launches": sum(h is not None for h, _ in ops.w),
                    "F_ep_calls": sum(isinstance(o, EpOp) and o[0] is not None for o in ops.f),
                    # the backward's all-to-all nodes (combine's and dispatch's, one each a MoE layer): plain
                    # launches of the B list at its host rate, or each at EP_BWD_A2A_CALL_S under
                    # pipeline.ADOPT_EP_BWD_HOST (s23bwd2, off); counted by the forward's layers
                    "B_a2a_calls": 2 * sum(isinstance(o, EpCountsCall) for o in ops.f)})
    return pd.DataFrame(out)


def residual_table(folder: Path, gpu: str, inputs: tuple | None = None) -> pd.DataFrame:
    """Per micro-batch count of a model folder: measured vs twin seconds per phase on the pacer rank, per
    micro-batch for F and the backward (BW against the twin's B + W), per step for the rest (allreduce and
    gaps against the twin's remainder), and the step; each with its difference (twin - measured)."""
    ops = read_csv(Path(folder) / "pipeline_ops.csv")
    meas = measured_phases(ops)
    meas = meas[meas["pacer"]].drop_duplicates("num_microbatches")
    twin = twin_phases(folder, gpu, inputs)
    out = []
    for _, t in twin.iterrows():
        m = meas[meas["num_microbatches"] == t["num_microbatches"]].iloc[0]
        n = int(t["num_microbatches"])
        parts = {"F": (m["F_gpu_s"] / n, t["F_s"]), "BW": (m["BW_gpu_s"] / n, t["B_s"] + t["W_s"]),
                 "rest": (float(t["measured_s"]) - m["F_gpu_s"] - m["BW_gpu_s"], t["rest_s"]),
                 "step": (float(t["measured_s"]), float(t["twin_s"]))}
        twin_bw_host_s = t["B_host_s"] + t["W_host_s"]
        row = {"model": t["model"], "num_microbatches": n, "pacer_rank": int(m["rank"]),
               "BW_host_s": m["BW_host_s"] / n, "BW_twin_host_s": twin_bw_host_s,
               "BW_host_ratio": m["BW_host_s"] / n / twin_bw_host_s, "BW_lag_s": m["BW_lag_s"], "F_lag_s": m["F_lag_s"],
               "BW_launches": int(t["B_launches"] + t["W_launches"]), "BW_a2a_calls": int(t["B_a2a_calls"])}
        for k, (meas_s, twin_s) in parts.items():
            row[f"{k}_measured_s"], row[f"{k}_twin_s"], row[f"{k}_diff_s"] = meas_s, twin_s, twin_s - meas_s
        out.append(row)
    return pd.DataFrame(out)


BWD_A2A_MARKS = ("bwd_combine_a2a", "bwd_dispatch_a2a")   # real/ep.py watch_backward: the call, then `<mark>_end`


def backward_a2a_calls(marks: pd.DataFrame) -> pd.DataFrame:
    """Per (model, num_microbatches, mark) of an ep_host_marks table (real/ep.py's host marks, the autograd
    thread's backward marks included): the host seconds of each backward all-to-all autograd node's call (from
    its mark to `<mark>_end`), median and count over every call (ranks, steps, micro-batches, layers)."""
    keys = ["model", "num_microbatches", "rep", "rank", "op_index", "microbatch", "layer"]
    b = marks[marks["kind"] == "BW"].pivot_table(index=keys, columns="mark", values="host_s", aggfunc="first")
    out = []
    for mark in BWD_A2A_MARKS:
        if mark in b and f"{mark}_end" in b:
            call = (b[f"{mark}_end"] - b[mark]).dropna().rename("call_s").reset_index()
            for (model, n), g in call.groupby(["model", "num_microbatches"]):
                out.append({"model": model, "num_microbatches": int(n), "mark": mark,
                            "call_s": float(g["call_s"].median()), "calls": int(len(g))})
    return pd.DataFrame(out)


def backward_launch_rate_s(table: pd.DataFrame, a2a_call_s: float) -> pd.Series:
    """Per residual_table row: the measured backward's host seconds a launch once its all-to-all nodes
    take `a2a_call_s` each (backward_a2a_calls' median): (BW host - calls * a2a_call_s) / (launches - calls)."""
    calls = table["BW_a2a_calls"]
    return (table["BW_host_s"] - calls * a2a_call_s) / (table["BW_launches"] - calls)


def _busy_us(spans: pd.DataFrame) -> float:
    """The union length of (start_us, end_us) intervals (streams overlap: one GPU-busy time)."""
    busy, end = 0.0, -np.inf
    for a, b in spans.sort_values("start_us")[["start_us", "end_us"]].itertuples(index=False):
        if b > end:
            busy += b - max(a, end)
            end = b
    return busy


def op_kernels(events: pd.DataFrame, kind: str = "BW") -> pd.DataFrame:
    """Per profiled op of `kind` (real/pipeline/probe.py --kernel-events: pipeline_kernel_events.csv, one
    profiled step a configuration) and rank: the op's host range (host_s), its GPU activities (those whose
    launching host op lies in the op's host range, autograd's thread included), their first start to last
    end (gpu_span_s), the union of their spans (gpu_busy_s) and the rest of the span (gpu_idle_s: the GPU
    waiting for the host or for the peer), the host seconds a launch (host_per_launch_s: the op's host
    start to its last launch over the launches), and the NCCL kernels (the EP all-to-alls): count, their
    GPU seconds (wait for the peer included) and the median host seconds from the launch before each to
    its own (nccl_host_gap_s: the autograd all-to-all node's call)."""
    keys = ["model", "num_microbatches", "rank"]
    ev = events[events["kind"] == kind]
    out = []
    for key, g in ev.groupby(keys + ["op_index"]):
        host = g[g["event"] == "op_host"]
        acts = g[g["event"] != "op_host"].sort_values("launch_us")
        if host.empty or acts.empty:
            continue
        h0, h1 = float(host["start_us"].iloc[0]), float(host["end_us"].iloc[0])
        span_us = float(acts["end_us"].max() - acts["start_us"].min())
        busy_us = _busy_us(acts)
        nccl = acts["name"].str.contains("nccl", case=False)
        gaps = acts["launch_us"].diff()
        out.append({**dict(zip(keys + ["op_index"], key)), "host_s": (h1 - h0) * 1e-6, "launches": int(len(acts)),
                    "gpu_span_s": span_us * 1e-6, "gpu_busy_s": busy_us * 1e-6, "gpu_idle_s": (span_us - busy_us) * 1e-6,
                    "host_per_launch_s": (float(acts["launch_us"].max()) - h0) * 1e-6 / len(acts),
                    "nccl_kernels": int(nccl.sum()),
                    "nccl_gpu_s": float((acts["end_us"] - acts["start_us"])[nccl].sum()) * 1e-6,
                    "nccl_host_gap_s": float(gaps[nccl].median()) * 1e-6 if nccl.any() else float("nan")})
    return pd.DataFrame(out)


@entry.script
def main(argv: list[str]) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.ep_phases", description=__doc__.split("\n\n")[0])
    ap.add_argument("folders", nargs="+", type=entry.folder)
    ap.add_argument("--gpu", default="h100")
    args = ap.parse_args(argv)
    with entry.user_inputs("FOLDERS", " ".join(map(str, args.folders)), "real.pipeline folders (pipeline_ops.csv, pipeline_step.csv)"):
        inputs = prereg.two_gpu_inputs(args.gpu)
        pd.set_option("display.width", 250)
        pd.set_option("display.max_columns", 40)
        for folder in args.folders:
            print(f"== {folder}")
            table = residual_table(folder, args.gpu, inputs)
            keep = ["model", "num_microbatches", "pacer_rank", "BW_host_ratio", "BW_launches", "BW_a2a_calls"]
            ms = table.drop(columns=keep).select_dtypes("number") * 1e3
            print(pd.concat([table[keep].round(3), ms.round(2)], axis=1).to_string(index=False))
        return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

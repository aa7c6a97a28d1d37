"""Where real/cp.py's CP2 blocks spend their time, rank by rank, from the s13cp traces
(real/bench/cp_traces.py: cp_trace_{kernels,marks,reps}_rank<r>.csv[.gz]), beside the twin's
costing of the same block (calibration.parallel_blocks `_cp_blocks`).

Per rank and profiled repetition, the repetition's time on the compute stream (from the host's
start of the repetition to the end of its last compute-stream activity) splits into
  attention_s   the fused attention kernels (cuDNN's),
  eager_s       every other compute-stream activity (merges, copies, casts, fills, the MLA
                sublayer's GEMMs and norms for an MLA block),
  coll_s        NCCL kernels on the compute stream itself (torch 2.11 runs a blocking
                collective, the all-gather form's, there; the ring's P2P runs on NCCL's stream),
  host_gap_s    compute-stream idle time before an activity whose launch call had not yet been
                made (the GPU waits for the host),
  comm_wait_s   idle time before an activity launched in time, where an NCCL kernel (another
                stream) ends inside the gap: the stream waits on a P2P exchange or collective,
  latency_s     the rest of the idle time (launch latency, event waits without an NCCL end);
and, on the NCCL streams, nccl_s (their union) and nccl_exposed_s (not under a compute-stream
activity). The twin's side (`twin_pieces`): attention, eager (memory-bound ops at the folder's
merge factor), the exposed exchange / collective time, the device sum, the host sum and the
prediction (calibration.parallel_blocks.predict_cp_row).

    python -m calibration.cp_traces RECORDS_DIR [--gpu h200] [--folder calibration/measurements/h200x2]
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from calibration import entry
from calibration import parallel_blocks as blocks
from calibration import records as rec
from calibration.predict import Eager, FixedHost, _mla_ops
from calibration.records_io import read_csvs
from calibration.validate import load_fitted_profile
from twin.costs.flops import Op, OpKind
from twin.costs.profile import Profile
from twin.core.intervals import covered_length, uncovered_length
from twin.core.specs import GPUSpec, get_model

CASE_KEYS = ["block", "model", "cp_kind", "seq_len"]
COMPUTE_EVENTS = blocks.CP_TRACE_EVENTS   # the GPU activities (kernel, memcpy, memset), as parallel_blocks reads them
NCCL_END_SLACK_US = 2.0   # an NCCL kernel ending this close after a gap still explains it


def load(folder: Path | str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(kernels, marks, reps) of every rank in a s13cp records folder; empty frames where absent."""
    return (read_csvs(folder, blocks.CP_TRACE_KERNELS), read_csvs(folder, "cp_trace_marks_rank*.csv"),
            read_csvs(folder, "cp_trace_reps_rank*.csv"))


def compute_stream(acts: pd.DataFrame):
    """The stream the attention kernels ran on (else the one with most non-NCCL activity)."""
    attn = acts[acts["category"] == "attention"]
    pool = attn if not attn.empty else acts[acts["category"] != "nccl"]
    return pool["stream"].mode().iloc[0] if not pool.empty else None


def rep_breakdown(acts: pd.DataFrame) -> dict:
    """One rank's profiled repetition (its activity rows, times in us from the repetition's host
    start) split as the module docstring says; seconds."""
    acts = acts[acts["event"].isin(COMPUTE_EVENTS)]
    stream = compute_stream(acts)
    comp = acts[acts["stream"] == stream].sort_values("start_us")
    nccl = acts[(acts["category"] == "nccl") & (acts["stream"] != stream)]
    nccl_ends = sorted(nccl["end_us"])
    out = dict(span_s=0.0, attention_s=0.0, eager_s=0.0, coll_s=0.0, host_gap_s=0.0, comm_wait_s=0.0, latency_s=0.0,
               nccl_s=0.0, nccl_exposed_s=0.0, kernels=len(comp))
    prev_end = 0.0
    for k in comp.itertuples():
        gap = max(0.0, k.start_us - prev_end)
        if gap > 0:
            host = min(gap, max(0.0, k.launch_us - prev_end))
            rest = gap - host
            waited = any(prev_end < e <= k.start_us + NCCL_END_SLACK_US for e in nccl_ends)
            out["host_gap_s"] += host
            out["comm_wait_s" if waited else "latency_s"] += rest
        dur = max(0.0, k.end_us - max(k.start_us, prev_end))
        out[{"attention": "attention_s", "nccl": "coll_s"}.get(k.category, "eager_s")] += dur
        prev_end = max(prev_end, k.end_us)
    out["span_s"] = prev_end
    iv_comp = list(zip(comp["start_us"], comp["end_us"]))
    iv_nccl = list(zip(nccl["start_us"], nccl["end_us"]))
    out["nccl_s"], out["nccl_exposed_s"] = covered_length(iv_nccl), uncovered_length(iv_nccl, iv_comp)
    return {k: (v * 1e-6 if k.endswith("_s") else v) for k, v in out.items()}


def trace_breakdown(kernels: pd.DataFrame) -> pd.DataFrame:
    """Per case, rank and profiled repetition: `rep_breakdown`."""
    rows = []
    for key, acts in kernels.groupby([*CASE_KEYS, "split", "rank", "rep"]):
        rows.append(dict(zip([*CASE_KEYS, "split", "rank", "rep"], key), **rep_breakdown(acts)))
    return pd.DataFrame(rows)


def case_medians(kernels: pd.DataFrame, reps: pd.DataFrame, start_up_factor: float = 2.0) -> pd.DataFrame:
    """Per case: `rep_breakdown` of each profiled repetition's slowest rank (the longer span; the
    row's time is the slowest rank's), the median over repetitions, beside the unprofiled
    repetitions' median device, host and CommTimer seconds (the slowest rank's). A profiled
    repetition longer than start_up_factor x its rank's unprofiled median is left out (the first
    profiled case of a process pays the profiler's start-up: 70 ms in one 3 ms repetition)."""
    br = trace_breakdown(kernels)
    plain = reps[reps["profiled"] == 0].copy()
    plain["comm_s"] = plain["comm_detail"].map(lambda j: sum(json.loads(j).values()) if isinstance(j, str) and j else 0.0)
    per_rank = plain.groupby([*CASE_KEYS, "rank"]).agg(device_s=("device_s", "median"), host_s=("host_s", "median"),
                                                       comm_s=("comm_s", "median")).reset_index()
    br = br.merge(per_rank[[*CASE_KEYS, "rank", "device_s"]].rename(columns={"device_s": "plain_s"}),
                  on=[*CASE_KEYS, "rank"], how="left")
    br = br[~(br["span_s"] > start_up_factor * br["plain_s"])]
    slow = br.sort_values("span_s").groupby([*CASE_KEYS, "rep"]).tail(1)
    med = slow.groupby([*CASE_KEYS, "split"]).median(numeric_only=True).drop(columns=["rep", "rank", "plain_s"])
    agg = per_rank.groupby(CASE_KEYS)[["device_s", "host_s", "comm_s"]].max()
    return med.reset_index().merge(agg.reset_index(), on=CASE_KEYS, how="left")


# ---------------------------------------------------------------------------------------------
# The twin's side
# ---------------------------------------------------------------------------------------------


def twin_pieces(row, spec: GPUSpec, profile: Profile, host: dict, cp_terms: dict) -> dict:
    """The twin's costing of a CP2 block row, in pieces (seconds, one rank): attention_s (the W
    blocks' kernels, the off-diagonal ones at the folder's factor), eager_s (the CP part's
    memory-bound ops at the merge factor, plus the MLA sublayer's own ops for an MLA block),
    exposed_s (ring exchanges not hidden behind their block and the last hop; all-gather: the
    collectives), device_s (their sum with the MLA ops), host_s (the host sum), predicted_s."""
    W, S = int(row["cp"]), int(row["seq_len"])
    H, E, Ev = int(row["num_heads"]), int(row["qk_head_dim"]), int(row["v_head_dim"])
    s, kind = S // W, str(row["cp_kind"])
    off, merge = blocks.offdiag_factor(cp_terms, H, E, Ev, s), cp_terms.get("merge_factor", 1.0)

    def core(seq: int, heads: int, causal: bool) -> Op:
        return Op("attn_core", OpKind.ATTENTION, "attn", batch=1, seq_len=seq, heads=heads, qk_dim=E, v_dim=Ev,
                  causal=causal, precision="bf16")

    def part(m: float) -> tuple[Eager, Eager]:
        f, b = Eager(spec, profile), Eager(spec, profile)
        blocks._cp_blocks(f, b, kind, W, s, H, E, Ev, spec, profile, core, host, off, m)
        return f, b

    f, b = part(merge)
    f0, b0 = part(0.0)
    gpu_all = sum(g for _, g in f.ops + b.ops)
    gpu_no_mem = sum(g for _, g in f0.ops + b0.ops)
    att = Eager(spec, profile)
    for direction in ("fwd", "bwd"):
        att.attention(core(s, H, True), direction)
    attention = sum(g for _, g in att.ops)
    diag = Eager(spec, profile)
    for direction in ("fwd", "bwd"):
        diag.attention(core(s // 2, 2 * H, False), direction)
    attention += (W - 1) * off * sum(g for _, g in diag.ops)
    per_op = cp_terms.get("host_per_op", {}).get(kind)
    host_s = sum(op[0] if isinstance(op, FixedHost) or per_op is None else per_op for op in f.ops + b.ops)
    mla_dev = mla_host = 0.0
    if str(row["block"]) == "mla":
        mf, mb = _mla_ops(get_model(str(row["model"])), 1, s, str(row.get("precision", "bf16")), spec, profile,
                          with_core=False)
        mla_dev = sum(g for _, g in mf.ops + mb.ops)
        mla_host = sum(h for h, _ in mf.ops + mb.ops if h is not None)
    return dict(attention_s=attention, eager_s=gpu_all - gpu_no_mem + mla_dev, exposed_s=gpu_no_mem - attention,
                device_s=gpu_all + mla_dev, host_s=host_s + mla_host,
                predicted_s=blocks.predict_cp_row(row, spec, profile, host, cp_terms))


def comparison(records: Path | str, folder: Path | str, gpu: str, profile: Profile) -> pd.DataFrame:
    """Per CP2 row of the s13cp records (their parallel_blocks_cp.csv, timed as the committed rows):
    its measured time, the trace pieces of its slowest rank (`case_medians`), and the twin's pieces
    with the committed folder's terms (measured on its fitting rows)."""
    terms = blocks.folder_terms(folder, gpu, profile)
    kernels, _, reps = load(records)
    med = case_medians(kernels, reps) if not kernels.empty else pd.DataFrame()
    new = blocks.load_block_rows(records)
    out = []
    for _, r in new.iterrows():
        if str(r["bench"]) != "cp_block" or int(r["cp"]) < 2:
            continue
        tw = twin_pieces(r, terms.spec, profile, terms.host, terms.cp_terms)
        key = {k: r[k] for k in CASE_KEYS}
        mine = med
        for k, v in key.items():
            mine = mine[mine[k] == v] if not mine.empty else mine
        slow = mine.iloc[0].to_dict() if not mine.empty else {}
        out.append(dict(key, split=r["split"], measured_s=float(r["time_s"]), host_time_s=float(r["host_time_s"]),
                        **{f"twin_{k}": v for k, v in tw.items()},
                        **{f"trace_{k}": v for k, v in slow.items() if k not in (*CASE_KEYS, "split")}))
    return pd.DataFrame(out)


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.cp_traces", description=__doc__.split("\n")[0])
    ap.add_argument("records", type=Path)
    ap.add_argument("--gpu", default="h200")
    ap.add_argument("--folder", type=Path, default=None)
    ap.add_argument("--fit-only", action="store_true", help="the fitting cases alone (before a rule's commit)")
    a = ap.parse_args(argv)
    with entry.user_inputs("RECORDS", a.records, "a cp_traces records folder as real/bench/cp_traces.py writes it"):
        prof, _ = load_fitted_profile(a.gpu, None)
        df = comparison(a.records, a.folder or rec.records_root() / f"{a.gpu}x2", a.gpu, prof)
        if a.fit_only:
            df = df[df["split"] == "fit"]
        cols = [c for c in df.columns if c.endswith("_s") or c in (*CASE_KEYS, "split")]
        with pd.option_context("display.width", 250, "display.max_columns", 40):
            print((df[cols].set_index([*CASE_KEYS, "split"]) * 1e3).round(2).to_string())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())

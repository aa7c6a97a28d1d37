"""s30fb (issue 13, diagnosis only): DualPipeV's FB pairs at pp 2, pair by pair, measured against the twin, split into F
and B parts and into GPU kernels per component, from a probe folder with kernel events (real/campaigns/s30fb.sh,
s29idle2.sh).

Per configuration (model, DualPipeV, micro-batch count n) and rank, each FB pair in step order (its position k among the
rank's pairs): the measured span (median over the timed, unprofiled steps of pipeline_host.csv), its F part (the pair's
start to the start of the send of the F's output, which the probe issues between the two chunks) and B part (the
rest), and the twin's (calibration.pipeline.simulate_row as prereg.predict_ep prices the row: the committed h200x2
inputs, balanced routing; its F part the F's stage cost). From the profiled step (pipeline_kernel_events.csv): the
pair's compute-stream kernels per component (pipeline.kernel_component), split into F and B at the send's NCCL kernel
(at the loss's nll_loss_forward kernel where the F is the last stage's and sends nothing),
the compute stream's idle inside the pair (its span less the union of its kernels) and the NCCL kernels' time inside
the pair's span on the other streams. Nothing here is judged; no switch reads it.

    python -m calibration.s30fb h200x2/s30fb_<stamp>/dsv2-slice [...]   # folders under the records root
    python -m calibration.s30fb h200x2/s29idle/dsv2-slice                # a bench folder (pipeline_ops.csv): no kernels
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import pipeline as pipe
from calibration import prereg
from calibration import records as rec
from calibration.records_io import csv_exists, read_csv
from calibration.whole_step import gpu_spec
from twin.core.specs import get_model

GPU = "h200"
COMPONENTS = ("gemm", "grouped_gemm", "attention", "memory")


def twin_pairs(model: str, n: int, num_layers: int, inputs: tuple | None = None) -> dict[int, list[dict]]:
    """The twin's FB pairs of a pp2 DualPipeV row, per rank in step order: label, span_s, f_s (the F's stage cost)."""
    r = {"gpu": GPU, "bench": "pipeline_step", "model": model, "schedule": "dualpipev", "pp": 2, "ep": 1, "dp": 1,
         "num_gpus": 2, "num_microbatches": n, "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16",
         "num_layers": num_layers}
    profile, accumulate, host, hold_s = inputs if inputs is not None else prereg.two_gpu_inputs(GPU)
    row = pd.Series(r)
    result, _, detail = pipe.simulate_row(row, gpu_spec(GPU), profile, accumulate, host, None,
                                          pipe.ep_layer_rows(pd.DataFrame(), row, get_model(model).top_k), hold_s)
    schedule = pipe.build_schedule("dualpipev", 2, n)
    costs, kern = detail["stage_costs"], detail.get("stage_kernel_s", {})
    out: dict[int, list[dict]] = {0: [], 1: []}
    for rank, label, start, end in result.op_spans:
        if "&" not in str(label):
            continue
        f_lab, b_lab = str(label).split("&")
        f_stage = schedule.stage_of(int(rank), int(f_lab.split(".")[1]))
        b_stage = schedule.stage_of(int(rank), int(b_lab.split(".")[1]))
        d = {"label": str(label), "span_s": float(end - start), "f_s": float(costs[f_stage]["f_s"])}
        b_kinds = ("B", "W") if b_lab.startswith("BW") else ("B",)
        for part, stage, kinds in (("F", f_stage, ("F",)), ("B", b_stage, b_kinds)):
            for c in COMPONENTS:
                d[f"twin_{part}_{c}_ms"] = sum(float(v) * 1e3 for k in kinds
                                               for cc, v in kern.get(stage, {}).get(k, {}).items()
                                               if (cc in ("launch", "fixed") and c == "memory") or cc == c)
        out[int(rank)].append(d)
    return out


def _union_s(iv: list[tuple[float, float]]) -> float:
    tot, cur_s, cur_e = 0.0, None, None
    for s, e in sorted(iv):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                tot += cur_e - cur_s
            cur_s, cur_e = s, e
        else:
            cur_e = max(cur_e, e)
    return tot + (cur_e - cur_s if cur_e is not None else 0.0)


def measured_pairs(host: pd.DataFrame, model: str, n: int) -> dict[int, list[dict]]:
    """Per rank, the FB pairs of the timed steps in step order: op_index, span_s and f_s (median over the reps)."""
    h = host[(host["model"] == model) & (host["schedule"] == "dualpipev") & (host["num_microbatches"] == n)]
    out: dict[int, list[dict]] = {}
    for rank, g in h.groupby("rank"):
        rows = []
        for idx, o in g[g["kind"] == "FB"].groupby("op_index"):
            spans, fs = [], []
            for rep, fb in o.groupby("rep"):
                fb = fb.iloc[0]
                sends = g[(g["rep"] == rep) & (g["op_index"] == idx) & (g["kind"] == "send")
                          & (g["microbatch"] == fb["microbatch"]) & (g["chunk"] == fb["chunk"])]
                spans.append(fb["end_s"] - fb["start_s"])
                if len(sends):
                    fs.append(float(sends["start_s"].min()) - fb["start_s"])
            rows.append({"op_index": int(idx), "span_s": float(np.median(spans)),
                         "f_s": float(np.median(fs)) if fs else float("nan")})
        out[int(rank)] = sorted(rows, key=lambda x: x["op_index"])
    return out


def kernel_pairs(events: pd.DataFrame, model: str, n: int) -> dict[int, dict[int, dict]]:
    """Per rank and FB op_index of the profiled step: kernel ms per component in the F and B parts, the compute
    stream's gaps inside the pair, the NCCL kernels' time inside the pair, and the pair's GPU span."""
    ev = events[(events["model"] == model) & (events["schedule"] == "dualpipev") & (events["num_microbatches"] == n)
                & (events["event"] != "op_host")]
    out: dict[int, dict[int, dict]] = {}
    for rank, g in ev.groupby("rank"):
        nccl_all = g[g["name"].str.contains("nccl", case=False)]
        compute_stream = g[~g["name"].str.contains("nccl", case=False)]["stream"].mode().iloc[0]
        for idx, o in g[g["kind"] == "FB"].groupby("op_index"):
            comp = o[(o["stream"] == compute_stream)].sort_values("start_us")
            if comp.empty:
                continue
            t0, t1 = float(comp["start_us"].min()), float(comp["end_us"].max())
            # the F's send: the pair's first NCCL kernel after its first compute kernel (the receives before it
            # carry the same op_index)
            sends = o[o["name"].str.contains("nccl", case=False) & (o["start_us"] > t0)].sort_values("start_us")
            loss = comp[comp["name"].str.contains("nll_loss_forward", case=False)]
            cut = float(sends["start_us"].iloc[0]) if len(sends) else \
                float(loss["end_us"].iloc[0]) + 1e-3 if len(loss) else float("nan")
            rec_ = {"gpu_span_ms": (t1 - t0) / 1e3, "kernels": len(comp),
                    "gaps_ms": (t1 - t0 - _union_s(list(zip(comp["start_us"], comp["end_us"])))) / 1e3}
            for part, sel in (("F", comp["end_us"] <= cut), ("B", comp["end_us"] > cut)):
                if np.isnan(cut):   # neither a send nor the loss marks the F's end: no split
                    continue
                p = comp[sel]
                cls = p["name"].astype(str).map(pipe.kernel_component)
                dur = (p["end_us"] - p["start_us"]) / 1e3
                for c in COMPONENTS:
                    rec_[f"{part}_{c}_ms"] = float(dur[cls == c].sum())
                rec_[f"{part}_ms"] = float(dur.sum())
                rec_[f"{part}_gpu_span_ms"] = ((float(p["end_us"].max()) - float(p["start_us"].min())) / 1e3
                                               if len(p) else 0.0)
            inside = nccl_all[(nccl_all["end_us"] > t0) & (nccl_all["start_us"] < t1)]
            rec_["nccl_inside_ms"] = float((inside["end_us"].clip(upper=t1) - inside["start_us"].clip(lower=t0)).sum()) / 1e3
            out.setdefault(int(rank), {})[int(idx)] = rec_
    return out


def kernel_clocks(folder: Path) -> pd.DataFrame:
    """The profiled steps' compute kernels each at its GPU's nearest 100 ms nvidia-smi SM clock sample (gpu_clocks.csv,
    within 0.1 s; the probe's profiler axis to UTC by profiler_t0_ns): per (n, component, kernel name, rank) with calls on
    both ranks, the median duration (us), clock (MHz) and cycles (duration x clock, in 1e3 cycles), and the correlation
    of duration with 1 / clock over the calls. A kernel whose time goes as 1 / clock has the same cycles on both ranks."""
    ev = read_csv(folder / "pipeline_kernel_events.csv").drop(columns=["sm_clock_mhz"])
    clocks = read_csv(folder / "gpu_clocks.csv")
    clocks["t"] = (pd.to_datetime(clocks["timestamp_utc"]) - pd.Timestamp("1970-01-01", tz="UTC")).dt.total_seconds()
    ev = ev[ev["event"] == "kernel"]
    ev = ev.assign(t=ev["profiler_t0_ns"] / 1e9 + ev["start_us"] / 1e6, d=ev["end_us"] - ev["start_us"],
                   comp=ev["name"].astype(str).map(pipe.kernel_component))
    ev = ev[ev["comp"].isin(("attention", "grouped_gemm"))]
    parts = []
    for g, k in clocks.groupby("gpu_index"):
        mine = ev[ev["rank"] == g].sort_values("t")
        parts.append(pd.merge_asof(mine, k.sort_values("t")[["t", "sm_clock_mhz"]], on="t", direction="nearest",
                                   tolerance=0.1))
    j = pd.concat(parts).dropna(subset=["sm_clock_mhz"])
    j = j.assign(cycles=j["d"] * j["sm_clock_mhz"] / 1e3)
    rows = []
    for (n, comp, name), s in j.groupby(["num_microbatches", "comp", "name"]):
        if s["rank"].nunique() < 2 or len(s) < 8:
            continue
        corr = float(np.corrcoef(s["d"], 1 / s["sm_clock_mhz"])[0, 1]) if s["sm_clock_mhz"].nunique() > 1 else np.nan
        for rank, r in s.groupby("rank"):
            rows.append({"n": int(n), "component": comp, "kernel": str(name)[:48], "rank": int(rank), "calls": len(r),
                         "dur_us": float(r["d"].median()), "clock_mhz": float(r["sm_clock_mhz"].median()),
                         "kcycles": float(r["cycles"].median()), "corr_d_inv_f": corr})
    return pd.DataFrame(rows)


def table(folder: Path, inputs: tuple | None = None) -> pd.DataFrame:
    """One row per (model, n, rank, pair position k) of a probe folder's DualPipeV configurations."""
    hpath = folder / "pipeline_host.csv"
    host = read_csv(hpath) if csv_exists(hpath) else read_csv(folder / "pipeline_ops.csv")   # a bench folder's ops
    kpath = folder / "pipeline_kernel_events.csv"
    events = read_csv(kpath) if csv_exists(kpath) else pd.DataFrame()
    rows = []
    inputs = inputs if inputs is not None else prereg.two_gpu_inputs(GPU)
    env = folder / "env_pipeline_probe.json"
    layers = int(json.loads(env.read_text())["config"]["num_layers"]) if env.is_file() else \
        int(read_csv(folder / "pipeline_step.csv")["num_layers"].iloc[0])
    dv = host[host["schedule"] == "dualpipev"]
    for (model, n), _ in dv.groupby(["model", "num_microbatches"]):
        meas = measured_pairs(host, str(model), int(n))
        twin = twin_pairs(str(model), int(n), layers, inputs)
        kern = kernel_pairs(events, str(model), int(n)) if not events.empty else {}
        for rank, pairs in meas.items():
            for k, m in enumerate(pairs):
                t = twin.get(rank, [])[k] if k < len(twin.get(rank, [])) else {}
                rows.append({"model": model, "n": int(n), "rank": rank, "k": k, "op_index": m["op_index"],
                             "label": t.get("label"), "meas_ms": m["span_s"] * 1e3, "twin_ms": t.get("span_s", np.nan) * 1e3,
                             "meas_f_ms": m["f_s"] * 1e3, "twin_f_ms": t.get("f_s", np.nan) * 1e3,
                             **kern.get(rank, {}).get(m["op_index"], {}),
                             **{c: v for c, v in t.items() if c.startswith("twin_")}})
    df = pd.DataFrame(rows)
    if not df.empty:
        df["miss_ms"] = df["meas_ms"] - df["twin_ms"]
    return df


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, n, rank, pair type: the F's chunk and the B's chunk), the mean over its pairs of: the span's miss
    (measured - twin), the F part's miss, and where kernels exist the kernel ms less the twin's per part and component,
    the compute stream's gaps and the NCCL time inside; ms."""
    d = df.assign(pair=df["label"].str.replace(r"F\d+\.(\d)&BW\d+\.(\d)", r"F.\1&BW.\2", regex=True),
                  f_miss_ms=df["meas_f_ms"] - df["twin_f_ms"])
    cols = ["miss_ms", "f_miss_ms"]
    if "F_ms" in d:
        for part in "FB":
            for c in COMPONENTS:
                d[f"{part}_{c}_d_ms"] = d[f"{part}_{c}_ms"] - d[f"twin_{part}_{c}_ms"]
            cols += [f"{part}_{c}_d_ms" for c in COMPONENTS]
        cols += ["gaps_ms", "nccl_inside_ms"]
    g = d.groupby(["model", "n", "rank", "pair"])
    return g[cols].mean().join(g.size().rename("pairs")).reset_index()


def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.s30fb", __doc__)
    ap.add_argument("folders", nargs="+", help="probe folders under the records root (with pipeline_host.csv)")
    args = ap.parse_args(argv)
    pd.set_option("display.width", 250, "display.max_columns", 60, "display.max_rows", 500)
    inputs = prereg.two_gpu_inputs(GPU)
    for f in args.folders:
        folder = Path(rec.records_root()) / f
        with entry.user_inputs("folder", f, "a probe folder under the records root with pipeline_host.csv"):
            df = table(folder, inputs)
        print(f"== {f}")
        print(df.round(2).to_string(index=False))
        print(summary(df).round(2).to_string(index=False))
        if csv_exists(folder / "gpu_clocks.csv") and csv_exists(folder / "pipeline_kernel_events.csv"):
            print(kernel_clocks(folder).round(2).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""s33train (issue 13): where the twin's train step is short. Every committed train_step record is priced under (the
`committed` table) and the profiled steps of real/campaigns/s33train.sh place the residual among kernels and gaps
(the `traces` table). A diagnostic: nothing fitted, no switch, no twin change.

committed  every train_step row of a committed model.csv of the one-GPU folders (h100, h200, any depth; the
           fit_inputs_* copies left out), priced as `twin validate` prices it (calibration.whole_step.predict_model_row
           under the GPU's committed profile), with the twin's GPU seconds per component (gemm, grouped_gemm,
           attention, memory, launch) and per phase (fwd, bwd, opt) beside the measured step
traces      per profiled case (<gpu>/s33train/trace/: train_trace_steps.csv, train_kernels.csv): the timed step
           (median of 5, as bench_train times it) against the twin's step, and the profiled steps (CUDA activity only)
           split into the kernels' sum by category and phase, the gaps between kernels (GPU idle inside the span, by
           the phase of the kernel that ends the gap) and the head / tail (event time outside the kernels' span:
           the first launch after the start event, the loss read back and the end event after the last kernel);
           beside each, the twin's term (its GPU seconds per component and phase, its idle: step - GPU sum)

    python -m calibration.s33train [committed|traces|all] [--json FILE]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration.predict import timed_window_s
from calibration.records_io import csv_exists, glob_csv, read_csv
from calibration.validate import load_fitted_profile
from calibration.whole_step import gpu_spec, predict_model_row, train_step_ops, train_step_parts
from twin.core.specs import get_model

NAME = "s33train"
GPUS = ("h100", "h200")
TRACE_SUBDIR = f"{NAME}/trace"
COMPONENTS = ("gemm", "grouped_gemm", "attention", "memory", "launch")
PHASES = ("fwd", "bwd", "opt", "tail")
TWIN_PHASE = {"train_fwd": "fwd", "train_bwd": "bwd", "train_opt": "opt"}
# measured kernel category -> the twin component it is priced under (real/bench/kernel_names.py's categories):
# GEMMs (dense and grouped: the twin's gemm + grouped_gemm), attention, everything else the twin's memory + launch
MEASURED_GROUP = {"gemm": "gemm", "attention": "attention", "nccl": "other"}
CASE_KEY = ["model", "batch", "seq_len", "precision"]
# a gap between kernels up to this long is the GPU's own bubble between queued kernels (the bulk of the profiled
# steps' GPU-bound phases sit at 1.4-1.7 us); a longer one is the GPU waiting on the host (a host-bound stretch)
SMALL_GAP_US = 20.0


def _profiles(root):
    cache: dict = {}

    def get(gpu: str):
        if gpu not in cache:
            cache[gpu] = load_fitted_profile(gpu, rec.load_records(gpu, root))[0]
        return cache[gpu]
    return get


def twin_terms(row: dict, profile) -> dict:
    """The twin's step (timed_window_s of train_step_ops), GPU seconds per component and per phase, ops per phase."""
    spec, B, S, label, gpu = get_model(row["model"]), int(row["batch"]), int(row["seq_len"]), row["precision"], \
        gpu_spec(row["gpu"])
    parts = train_step_parts(spec, B, S, label, gpu, profile)
    out = {"twin_step_s": float(timed_window_s([], train_step_ops(spec, B, S, label, gpu, profile).ops, reps=1))}
    comp: dict = {}
    for name, e in parts.items():
        ph = TWIN_PHASE[name]
        out[f"twin_{ph}_gpu_s"] = float(sum(e.component_s.values()))
        out[f"twin_{ph}_ops"] = sum(1 for op in e.ops if op[0] is not None)
        out[f"twin_{ph}_host_s"] = float(sum(op[0] for op in e.ops if op[0] is not None))
        out[f"twin_{ph}_window_s"] = float(timed_window_s([], e.ops, reps=1))
        for k, v in e.component_s.items():
            comp[k] = comp.get(k, 0.0) + float(v)
    for k in COMPONENTS:
        out[f"twin_{k}_s"] = comp.get(k, 0.0)
    out["twin_gpu_s"] = sum(comp.values())
    out["twin_idle_s"] = out["twin_step_s"] - out["twin_gpu_s"]
    return out


def committed(root: Path | str | None = None) -> pd.DataFrame:
    """Every committed one-GPU train_step row beside the twin's price and terms (module doc)."""
    root = Path(rec.records_root() if root is None else root)
    profile = _profiles(root)
    rows = []
    for p in glob_csv(root, "model.csv", recursive=True):
        rel = Path(p).relative_to(root)
        if rel.parts[0] not in GPUS or any(x.startswith("fit_inputs") for x in rel.parts):
            continue
        d = read_csv(p)
        if "bench" not in d.columns:
            continue
        for _, r in d[d["bench"] == "train_step"].iterrows():
            row = {"gpu": rel.parts[0], "folder": str(rel.parent), "model": r["model"], "batch": int(r["batch"]),
                   "seq_len": int(r["seq_len"]), "precision": r["precision"], "measured_s": float(r["time_s"])}
            prof = profile(row["gpu"])
            pred = float(predict_model_row({**row, "bench": "train_step"}, gpu_spec(row["gpu"]), prof))
            rows.append({**row, "predicted_s": pred, **twin_terms(row, prof)})
    df = pd.DataFrame(rows)
    if len(df):
        df["rel_error"] = df["predicted_s"] / df["measured_s"] - 1
        df["residual_s"] = df["measured_s"] - df["predicted_s"]
    return df


def committed_summary(df: pd.DataFrame) -> dict:
    """Per GPU: rows, how many under-predicted, median / min / max signed error, the residual's fit on the
    predicted step (residual = a + b x predicted, least squares: a the constant seconds, b the proportional share),
    and the residual's correlation with each twin component's seconds; per (gpu, precision) and (gpu, model) the
    median signed error and residual."""
    out: dict = {}
    if df.empty:
        return out
    for gpu, d in df.groupby("gpu"):
        X = np.c_[np.ones(len(d)), d["predicted_s"]]
        (a, b), *_ = np.linalg.lstsq(X, d["residual_s"], rcond=None)
        left = d["residual_s"] - X @ np.array([a, b])
        out[gpu] = {
            "rows": int(len(d)), "under": int((d["rel_error"] < 0).sum()),
            "median_rel_error": float(d["rel_error"].median()), "min_rel_error": float(d["rel_error"].min()),
            "max_rel_error": float(d["rel_error"].max()), "median_residual_s": float(d["residual_s"].median()),
            "fit_constant_s": float(a), "fit_share": float(b), "fit_rms_left_s": float(left.std()),
            "residual_rms_s": float(d["residual_s"].std()),
            "corr_residual_with": {k: float(np.corrcoef(d["residual_s"], d[f"twin_{k}_s"])[0, 1])
                                   for k in COMPONENTS if d[f"twin_{k}_s"].std() > 0},
            "corr_rel_error_with_share": {k: float(np.corrcoef(d["rel_error"], d[f"twin_{k}_s"] / d["predicted_s"])[0, 1])
                                          for k in COMPONENTS if d[f"twin_{k}_s"].std() > 0},
            "by_precision": {p: {"rows": int(len(g)), "median_rel_error": float(g["rel_error"].median()),
                                 "median_residual_s": float(g["residual_s"].median())}
                             for p, g in d.groupby("precision")},
            "by_model": {m: {"rows": int(len(g)), "median_rel_error": float(g["rel_error"].median()),
                             "median_residual_s": float(g["residual_s"].median())} for m, g in d.groupby("model")},
        }
    return out


# ---------------------------------------------------------------------------------------------------------------
# the profiled steps
# ---------------------------------------------------------------------------------------------------------------

def _group(cat: str) -> str:
    return MEASURED_GROUP.get(cat, "memory")


def _gaps_us(k: pd.DataFrame) -> np.ndarray:
    """Per kernel (in start order) the GPU idle right before it: start - the latest end of the kernels before it."""
    k = k.sort_values("start_us")
    ends = np.maximum.accumulate(k["end_us"].to_numpy())
    prev = np.r_[k["start_us"].iloc[0], ends[:-1]]
    return np.maximum(0.0, k["start_us"].to_numpy() - prev)


def trace_cases(folder: Path | str, gpu: str, root: Path | str | None = None) -> list[dict]:
    """Per case of a train_trace folder: the measured split (module doc) beside the twin's terms."""
    folder = Path(folder)
    steps = read_csv(folder / "train_trace_steps.csv")
    kernels = read_csv(folder / "train_kernels.csv")
    profile = _profiles(rec.records_root() if root is None else root)
    out = []
    for key, st in steps.groupby(CASE_KEY, sort=False):
        case = dict(zip(CASE_KEY, key))
        row = {"gpu": gpu, **{k: (int(v) if k in ("batch", "seq_len") else v) for k, v in case.items()}}
        ks = kernels
        for k, v in case.items():
            ks = ks[ks[k] == v]
        timed = st[st["mode"] == "timed"]
        cu = st[st["mode"] == "cuda_only"].sort_values("step")
        r = {**row, "measured_s": float(timed["time_s"].median()),
             "profiled_s": float(cu["time_s"].mean()), "gpu_span_s": float(cu["gpu_span_s"].mean()),
             "kernel_sum_s": float(cu["kernel_sum_s"].mean()), "busy_s": float(cu["busy_s"].mean()),
             "gap_s": float(cu["gap_s"].mean()), "kernels": float(cu["kernels"].mean())}
        r["head_tail_s"] = r["profiled_s"] - r["gpu_span_s"]
        n_steps = max(1, len(cu))
        kc = ks[ks["mode"] == "cuda_only"]
        kh = ks[ks["mode"] == "with_host"]
        cat_s = kc.assign(d=kc["end_us"] - kc["start_us"]).groupby("category")["d"].sum() * 1e-6 / n_steps
        r["measured_category_s"] = {c: float(v) for c, v in cat_s.items()}
        grp = {}
        for c, v in cat_s.items():
            grp[_group(c)] = grp.get(_group(c), 0.0) + float(v)
        r["measured_group_s"] = grp
        # phases: the with_host step's phase of the kernel at the same index (the same call sequence: the kernels'
        # names agree index by index where the counts match), else none
        acc: dict = {}
        matched = 0
        for s, one in kc.groupby("step"):
            one = one.sort_values("index")
            host = kh[kh["step"] == kh["step"].min()].sort_values("index") if len(kh) else kh
            if len(host) == len(one) and (host["kernel"].to_numpy() == one["kernel"].to_numpy()).all():
                matched += 1
                one = one.assign(phase=host["phase"].to_numpy())
                one = one.sort_values("start_us")
                one = one.assign(gap=_gaps_us(one), d=one["end_us"] - one["start_us"])
                for ph, g in one.groupby("phase"):
                    small = g["gap"] <= SMALL_GAP_US
                    for name, v in (("kernel", g["d"].sum()), ("gap", g["gap"].sum()),
                                    ("small_gap", g["gap"][small].sum()), ("host_wait", g["gap"][~small].sum()),
                                    ("launch_span", g["launch_us"].max() - g["launch_us"].min()),
                                    ("kernels", len(g) * 1e6)):
                        acc.setdefault(name, {}).setdefault(ph, []).append(float(v) * 1e-6)
        r["phases_matched_steps"] = matched
        for name in ("kernel", "gap", "small_gap", "host_wait", "launch_span", "kernels"):
            r[f"measured_phase_{name}_s" if name != "kernels" else "measured_phase_kernels"] = {
                p: float(np.mean(v)) for p, v in acc.get(name, {}).items()}
        r["with_host_profiled_s"] = float(st[st["mode"] == "with_host"]["time_s"].mean())
        r.update(twin_terms(row, profile(gpu)))
        r["twin_predicted_s"] = float(predict_model_row({**row, "bench": "train_step"}, gpu_spec(gpu), profile(gpu)))
        r["rel_error"] = r["twin_predicted_s"] / r["measured_s"] - 1
        # the residual, split: kernels (measured kernel sum - the twin's GPU sum), GPU idle inside the span (gaps -
        # the twin's idle), head / tail, and the timed step against the profiled one (profiler's own cost)
        r["split_s"] = {"kernels": r["kernel_sum_s"] - r["twin_gpu_s"],
                        "overlap": r["busy_s"] - r["kernel_sum_s"],
                        "gaps_less_twin_idle": r["gap_s"] - r["twin_idle_s"],
                        "head_tail": r["head_tail_s"],
                        "timed_less_profiled": r["measured_s"] - r["profiled_s"]}
        r["residual_s"] = r["measured_s"] - r["twin_predicted_s"]
        r["split_check_s"] = r["residual_s"] - sum(r["split_s"].values()) - (r["twin_step_s"] - r["twin_predicted_s"])
        out.append(r)
    return out


def trace_folders(root: Path | str | None = None) -> list[tuple[str, Path]]:
    root = Path(rec.records_root() if root is None else root)
    return [(g, root / g / TRACE_SUBDIR) for g in GPUS if csv_exists(root / g / TRACE_SUBDIR / "train_trace_steps.csv")]


def format_committed(df: pd.DataFrame, summ: dict) -> str:
    lines = ["Committed one-GPU train_step records, priced as `twin validate` prices them (s33train):"
             + ("" if summ else " no records")]
    for gpu, s in summ.items():
        lines.append(f"  {gpu}: {s['under']} of {s['rows']} under; signed error median {s['median_rel_error']:+.1%} "
                     f"(min {s['min_rel_error']:+.1%}, max {s['max_rel_error']:+.1%}); residual median "
                     f"{s['median_residual_s'] * 1e3:.2f} ms = {s['fit_constant_s'] * 1e3:.2f} ms + "
                     f"{s['fit_share']:.1%} x predicted (rms left {s['fit_rms_left_s'] * 1e3:.2f} of "
                     f"{s['residual_rms_s'] * 1e3:.2f} ms)")
        lines.append("    corr(residual, twin component s): " + ", ".join(
            f"{k} {v:+.2f}" for k, v in s["corr_residual_with"].items()))
        lines.append("    corr(error, component share): " + ", ".join(
            f"{k} {v:+.2f}" for k, v in s["corr_rel_error_with_share"].items()))
        lines.append("    by precision: " + ", ".join(f"{p} {v['median_rel_error']:+.1%} / {v['median_residual_s'] * 1e3:.2f} ms"
                                                   f" ({v['rows']})" for p, v in s["by_precision"].items()))
        lines.append("    by model: " + ", ".join(f"{m} {v['median_rel_error']:+.1%} / {v['median_residual_s'] * 1e3:.2f} ms"
                                               for m, v in s["by_model"].items()))
    return "\n".join(lines)


def format_traces(cases: list[dict]) -> str:
    if not cases:
        return "s33train traces: no records"
    lines = ["s33train profiled train steps (ms a step; twin beside):"]
    for r in cases:
        lines.append(f"  {r['gpu']} {r['model']} s{r['seq_len']} b{r['batch']} {r['precision']}: timed "
                     f"{r['measured_s'] * 1e3:.2f}, twin {r['twin_predicted_s'] * 1e3:.2f} ({r['rel_error']:+.1%}, "
                     f"residual {r['residual_s'] * 1e3:+.2f}); profiled {r['profiled_s'] * 1e3:.2f} = span "
                     f"{r['gpu_span_s'] * 1e3:.2f} + head/tail {r['head_tail_s'] * 1e3:.2f}; kernels "
                     f"{r['kernel_sum_s'] * 1e3:.2f} ({r['kernels']:.0f}) vs twin GPU {r['twin_gpu_s'] * 1e3:.2f} "
                     f"({sum(r[f'twin_{p}_ops'] for p in ('fwd', 'bwd', 'opt'))} ops); gaps {r['gap_s'] * 1e3:.2f} vs "
                     f"twin idle {r['twin_idle_s'] * 1e3:.2f}")
        g = r["measured_group_s"]
        lines.append(f"    by kind: gemm {g.get('gemm', 0) * 1e3:.2f} vs twin {(r['twin_gemm_s'] + r['twin_grouped_gemm_s']) * 1e3:.2f}; "
                     f"attention {g.get('attention', 0) * 1e3:.2f} vs {r['twin_attention_s'] * 1e3:.2f}; memory-bound "
                     f"{g.get('memory', 0) * 1e3:.2f} vs {(r['twin_memory_s'] + r['twin_launch_s']) * 1e3:.2f}")
        if r["measured_phase_kernel_s"]:
            lines.append("    by phase, measured kernels / bubbles (gaps <= 20 us) / host waits (longer gaps) / launch span "
                         "vs the twin's GPU / host / window (the twin's opt holds the bias update, measured in tail):")
            for ph in ("fwd", "bwd", "opt"):
                m = {n: sum(r[f"measured_phase_{n}_s"].get(x, 0.0) for x in ((ph, "tail") if ph == "opt" else (ph,)))
                     for n in ("kernel", "small_gap", "host_wait", "launch_span")}
                lines.append(f"      {ph}: {m['kernel'] * 1e3:.2f} / {m['small_gap'] * 1e3:.2f} / {m['host_wait'] * 1e3:.2f} / "
                             f"{m['launch_span'] * 1e3:.2f} ({r['measured_phase_kernels'].get(ph, 0):.0f} kernels) vs "
                             f"{r[f'twin_{ph}_gpu_s'] * 1e3:.2f} / {r[f'twin_{ph}_host_s'] * 1e3:.2f} / "
                             f"{r[f'twin_{ph}_window_s'] * 1e3:.2f} ({r[f'twin_{ph}_ops']} ops)")
        lines.append("    residual split: " + ", ".join(f"{k} {v * 1e3:+.2f}" for k, v in r["split_s"].items()))
    return "\n".join(lines)


def section(root: Path | str | None = None) -> dict:
    df = committed(root)
    cases = [c for gpu, f in trace_folders(root) for c in trace_cases(f, gpu, root)]
    return {"committed": committed_summary(df), "traces": cases}


def main(argv: list[str] | None = None) -> int:
    ap = entry.parser(f"calibration.{NAME}", __doc__)
    ap.add_argument("action", nargs="?", default="all", choices=["committed", "traces", "all"])
    ap.add_argument("--json", type=Path, help="write the figures here (calibration/s33train_summary.json)")
    args = ap.parse_args(argv)
    root = rec.records_root()
    out: dict = {}
    if args.action in ("committed", "all"):
        df = committed(root)
        out["committed"] = committed_summary(df)
        print(format_committed(df, out["committed"]))
    if args.action in ("traces", "all"):
        out["traces"] = [c for gpu, f in trace_folders(root) for c in trace_cases(f, gpu, root)]
        print(format_traces(out["traces"]))
    if args.json:
        entry.write_json(args.json, out, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())

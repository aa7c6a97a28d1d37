"""Validation report (`twin validate --out DIR`), in the shared page style (reports/page.py).

Writes, staged and atomic:
  report.html, report.md     a verdict (held-out error against the targets per GPU, and the H800
                             trace), the per-GPU and per-op-kind errors, the H100 -> H200 transfer,
                             the H800 trace phase by phase, the SM-reservation check, the plots
  result.json                the validation result (every case, the summaries, the trace)
  validation_cases.csv       every predicted case
  validation_scatter.png     predicted against measured (log-log, identity line, per GPU and op kind)
  validation_error_by_op.png median |error| by op kind on the held-out cases
  h800_trace.csv, h800_trace.png   DeepSeek's H800 trace beside the twin, phase by phase (when present)
  sm_reserve.csv, sm_reserve.png   the SM-reservation slowdown, twin against measured (when present)
  pipeline_<i>.png, pipeline_<i>.trace.json   each pipeline case's ranks, measured above the twin: a plot and a
                             Chrome trace for Perfetto (op names and tracks as real/pipeline/bench.py's traces)
Validation predicts recorded measurements and has no scenario, so there is no scenario.resolved.toml.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from calibration.sm_reserve import slowdown_png
from calibration.validate import format_blocks
from calibration.validate_sections import JUDGED
from reports import page as pg
from reports.page import Page
from twin.core.atomic import staged_dir
from twin.core.chrome_trace import complete_slice, nested_cleanly
from twin.core.results import to_json
from twin.core.units import GIB

CASES_CSV = "validation_cases.csv"
SCATTER, BY_OP = "validation_scatter.png", "validation_error_by_op.png"
TRACE_CSV, TRACE_PNG = "h800_trace.csv", "h800_trace.png"
SM_CSV, SM_PNG = "sm_reserve.csv", "sm_reserve.png"
BY_KIND = "validation_by_kind.png"
PIPELINE_TRACE = "pipeline_{}.trace.json"   # a pipeline case's measured and twin ops, Chrome trace
KIND_COLORS = {"F": "#4477aa", "B": "#ee6677", "W": "#ccbb44", "BW": "#aa3377", "FB": "#228833",
               "send": "#bbbbbb", "recv": "#dddddd", "allreduce": "#66ccee", "optimizer": "#777777"}


# --------------------------------------------------------------------------- plots

def _log_identity_axes(ax, cases: pd.DataFrame, title: str) -> None:
    """Log axes of twin against measured seconds over every case's span (a margin each side), with
    the identity line."""
    lo = min(cases["measured_s"].min(), cases["predicted_s"].min()) * 0.8
    hi = max(cases["measured_s"].max(), cases["predicted_s"].max()) * 1.25
    ax.plot([lo, hi], [lo, hi], "k-", lw=1, label="identity")
    ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi), xlabel="measured (s)", ylabel="twin (s)",
           title=title)


def plot_scatter(cases: pd.DataFrame):
    fig, ax = pg.figure(7.5, 6.5)
    for (gpu, bench), g in cases.groupby(["gpu", "bench"]):
        ax.scatter(g["measured_s"], g["predicted_s"], s=10, alpha=0.6, label=f"{gpu.upper()} {bench}",
                   marker="o" if gpu == "h100" else "^")
    _log_identity_axes(ax, cases, "The twin against every measured case")
    fig.legend(fontsize=7, ncol=1, loc="outside right upper")
    return fig


def plot_error_by_op(held: pd.DataFrame, target: float):
    tab = held.assign(abs_err=held["rel_error"].abs()).groupby(["bench", "gpu"])["abs_err"].median().unstack("gpu")
    tab.columns = [c.upper() for c in tab.columns]
    fig, ax = pg.figure(8, 4.2)
    tab.plot.bar(ax=ax, rot=30)
    for lab in ax.get_xticklabels():
        lab.set_horizontalalignment("right")
    ax.axhline(target, color="k", ls="--", lw=1, label=f"{pg.pct(target)} target (median)")
    ax.yaxis.set_major_formatter(pg.axis_formatter(pg.pct))
    ax.set(ylabel="median |error| (held-out)", xlabel="op kind", title="Held-out error by op kind")
    ax.legend(fontsize=8)
    return fig


def plot_by_kind(cases: pd.DataFrame):
    """Predicted against measured per kind of case (one colour per kind; H100 circles, H200 triangles,
    filled = one GPU, open = several)."""
    fig, ax = pg.figure(7.5, 6.5)
    kinds = sorted(cases["kind"].unique())
    cmap = {k: f"C{i % 10}" for i, k in enumerate(kinds)}
    for (gpu, kind, n), g in cases.groupby(["gpu", "kind", "num_gpus"]):
        ax.scatter(g["measured_s"], g["predicted_s"], s=12, alpha=0.7, label=f"{gpu.upper()} {kind} x{n}",
                   marker="o" if gpu == "h100" else "^", facecolors=cmap[kind] if n == 1 else "none",
                   edgecolors=cmap[kind])
    _log_identity_axes(ax, cases, "The twin against measured, per kind of case")
    fig.legend(fontsize=6, ncol=1, loc="outside right upper")
    return fig


def plot_pipeline(p: dict):
    """Per-rank timeline of one pipeline step: the measured ops (pipeline_ops.csv, first repetition)
    above, the twin's simulated op spans (PipelineResult.op_spans) below, on one time axis. The
    measured panel has a row per GPU (global rank = dp rank x pp + pp rank, real/pipeline/engine.py:
    PP2 x EP2 has four); the twin simulates the pp pipeline ranks once, every data-parallel (and
    expert-parallel) replica of a stage alike."""
    pp = int(p["pp"])
    meas = p["measured_ops"]
    ranks = sorted({int(o[0]) for o in meas}) or list(range(pp))
    fig, axes = pg.figure(9, 1.0 + 0.45 * (len(ranks) + pp), nrows=2, ncols=1, sharex=True,
                          height_ratios=[len(ranks), pp])
    t0 = min((o[4] for o in meas), default=0.0)
    span = max([o[5] - t0 for o in meas] + [s[3] for s in p["simulated_op_spans"]] + [1e-9])

    def label(ax, rank, start, end, text):
        if end - start > 0.04 * span:    # only bars wide enough to hold their label
            ax.text((start + end) / 2 * 1e3, rank, text, ha="center", va="center", fontsize=5)

    for rank, kind, mb, chunk, start, end in meas:
        axes[0].barh(rank, (end - start) * 1e3, left=(start - t0) * 1e3, color=KIND_COLORS.get(kind, "#999999"),
                     edgecolor="white", lw=0.3)
        if kind in ("F", "B", "W", "BW", "FB"):
            label(axes[0], rank, start - t0, end - t0, f"{kind}{mb}")
    for rank, op, start, end in p["simulated_op_spans"]:
        kind = "FB" if "&" in op else op.rstrip("0123456789.")
        axes[1].barh(rank, (end - start) * 1e3, left=start * 1e3, color=KIND_COLORS.get(kind, "#999999"),
                     edgecolor="white", lw=0.3)
        label(axes[1], rank, start, end, op.replace(".0", ""))
    several = len(ranks) > pp
    axes[0].set_yticks(ranks, [f"GPU {r} (stage rank {r % pp})" if several else f"rank {r}" for r in ranks], fontsize=7)
    axes[1].set_yticks(range(pp), [f"rank {r}" + (" (each replica)" if several else "") for r in range(pp)], fontsize=7)
    for ax, title in zip(axes, ("measured (real/)", "twin (SimPy)")):
        ax.invert_yaxis()
        ax.set_title(title, fontsize=8)
    axes[1].set_xlabel("ms from the step's first op")
    fig.suptitle(p["name"], fontsize=8)
    return fig


# real/pipeline/bench.py's tracks (its TRACK): compute ops, point-to-point, the data-parallel collectives
TRACE_THREADS = ("compute", "comm", "dp")
THREAD_OF_KIND = {"send": 1, "recv": 1, "allreduce": 2, "optimizer": 2}
TWIN_PID_OFFSET = 100   # the twin's ranks after the measured GPUs in Perfetto's list


def _measured_name(kind: str, mb: int, chunk: int) -> str:
    """A measured op (not an overlapped pair) named as the twin names it: `F3.0`, `BW1.1`, `send 0.1`."""
    if kind in THREAD_OF_KIND:
        return f"{kind} {mb}.{chunk}" if mb >= 0 else kind
    return f"{kind}{mb}.{chunk}"


def pipeline_trace(p: dict) -> dict:
    """One pipeline case as a Chrome trace (s25walk; issue 13's "the measured trace beside the twin's"): each GPU's
    measured ops (pipeline_ops.csv's first repetition) as processes 0.., the twin's simulated ops as processes
    100.., one time axis in microseconds from the step's first op, tracks and op names as real/pipeline/bench.py
    writes its own traces (`F3.0`, `F2.1&BW0.0`; threads compute, comm, dp), so Perfetto shows them one above the
    other."""
    pp = int(p["pp"])
    meas, spans = p["measured_ops"], p["simulated_op_spans"]
    forward_half = {(int(r), op.split("&", 1)[0]): op for r, op, _, _ in spans if "&" in op}
    t0 = min((o[4] for o in meas), default=0.0)
    events: list[dict] = []

    def process(pid: int, name: str) -> None:
        events.append({"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": name}})
        events.append({"ph": "M", "name": "process_sort_index", "pid": pid, "tid": 0, "args": {"sort_index": pid}})
        events.extend({"ph": "M", "name": "thread_name", "pid": pid, "tid": tid, "args": {"name": thread}}
                      for tid, thread in enumerate(TRACE_THREADS))

    for rank in sorted({int(o[0]) for o in meas}):
        process(rank, f"measured: GPU {rank} (PP rank {rank % pp})")
    for rank in range(pp):
        process(TWIN_PID_OFFSET + rank, f"twin: PP rank {rank}")
    for rank, kind, mb, chunk, start, end in meas:
        if end > start:
            # an overlapped F&BW pair by the twin's label of its stage rank whose forward half it is
            # (pipeline_ops.csv keeps the forward's micro-batch and chunk only)
            name = (forward_half.get((int(rank) % pp, f"F{int(mb)}.{int(chunk)}"), f"F{int(mb)}.{int(chunk)}&BW")
                    if kind == "FB" else _measured_name(kind, int(mb), int(chunk)))
            events.append(complete_slice(name, int(rank), THREAD_OF_KIND.get(kind, 0), start - t0, end - t0,
                                         args={"op": kind, "mb": int(mb), "chunk": int(chunk)}))
    for rank, op, start, end in spans:
        if end > start:
            events.append(complete_slice(op, TWIN_PID_OFFSET + int(rank), 0, start, end))
    return {"traceEvents": nested_cleanly(events), "displayTimeUnit": "ms",
            "otherData": {"case": p["name"], "gpu": p["gpu"], "config": p.get("config", {}), "measured_s": p["measured_s"],
                          "predicted_s": p["predicted_s"],
                          "time_axis": "seconds from the step's first measured op (measured) and from its start (twin)"}}


def _trace_table(tr: dict) -> pd.DataFrame:
    c = tr["chunk_pair"]
    rows = [{"phase": "chunk pair", "kind": "chunk_pair", "trace_us": c["trace_us"], "predicted_us": c["predicted_us"],
             "rel_error": c["rel_error"], "target": c["target"]}]
    rows += [{k: r[k] for k in ("phase", "kind", "trace_us", "predicted_us", "rel_error", "target")} for r in tr["phases"]]
    return pd.DataFrame(rows)


def plot_trace(tr: dict):
    table = _trace_table(tr)
    phases = table[table.kind != "chunk_pair"].iloc[::-1]
    fig, ax = pg.figure(8, 0.42 * len(phases) + 1.4)
    y = np.arange(len(phases))
    ax.barh(y + 0.2, phases.trace_us / 1e3, height=0.4, label="DeepSeek trace", color="#4477aa")
    ax.barh(y - 0.2, phases.predicted_us / 1e3, height=0.4, label="twin", color="#ee6677")
    for i, (_, r) in zip(y, phases.iterrows()):
        miss = not pd.isna(r.target) and abs(r.rel_error) > r.target
        ax.text(max(r.trace_us, r.predicted_us) / 1e3 * 1.02, i, pg.pct(r.rel_error, signed=True), va="center", fontsize=7,
                color="#aa3377" if miss else "k")
    ax.set_yticks(y, [f"{r.phase} ({r.kind})" for _, r in phases.iterrows()], fontsize=7)
    ax.set_xlim(0, max(phases.trace_us.max(), phases.predicted_us.max()) / 1e3 * 1.15)   # room for the error labels
    c = tr["chunk_pair"]
    ax.set(xlabel="ms per layer", title=f"H800 chunk pair: twin {pg.seconds(c['predicted_us'] / 1e6)} against the trace's "
           f"{pg.seconds(c['trace_us'] / 1e6)} ({pg.pct(c['rel_error'], signed=True)})")
    ax.legend(fontsize=7, loc="lower right")
    return fig


# --------------------------------------------------------------------------- files kept for callers

def _csv(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue()


def trace_files(tr: dict) -> dict[str, str | bytes]:
    return {TRACE_CSV: _csv(_trace_table(tr)), TRACE_PNG: pg.png(plot_trace(tr))}


def sm_reserve_csv(rows_by_gpu: dict) -> str:
    """The twin's SM-reservation slowdown beside the measured one, per GPU, mode, precision and SM count."""
    return _csv(pd.DataFrame([r for rows in rows_by_gpu.values() for r in rows]))


def write_trace_comparison(tr: dict, out_dir: Path) -> list[Path]:
    """h800_trace.csv and h800_trace.png alone into `out_dir` (atomically): DeepSeek's H800 chunk-pair
    trace and the twin, per phase, with the relative error and the target band where one applies."""
    files = trace_files(tr)
    with staged_dir(out_dir) as tmp:
        for name, data in files.items():
            (tmp / name).write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return [Path(out_dir) / n for n in files]


# --------------------------------------------------------------------------- the page

def _verdict(result: dict) -> str:
    t = result.get("targets", {})
    med_t, p90_t = t.get("median_abs_rel_error", 0.05), t.get("p90_abs_rel_error", 0.10)
    if "gpus" not in result:   # `twin validate --only` without the records
        return "Parts of the validation (`twin validate --only`): the records' cases were not computed in this run."
    parts = []
    for gpu, s in result["gpus"].items():
        if s["median_abs_rel_error"] is None:
            parts.append(f"{gpu.upper()} has no held-out cases")
            continue
        parts.append(f"{gpu.upper()} {pg.pct(s['median_abs_rel_error'])} median and {pg.pct(s['p90_abs_rel_error'])} P90 "
                     f"({'meets' if s['meets_targets'] else 'misses'} the targets)")
    met = all(s.get("meets_targets") for s in result["gpus"].values())
    text = (f"The twin predicts the held-out measurements within {pg.pct(med_t)} median and {pg.pct(p90_t)} P90 |error| "
            f"{'on every GPU' if met else 'not on every GPU'}: " + "; ".join(parts))
    tr = result.get("h800_trace")
    if tr:
        c = tr["chunk_pair"]
        text += (f"; DeepSeek's H800 chunk pair is {pg.above_below(c['rel_error'])} the trace"
                 + (f" (target {pg.pct(c['target'])})" if c.get("target") else ""))
        banded = [ph for ph in tr["phases"] if ph.get("target") is not None]
        missed = [ph for ph in banded if not ph.get("meets_target", True)]
        if missed:
            text += f", though {len(missed)} of its {len(banded)} phases miss their band"
    return text + "."


def _summary_rows(result: dict) -> list[list[str]]:
    return [[gpu.upper(), f"{s['num_cases']:,}", f"{s.get('num_predicted', 0):,}", pg.pct(s["median_abs_rel_error"]),
             pg.pct(s["p90_abs_rel_error"]), "met" if s["meets_targets"] else "NOT met"]
            for gpu, s in result.get("gpus", {}).items()]


def _by_bench_rows(result: dict) -> list[list[str]]:
    rows = []
    for gpu, s in result.get("gpus", {}).items():
        for bench, v in s.get("by_bench", {}).items():
            h, a = v["held_out"], v["all"]
            rows.append([gpu.upper(), bench, f"{h['num_cases']:,}", pg.pct(h["median_abs_rel_error"]) if h["num_cases"] else "—",
                         pg.pct(h["p90_abs_rel_error"]) if h["num_cases"] else "—", f"{a['num_cases']:,}",
                         pg.pct(a["median_abs_rel_error"])])
    return rows


def build_page(result: dict, cases: pd.DataFrame) -> Page:
    p = Page("Validation: the twin against measurements", _verdict(result))
    t = result.get("targets", {})
    p.para("Each recorded measurement (calibration/measurements/<gpu>/*.csv) is predicted with the fitted profile; "
           "the held-out cases were not used in the fit. Targets: held-out median |error| at most "
           f"{pg.pct(t.get('median_abs_rel_error', 0.05))} and P90 at most {pg.pct(t.get('p90_abs_rel_error', 0.10))} per GPU. "
           "Validation predicts recorded measurements and has no scenario.")
    inputs = result.get("inputs")
    if inputs:   # what the run read (s25walk)
        p.para(f"Records: `{inputs['records_root']}`; profiles: `{inputs['profiles_dir']}` "
               f"({', '.join(f'{g} {h[:12]}' for g, h in inputs['profiles_sha256'].items()) or 'none'}); "
               f"code {inputs['git_commit'][:12]}; parts: {', '.join(inputs['parts'])}.")
        for gpu, since in inputs.get("records_since_fit", {}).items():   # which records (s26refit)
            named = [f"`{n}` (changed)" for n in since["changed"]] + \
                [f"`{n}` (not read by that fit)" for n in since["added"]] + [f"`{n}` (missing)" for n in since["missing"]]
            p.warn(f"The {gpu.upper()} profile was fitted on other records than these (compared with "
                   f"{'its fit-input manifest' if since['compared'] == 'manifest' else 'its provenance'}): "
                   f"{', '.join(named)}. `twin fit` would refit from these records.")
    if "gpus" in result:   # not under `twin validate --only` without the records
        p.section("Per GPU").table(["GPU", "held-out cases", "cases predicted", "median |error|", "P90 |error|", "targets"],
                                   _summary_rows(result))
        p.section("Per op kind").table(["GPU", "op kind", "held-out cases", "median |error|", "P90 |error|", "all cases",
                                        "median |error| (all)"], _by_bench_rows(result))
    kinds = result.get("by_gpu_kind", {})
    # one row per GPU, kind and GPU count where the result has them (a pipeline of 4 GPUs apart from 2)
    rows = result.get("by_gpu_kind_gpus") or [{**v, "gpu": gpu, "kind": k} for gpu, per in kinds.items()
                                              for k, v in per.items()]
    if rows:
        p.section("Per kind of case").para(
            "Whole steps (train_step, prefill, decode, pipeline_step, ep_step) and layers are the issue-13 targets "
            f"(median at most {pg.pct(t.get('median_abs_rel_error', 0.05))}, P90 at most "
            f"{pg.pct(t.get('p90_abs_rel_error', 0.10))} held out, per GPU and GPU count); records of several GPUs of one host "
            "(<gpu>x<N> folders) are all held out (nothing is fitted to them).")
        p.table(["GPU", "kind", "GPUs", "held-out cases", "median |error|", "P90 |error|", "signed median", "targets"],
                [[v["gpu"].upper(), v["kind"], ",".join(map(str, np.atleast_1d(v["num_gpus"]))), f"{v['held_out']['num_cases']:,}",
                  pg.pct(v["held_out"]["median_abs_rel_error"]) if v["held_out"]["num_cases"] else "—",
                  pg.pct(v["held_out"]["p90_abs_rel_error"]) if v["held_out"]["num_cases"] else "—",
                  pg.pct(v["signed_median_rel_error"], signed=True),
                  "met" if (v["held_out"]["num_cases"] and v["held_out"]["median_abs_rel_error"] <= t.get("median_abs_rel_error", 0.05)
                            and v["held_out"]["p90_abs_rel_error"] <= t.get("p90_abs_rel_error", 0.10)) else "NOT met"]
                 for v in rows])
    pipes = result.get("pipelines", [])
    if pipes:
        p.section("Pipelines: each rank's idle time").table(
            ["case", "step (twin)", "step (measured)", "rank", "idle (twin)", "idle (measured)", "error"],
            [[q["name"], pg.seconds(q["predicted_s"]), pg.seconds(q["measured_s"]), r,
              pg.seconds(q["idle_simulated_s"][int(r) % len(q["idle_simulated_s"])]), pg.seconds(m),
              pg.pct(q["idle_rel_error"][r], signed=True) if q["idle_rel_error"].get(r) is not None else "—"]
             for q in pipes for r, m in q["idle_measured_s"].items() if q["idle_simulated_s"]])
    ranking = result.get("ranking", {})
    if ranking:
        p.section("Pipelines: the schedule ranking, pair by pair").para(
            "Each pair of schedules on the host's two-round ranking folder (docs/notes/s15rank_rule.md): resolved by the "
            "pooled steps (exact rank-sum p < 0.05, both rounds the same way), the twin must order it so; unresolved, "
            "the twin's gap must lie inside the Hodges-Lehmann 95% interval of the measured gap.")
        p.table(["host", "micro-batches", "pair (b over a)", "measured gap", "95% interval", "p", "resolved", "twin gap", "met"],
                [[f"{folder}/{v['folder']}", g["config"], f"{q['b']} / {q['a']}",
                  pg.pct(q["gap"], signed=True) if q["gap"] is not None else "—",
                  " to ".join(pg.pct(x, signed=True) if x is not None else "unbounded" for x in (q["lo"], q["hi"])),
                  f"{q['p']:.3f}" if q["p"] is not None else "—", "yes" if q["resolved"] else "no",
                  pg.pct(q["twin_gap"], signed=True) if q["twin_gap"] is not None else "—", "met" if q["met"] else "NOT met"]
                 for folder, v in ranking.items() for g in v["configs"] for q in g["pairs"]])
    idle = result.get("idle", {})
    if idle:
        p.section("Pipelines: each GPU's idle on two rounds").para(
            "Each GPU's idle on the host's two-round idle folder (docs/notes/s16idle_rule.md): the median of its idle "
            "over both rounds' timed steps against the mean of the twin's idle for each round (each round predicted from "
            "its own fitting split), within max(10% of the measured, 1% of the step); the host's other configurations "
            "are judged on its host folder (the table above).")
        p.table(["host", "configuration", "GPU", "idle (twin)", "idle (measured)", "band", "round medians", "met"],
                [[f"{folder}/{c['folder']}", c["config"] + (" (held out)" if c["held_out"] else ""), g,
                  pg.seconds(q["twin_s"]) if q["twin_s"] is not None else "—",
                  pg.seconds(q["measured_s"]) if q["measured_s"] is not None else "—",
                  pg.seconds(q["band_s"]) if q["band_s"] is not None else "—",
                  " / ".join(pg.seconds(m) if m is not None else "—" for m in q["round_medians_s"]),
                  "met" if q["met"] else ("NOT met" if q["decided"] else "undecided")]
                 for folder, v in idle.items() for c in v["configs"] for g, q in c["gpus"].items()])
    sweeps = result.get("nccl", {})
    if sweeps:
        p.section("NCCL collectives on two GPUs of one host").para(
            "Each host's size sweep (<gpu>x2/nccl.csv), an alpha-beta fit per op on the fitting sizes (2^even bytes), "
            "judged on the held-out sizes (2^odd): the collectives the GPU's profile carries.")
        p.table(["host", "op", "latency", "bus bandwidth", "held-out sizes", "median |error|", "max |error|"],
                [[folder, op, pg.seconds(v["latency_s"]), f"{v['bus_bytes_per_s'] / 1e9:.0f} GB/s", v["rows"],
                  pg.pct(v["median_abs_rel_err"]), pg.pct(v["max_abs_rel_err"])]
                 for folder, sweep in sweeps.items() for op, v in sweep["ops"].items()])
    block_lines = format_blocks(result.get("cases", []))
    if block_lines:
        p.section("TP2 and CP2 blocks").bullets(block_lines)
    x = result.get("h100_to_h200")
    if x:
        p.section("Transfer: the H100 profile on H200 records").para(
            f"{x['note']}: median |error| {pg.pct(x['all']['median_abs_rel_error'])}, P90 {pg.pct(x['all']['p90_abs_rel_error'])} "
            f"over {x['all']['num_cases']:,} cases; held-out median {pg.pct(x['held_out']['median_abs_rel_error'])}.")
    skipped = {g: v for g, v in result.get("not_predicted", {}).items() if v}
    if skipped:
        def kinds(names: list[str]) -> str:
            c = Counter(n.split()[0] for n in names)
            return ", ".join(f"{k} {v}" for k, v in sorted(c.items()))
        p.section("Not predicted here").para("`twin validate` does not predict these whole-model records case by case:")
        p.bullets([f"{g.upper()}: {len(v)} records ({kinds(v)})" for g, v in skipped.items()])
    _serve_load_section(p, result.get("serve_load", {}))
    _decode_gemm_section(p, result.get("decode_gemm", {}))
    tr = result.get("h800_trace")
    if tr:
        table = _trace_table(tr)
        p.section("DeepSeek's H800 trace, phase by phase").table(
            ["phase", "kind", "trace", "twin", "error", "target"],
            [[r.phase, r.kind, pg.seconds(r.trace_us / 1e6), pg.seconds(r.predicted_us / 1e6), pg.pct(r.rel_error, signed=True),
              "—" if pd.isna(r.target) else f"±{pg.pct(r.target)}"] for r in table.itertuples()])
    sm = {g: rows for g, rows in result.get("sm_reserve", {}).items() if rows}
    if sm:
        p.section("SMs reserved for communication").para(
            f"The twin's GEMM slowdown with SMs held by communication beside the measured one, per GPU, mode and precision: "
            f"`{SM_CSV}` and the plot below.")
    pub = result.get("published_runs")
    if pub:
        _published_runs_section(p, pub)
    for prof in result.get("deepseek_serving_profiles", []):
        _serving_profile_section(p, prof)
    _judged_sections(p, result)
    p.section("Plots")
    if not cases.empty:
        p.figure(SCATTER, plot_scatter(cases), "The twin's prediction against each measured case, log-log.")
        held = cases[cases["held_out"]]
        if not held.empty:
            p.figure(BY_OP, plot_error_by_op(held, t.get("median_abs_rel_error", 0.05)), "Median |error| of the held-out cases "
                     "by op kind.")
        if "kind" in cases.columns:
            p.figure(BY_KIND, plot_by_kind(cases), "The twin's prediction against each measured case, per kind of case "
                     "and GPU count (filled: one GPU, open: several; the legend gives the count), log-log.")
    for i, q in enumerate(pipes):
        p.figure(f"pipeline_{i}.png", plot_pipeline(q), f"{q['name']}: each rank's ops as measured (above) and as the "
                 f"twin simulates them (below), on one time axis; `{PIPELINE_TRACE.format(i)}` opens both in Perfetto.")
    if tr:
        p.figure(TRACE_PNG, plot_trace(tr), "DeepSeek's H800 chunk-pair trace beside the twin, phase by phase.")
    if sm:
        p.figure(SM_PNG, slowdown_png(sm), "GEMM slowdown against SMs held by communication: measured and twin.")
    p.section("Files").bullets([f"`{pg.RESULT_JSON}`: the whole result; `{CASES_CSV}`: every case"
                                + (f"; `{TRACE_CSV}`: the trace table" if tr else "") + (f"; `{SM_CSV}`" if sm else "")])
    return p


def _serve_load_section(p: Page, section: dict) -> None:
    """real/serve's load runs against the request simulation, per records folder and figure (issue 15's
    serving targets; calibration.serve_load_validation). Not in the report until s25walk."""
    if not section:
        return
    p.section("Serving load runs: the request simulation against real/'s engine").para(
        "Each held-out load run of real/serve (throughput, TTFT and TPOT percentiles) against the twin's request-level "
        "simulation of the same configuration; a figure is met within its target (throughput 5%, P50s 10%, P99s 20%).")
    p.table(["records", "figure", "held-out runs", "median |error|", "P90 |error|", "within target", "fit median |error|"],
            [[folder, k, v["num_runs"], pg.pct(v["median_abs_rel_error"]), pg.pct(v["p90_abs_rel_error"]),
              f"{v['runs_within_target']} of {v['num_runs']} (±{pg.pct(v['target'])})",
              pg.pct(s["fit"]["figures"][k]["median_abs_rel_error"])]
             for folder, s in section.items() for k, v in s["holdout"]["figures"].items() if v["num_runs"]])
    p.bullets([f"{folder}: {_serve_load_count(s)}; targets {'met' if s['holdout']['meets_targets'] else 'NOT met'}"
               for folder, s in section.items()])


def _serve_load_count(s: dict) -> str:
    figs = [v for v in s["holdout"]["figures"].values() if v["num_runs"]]
    return f"{sum(v['runs_within_target'] for v in figs)} of {sum(v['num_runs'] for v in figs)} figures within target"


def _decode_gemm_section(p: Page, section: dict) -> None:
    """real/'s decode batched GEMMs (decode_gemm.csv) on their own held-out rows. Not shown anywhere (the
    terminal included) until s25walk: --json only."""
    if not section:
        return
    p.section("Decode's batched GEMMs").para(
        "The batched-GEMM curves of decode (decode_gemm.csv, unaligned batch and cache lengths) on each GPU's own "
        "rows: kernel records of their own, apart from the per-GPU kernel figures above.")
    p.table(["GPU", "held-out cases", "median |error|", "P90 |error|", "fitting cases", "median |error| (fit)"],
            [[gpu.upper(), v["held_out"]["num_cases"], pg.pct(v["held_out"]["median_abs_rel_error"]),
              pg.pct(v["held_out"]["p90_abs_rel_error"]), v["fit"]["num_cases"], pg.pct(v["fit"]["median_abs_rel_error"])]
             for gpu, v in section.items()])


def _judged_sections(p: Page, result: dict) -> None:
    """The pre-registered predictions and fresh shapes (calibration.validate_sections), each as its terminal lines:
    its heading, then one bullet a line. Not in the report until s25walk."""
    judged = [j for j in JUDGED if j.key in result]
    if not judged:
        return
    p.section("Pre-registered predictions and fresh shapes").para(
        "Models, layouts, loads and shapes no fit saw, judged against predictions committed before their runs "
        "(each rule in docs/notes/); the lines `twin validate --detail` prints.")
    for j in judged:
        head, *rest = j.table(result[j.key]).splitlines() or [j.key]
        p.para(f"{head} (`{j.key}`)")
        if rest:
            p.bullets([line.strip() for line in rest if line.strip()])


def _serving_profile_section(p: Page, prof: dict) -> None:
    """The serving twin at the conditions of DeepSeek's prefill or decode profile, group by group
    beside the trace (calibration/serving_trace.py), or alone where the trace is not available."""
    p.section(f"DeepSeek's {prof['phase']} profile (H800), kernel group by group").para(
        f"Conditions: {prof['conditions']}. The twin's iteration: {pg.seconds(prof['iteration_s'])}. "
        + ("Per layer and micro-batch, from the derived trace." if prof["trace_available"] else f"Trace: {prof['note']}."))
    p.table(["group (per layer, micro-batch)", "twin", "trace", "error"],
            [[g["group"].replace("_", " "), pg.seconds(g["twin_us"] / 1e6) if g["twin_us"] is not None else pg.NA,
              pg.seconds(g["trace_us"] / 1e6) if g["trace_us"] is not None else pg.NA,
              pg.pct(g["rel_error"], signed=True) if g["rel_error"] is not None else pg.NA] for g in prof["groups"]])


def _published_runs_section(p: Page, pub: dict) -> None:
    """Rung 4 beyond DeepSeek: published runs of other models and layouts, the peers beside."""
    s = pub["summary"]

    def fig(v):
        return "—" if v is None or pd.isna(v) else f"{v:,.1f}"

    def err(v):
        return "—" if v is None or pd.isna(v) else pg.pct(v, signed=True)

    p.section("Published runs beyond DeepSeek").para(
        f"Rows of calibration/data/published_runs.toml (torchtitan, Megatron-LM, Llama 3), each simulated from its published "
        f"configuration; error = predicted / published − 1. Targets: every row within {pg.pct(pub['targets']['row_abs_rel_error'])}, "
        f"median at most {pg.pct(pub['targets']['median_abs_rel_error'])}. {s['num_evaluated']} of {s['num_rows']} rows evaluated; "
        f"rows whose plan needs fields this twin lacks are listed with them. Peers from the committed "
        f"{pub['peers_file'] or 'peers table (not yet written)'}: {', '.join(pub['peer_versions'].values()) or '—'}.")
    p.table(["run", "metric", "published", "twin", "error", "Calculon", "error", "llm-analysis", "error", "status"],
            [[r["id"], "tok/s/GPU" if r["metric"] == "tokens_per_s_per_gpu" else "TFLOP/s/GPU", fig(r["published"]),
              fig(r["predicted"]), err(r["rel_error"]), fig(r.get("calculon")), err(r.get("calculon_rel_error")),
              fig(r.get("llm_analysis")), err(r.get("llm_analysis_rel_error")),
              r["status"] if r["status"] == "ok" else f"{r['status']}: {r['reason']}"] for r in pub["rows"]])
    _published_memory_table(p, pub)


def _published_memory_table(p: Page, pub: dict) -> None:
    """Memory per GPU: the twin's count on the busiest rank, the GPU's capacity and the source's figure."""
    m = pub["summary"].get("memory")
    rows = [r for r in pub["rows"] if r.get("memory_per_gpu_bytes") is not None]
    if not m or not rows:
        return

    def gib(v):
        return "—" if v is None else f"{v / GIB:.1f}"

    med = "—" if m["median_rel_error"] is None else pg.pct(m["median_rel_error"], signed=True)
    p.para(f"Memory per GPU (GiB): the twin's count on its busiest pipeline rank beside the GPU's capacity (every published run "
           f"ran, so its memory fitted: {m['num_fitting']} of {m['num_counted']} rows fit as counted) and the published figure "
           f"where the source gives one (torchtitan: the caching allocator's peak reserved memory, the maximum over GPUs; the "
           f"allocator's reserve is not modelled). Against {m['num_compared']} published figures the median error is {med}; "
           f"error = counted / published − 1.")
    p.table(["run", "twin", "capacity", "fits", "published", "error", "largest parts (twin)"],
            [[r["id"], gib(r["memory_per_gpu_bytes"]), gib(r["memory_capacity_bytes"]), "yes" if r["memory_fits"] else "no",
              gib(r.get("published_memory_bytes")),
              "—" if r.get("memory_rel_error") is None else pg.pct(r["memory_rel_error"], signed=True),
              ", ".join(f"{k} {v / GIB:.1f}" for k, v in sorted(r["memory_breakdown_bytes"].items(), key=lambda kv: -kv[1])[:3])]
             for r in rows])


def write_report(result: dict, out_dir: Path) -> list[Path]:
    """Write the validation report into `out_dir`, atomically; returns the paths written (sorted)."""
    cases = pd.DataFrame(result.get("cases", []))
    files: dict[str, str | bytes] = {CASES_CSV: _csv(cases)}
    if result.get("h800_trace"):
        files[TRACE_CSV] = _csv(_trace_table(result["h800_trace"]))
    sm = {g: rows for g, rows in result.get("sm_reserve", {}).items() if rows}
    if sm:
        files[SM_CSV] = sm_reserve_csv(sm)
    for i, q in enumerate(result.get("pipelines", [])):   # beside pipeline_<i>.png, for Perfetto
        files[PIPELINE_TRACE.format(i)] = json.dumps(pipeline_trace(q), separators=(",", ":"))
    return pg.write_report_dir(out_dir, build_page(result, cases), to_json(result), None, files=files)

"""s32idle (issue 13, round 3): every PP2 rank-row's idle miss taken apart on every committed set at once, and the
candidate it points to: the ranks' clock spread (pipeline.ADOPT_RANK_CLOCK_SPREAD, off), fitted and screened.

The misses: each committed pre-registered PP2 set (s20ppnew, s28blind pp, s29idle, s31clk, s31clk2) priced live by the
twin in force (prereg.predict_ep's path), each rank's idle split into the step's error and the rank's own busy error
(idle = step span - the rank's compute-op seconds, measured per timed step and simulated), the other rank's busy error
beside it. The candidate: each rank's kernels at (f_mean / f_rank)^elasticity of the twin's time, f_rank the round-2
power law's clock (rank_clock.RANK_POWER_REF), f_mean the row's geometric mean; the elasticity fitted on the fitting
records with both GPUs' clocks sampled (s30fb, s31clk, s31clk2: the log busy ratio of a row's two ranks, measured over
twin, against their measured log clock ratio, through the origin).

    python -m calibration.s32idle misses     # every rank-row outside 10% (or 1% of the step), with its split
    python -m calibration.s32idle fit        # the elasticity, live from the records
    python -m calibration.s32idle screen     # B (in force) and C (the candidate) on every committed PP2 set
    python -m calibration.s32idle record     # all of it -> calibration/s32idle_judgement.json (~1.5 min of CPU)
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import pipeline as pipe
from calibration import prereg, rank_clock, s31clk, s31clk2
from calibration import records as rec
from calibration.pipeline_judgement import IDLE_FLOOR_OF_STEP, IDLE_TOL
from calibration.records_io import csv_exists, json_exists, read_csv, read_json
from calibration.s30mem import ROW_KEYS
from calibration.whole_step import gpu_spec

NAME = "s32idle"
GPU = "h200"
# the committed pre-registered PP2 sets (label, predictions file whose rows are re-priced, records subdir): all seen
SETS = s31clk2.GUARD_SETS + (("s31clk2", s31clk2.PREDICTIONS_FILE, s31clk2.FRESH_SUBDIR),)
JUDGEMENT_FILE = Path(__file__).resolve().parent / f"{NAME}_judgement.json"
STEP_NOT_WORSE = 0.001   # the standing guard: C's median / P90 |step error| at most B's + 0.1 point
# the fitting records with both GPUs' clocks sampled: s30fb (pipeline_host spans), s31clk and s31clk2 (pipeline_ops)
FIT_FOLDERS_HOST = s31clk.FIT_FOLDERS
FIT_SUBDIRS_OPS = (s31clk.FRESH_SUBDIR, s31clk2.FRESH_SUBDIR)
COMPUTE_OPS = s31clk2.COMPUTE_OPS


@contextlib.contextmanager
def switch(on: bool, form: str | None = None):
    """pipeline.ADOPT_RANK_CLOCK_SPREAD held at `on` inside (rounds 1 and 2 off), in `form` (pipeline.SPREAD_FORMS;
    None: the one in force), restored after."""
    was = (pipe.ADOPT_RANK_CLOCK_SPREAD, pipe.ADOPT_RANK_REF_CLOCK, pipe.ADOPT_RANK_POWER_CLOCK,
           pipe.RANK_CLOCK_SPREAD_FORM)
    pipe.ADOPT_RANK_CLOCK_SPREAD, pipe.ADOPT_RANK_REF_CLOCK, pipe.ADOPT_RANK_POWER_CLOCK = on, False, False
    pipe.RANK_CLOCK_SPREAD_FORM = form or was[3]
    try:
        yield
    finally:
        (pipe.ADOPT_RANK_CLOCK_SPREAD, pipe.ADOPT_RANK_REF_CLOCK, pipe.ADOPT_RANK_POWER_CLOCK,
         pipe.RANK_CLOCK_SPREAD_FORM) = was


def _busy_by_rep(ops: pd.DataFrame, rank: int) -> pd.Series:
    o = ops[(ops["rank"] == rank) & ops["kind"].isin(COMPUTE_OPS) & ops["rep"].notna()]
    return (o["end_s"] - o["start_s"]).groupby(o["rep"]).sum()


def misses(root: Path | str | None = None, sets: tuple = SETS) -> pd.DataFrame:
    """Every rank-row of the committed PP2 sets (pp > 1 rows with records): measured and predicted (switches as in
    force) step span, rank busy and idle (seconds, medians over the timed steps), the idle tolerance and whether it is
    within, and the split of the idle error: pred - meas idle = span error - own busy error."""
    root = Path(rec.records_root() if root is None else root)
    inputs: dict = {}
    out = []
    for label, path, sub in sets:
        preds = read_csv(path)
        for r in preds[preds["pp"] > 1][ROW_KEYS].to_dict("records"):
            folder = root / f"{r['gpu']}x2" / sub / r["model"]
            if not csv_exists(folder / "pipeline_ops.csv"):
                continue
            steps = read_csv(folder / "pipeline_step.csv")
            srow = steps[(steps["bench"] == "pipeline_step") & (steps["schedule"] == r["schedule"])
                         & (steps["num_microbatches"] == r["num_microbatches"])]
            if srow.empty:
                continue
            srow = srow.iloc[0]
            mine = pipe.ops_of(srow, read_csv(folder / "pipeline_ops.csv"))
            mine = mine[mine["rep"].notna() & mine["kind"].isin(pipe.SCHEDULE_KINDS)]
            if r["gpu"] not in inputs:
                inputs[r["gpu"]] = prereg.two_gpu_inputs(r["gpu"], root)
            profile, accumulate, host, hold_s = inputs[r["gpu"]]
            res, _, _ = pipe.simulate_row(pd.Series(r), gpu_spec(r["gpu"]), profile, accumulate, host, None, None,
                                          hold_s)
            reps = mine.groupby("rep")
            span = float((reps["end_s"].max() - reps["start_s"].min()).median())
            idle = pipe.measured_idle_s(mine)
            comp = mine[mine["kind"].isin(COMPUTE_OPS)]
            for rank in range(int(r["pp"])):
                meas_idle, pred_idle = float(idle[rank]), float(res.idle_s[rank])
                own = comp[comp["rank"] == rank].groupby("rep")
                spans = [(s, e) for k, _, s, e in res.op_spans if k == rank]
                ramp = {"measured_ramp_s": float((own["start_s"].min() - reps["start_s"].min()).median()),
                        "twin_ramp_s": float(min(s for s, _ in spans)),
                        "measured_drain_s": float((reps["end_s"].max() - own["end_s"].max()).median()),
                        "twin_drain_s": float(res.makespan_s - max(e for _, e in spans))}
                tol = max(IDLE_TOL * meas_idle, IDLE_FLOOR_OF_STEP * float(srow["time_s"]))
                out.append({"set": label, "gpu": r["gpu"], "model": r["model"], "schedule": r["schedule"],
                            "num_microbatches": int(r["num_microbatches"]), "rank": rank,
                            "measured_step_s": float(srow["time_s"]), "measured_span_s": span,
                            "twin_span_s": float(res.makespan_s),
                            "measured_busy_s": float(_busy_by_rep(mine, rank).median()),
                            "twin_busy_s": float(res.busy_s[rank]), "measured_idle_s": meas_idle,
                            "predicted_idle_s": pred_idle, "tolerance_s": tol,
                            "within": bool(abs(pred_idle - meas_idle) <= tol)} | ramp)
    d = pd.DataFrame(out)
    other = d.groupby(["set", "gpu", "model", "schedule", "num_microbatches"])
    d["other_busy_error_s"] = other["twin_busy_s"].transform("sum") - d["twin_busy_s"] - (
        other["measured_busy_s"].transform("sum") - d["measured_busy_s"])
    d["span_error_s"] = d["twin_span_s"] - d["measured_span_s"]
    d["busy_error_s"] = d["twin_busy_s"] - d["measured_busy_s"]
    d["idle_error_s"] = d["predicted_idle_s"] - d["measured_idle_s"]
    # pp 2: span = the other rank's busy + its idle, so idle error = pace (the other's busy error less the own) + the
    # other rank's idle error (its ramp, drain and transfer waits)
    d["pace_error_s"] = d["other_busy_error_s"] - d["busy_error_s"]
    d["other_idle_error_s"] = d["idle_error_s"] - d["pace_error_s"]
    d["miss_class"] = [miss_class(r) for r in d.itertuples()]
    return d


def miss_class(r) -> str:
    """The class of a rank-row by schedule and role (pp 2): 'mirrored' (DualPipe: both ranks equal work), 'bubble'
    (the rank that waits on the other's heavier work: 1F1B / ZB1P rank 0, DualPipeV rank 1), 'heavy' (the other)."""
    if r.schedule == "dualpipe":
        return "mirrored"
    bubble_rank = 1 if r.schedule == "dualpipev" else 0
    return "bubble" if r.rank == bubble_rank else "heavy"


def fit_points(root: Path | str | None = None) -> pd.DataFrame:
    """Per fitting configuration with both GPUs' clocks sampled: each rank's measured busy (compute-op seconds per
    step, median over the timed steps), the twin's (switches off; prereg.predict_ep's inputs) and the measured clock
    (s31clk's selection: s30fb's busy samples >= 600 W; s31clk / s31clk2: the s31clk rule's)."""
    root = Path(rec.records_root() if root is None else root)
    inputs = prereg.two_gpu_inputs(GPU, root)
    pts = [p for p in s31clk2.fit_points(root) if int(p["pp"]) > 1] + _fresh_points(root, s31clk2.FRESH_SUBDIR,
                                                                                   s31clk2.FRESH_CASES)
    out = []
    memo: dict = {}
    for p in pts:
        folder = root / p["folder"]
        layers = (s31clk._num_layers(folder) if (folder / "env_pipeline_probe.json").exists()
                  else _layers_of(folder, p))
        row = {"gpu": GPU, "model": p["model"], "schedule": p["schedule"], "pp": 2, "ep": 1, "dp": 1,
               "num_microbatches": int(p["num_microbatches"]), "micro_batch_seqs": 1, "seq_len": 4096,
               "precision": "bf16", "num_layers": layers}
        key = tuple(sorted(row.items()))
        if key not in memo:
            profile, accumulate, host, hold_s = inputs
            with switch(False):
                res, _, det = pipe.simulate_row(pd.Series(row), gpu_spec(GPU), profile, accumulate, host, None, None,
                                                hold_s)
            sched = pipe.build_schedule(det["schedule"], 2, int(row["num_microbatches"]))
            memo[key] = res, rank_clock.rank_component_s(sched, det["stage_kernel_s"])
        res, comps = memo[key]
        k = int(p["rank"])
        busy = float(res.busy_s[k])
        out.append({"folder": p["folder"], "model": p["model"], "schedule": p["schedule"],
                    "num_microbatches": int(p["num_microbatches"]), "rank": k,
                    "clock_mhz": float(p["clock_mhz"]), "measured_busy_s": float(p["busy_s"]), "twin_busy_s": busy,
                    "compute_share": sum(v for c, v in comps[k].items() if c in rank_clock.COMPUTE_COMPONENTS) / busy,
                    "memory_share": comps[k].get("memory", 0.0) / busy})
    return pd.DataFrame(out)


def _fresh_points(root: Path, subdir: str, cases: tuple) -> list[dict]:
    """s31clk2.fit_points' PP2 points for a fresh set it does not read (s31clk2's own, fitting since its verdict):
    per configuration and rank the measured clock (s31clk.config_clocks) and busy (pipeline_ops, timed steps)."""
    out = []
    for m, _ in cases:
        folder = root / f"{GPU}x2" / subdir / m
        if not (csv_exists(folder / "pipeline_step.csv") and csv_exists(folder / "gpu_clocks.csv")):
            continue
        steps, ops = read_csv(folder / "pipeline_step.csv"), read_csv(folder / "pipeline_ops.csv")
        for meas in s31clk.config_clocks(steps, read_csv(folder / "gpu_clocks.csv")):
            if meas["samples"] == 0:
                continue
            for k in range(int(meas["pp"])):
                out.append({"folder": str(Path(f"{GPU}x2") / subdir / m), "model": m, "schedule": meas["schedule"],
                            "pp": meas["pp"], "num_microbatches": meas["num_microbatches"], "rank": k,
                            "clock_mhz": meas["clock_mhz"][k], "busy_s": s31clk2.busy_s(ops, meas, k)})
    return out


def _layers_of(folder: Path, p: dict) -> int:
    steps = read_csv(folder / "pipeline_step.csv")
    return int(steps[(steps["schedule"] == p["schedule"])]["num_layers"].iloc[0])


def fit(root: Path | str | None = None) -> dict:
    """The elasticity of each variant: least squares through the origin of y = ln(meas_1 / twin_1) - ln(meas_0 /
    twin_0) over the fitting configurations on the variant's x: "uniform" (every kernel follows the clock)
    x = ln(f_0 / f_1); "compute" (only GEMM, grouped GEMM and attention kernels do, memory-bound kernels hold: HBM's
    clock does not move) x = s_1 ln(f_m / f_1) - s_0 ln(f_m / f_0), s_r the rank's compute share of its twin busy time,
    f_m the geometric mean. Beside each: r, the rms residual against rms y; the free two-class fit (compute and memory
    elasticities, a check: the memory one comes out negative, not physical) and the uniform fit with an intercept."""
    pts = fit_points(root)
    pts = pts[np.isfinite(pts["clock_mhz"]) & (pts["clock_mhz"] > 0)]
    w = pts.pivot_table(index=["folder", "model", "schedule", "num_microbatches"], columns="rank",
                        values=["clock_mhz", "measured_busy_s", "twin_busy_s", "compute_share", "memory_share"],
                        aggfunc="first").dropna()
    y = (np.log(w[("measured_busy_s", 1)] / w[("twin_busy_s", 1)])
         - np.log(w[("measured_busy_s", 0)] / w[("twin_busy_s", 0)])).to_numpy(float)
    f0, f1 = w[("clock_mhz", 0)].to_numpy(float), w[("clock_mhz", 1)].to_numpy(float)
    fm = np.sqrt(f0 * f1)
    share = {c: (w[(f"{c}_share", 0)].to_numpy(float), w[(f"{c}_share", 1)].to_numpy(float))
             for c in ("compute", "memory")}
    xs = {"uniform": np.log(f0 / f1),
          "compute": share["compute"][1] * np.log(fm / f1) - share["compute"][0] * np.log(fm / f0)}
    out = {"n": int(y.size), "rms_y": float(np.sqrt(np.mean(y ** 2))),
           "folders": sorted({str(f) for f in w.index.get_level_values(0)})}
    for name, x in xs.items():
        a = float((x * y).sum() / (x * x).sum())
        out[name] = {"elasticity": a, "r": float(np.corrcoef(x, y)[0, 1]),
                     "rms_residual": float(np.sqrt(np.mean((y - a * x) ** 2)))}
    x_mem = share["memory"][1] * np.log(fm / f1) - share["memory"][0] * np.log(fm / f0)
    free, *_ = np.linalg.lstsq(np.column_stack([xs["compute"], x_mem]), y, rcond=None)
    slope, intercept = np.polyfit(xs["uniform"], y, 1)
    out["free_two_class"] = {"compute": float(free[0]), "memory": float(free[1])}
    out["uniform_with_intercept"] = {"slope": float(slope), "intercept": float(intercept)}
    return out


def screen(root: Path | str | None = None, sets: tuple = SETS, form: str = "uniform") -> list[dict]:
    """Each committed PP2 set's two-GPU rows priced live with the candidate (in `form`) off (B) and on (C), scored as
    each pre-registration scores them (s31clk.priced_sets under this switch)."""
    return s31clk.priced_sets(root, sets, candidate=lambda on: switch(on, form), two_gpu_only=True)


def guards(sets: list[dict]) -> dict:
    """The standing guards on the screen: G1 no set loses a rank-row; G2 each set's C median and P90 |step error| at
    most B's + STEP_NOT_WORSE; G3 no set misorders more resolved schedule pairs under C than under B."""
    g1 = all(not s["lost_rank_rows"] for s in sets)
    g2 = all(s["C"][k] <= s["B"][k] + STEP_NOT_WORSE for s in sets
             for k in ("median_abs_rel_error", "p90_abs_rel_error"))
    g3 = all(s["C"]["num_misordered"] <= s["B"]["num_misordered"] for s in sets)
    return {"G1_no_rank_row_lost": g1, "G2_steps_not_worse": g2, "G3_ranking_not_worse": g3, "pass": g1 and g2 and g3}


def miss_summary(d: pd.DataFrame) -> dict:
    """The misses' split over every set: counts by set and class, the share of the summed |idle error| that the
    ranks' relative pace carries (signed with the error), how many misses would be within with the pace error removed
    and with the other rank's idle error removed instead, the largest ramp / drain errors of the missed rows."""
    m = d[~d["within"]]
    sign = np.sign(m["idle_error_s"])
    return {"num_rank_rows": int(len(d)), "num_within": int(d["within"].sum()), "num_missed": int(len(m)),
            "by_set": {k: {"within": int(g["within"].sum()), "rank_rows": int(len(g))} for k, g in d.groupby("set")},
            "missed_by_class": {k: int(v) for k, v in m["miss_class"].value_counts().items()},
            "missed_twin_below": int((m["idle_error_s"] < 0).sum()),
            "pace_share_of_abs_miss": float((m["pace_error_s"] * sign).sum() / m["idle_error_s"].abs().sum()),
            "within_without_pace": int(((m["idle_error_s"] - m["pace_error_s"]).abs() <= m["tolerance_s"]).sum()),
            "within_without_other_idle": int(((m["idle_error_s"] - m["other_idle_error_s"]).abs()
                                              <= m["tolerance_s"]).sum()),
            "max_abs_ramp_error_s": float((m["twin_ramp_s"] - m["measured_ramp_s"]).abs().max()),
            "max_abs_drain_error_s": float((m["twin_drain_s"] - m["measured_drain_s"]).abs().max())}


def measured_clock_check(root: Path | str | None = None, form: str = "uniform") -> dict:
    """The mechanism given the clocks (a check, not a candidate: a twin cannot know a lease's boards): the rows of the
    sets whose records sample both GPUs' clocks (s31clk, s31clk2) simulated with each rank's spread factor from its
    *measured* clock (s31clk.config_clocks) in place of the law's; each rank's idle scored as the sets score it. Per
    set and for DualPipe's mirrored rows apart: rank-rows within in force (B), with the law's clocks (C) and with the
    measured ones (M)."""
    root = Path(rec.records_root() if root is None else root)
    inputs = prereg.two_gpu_inputs(GPU, root)
    profile, accumulate, host, hold_s = inputs
    gpu = gpu_spec(GPU)
    alpha = pipe.RANK_CLOCK_ELASTICITY[gpu.name][form]
    comps = pipe.SPREAD_FORMS[form]
    out = {}
    for label, path, sub in SETS:
        if sub not in FIT_SUBDIRS_OPS:
            continue
        preds = read_csv(path)
        rows = {(r["model"], r["schedule"], int(r["num_microbatches"])): r
                for r in preds[preds["pp"] > 1][ROW_KEYS].to_dict("records")}
        counts = {k: {"B": 0, "C": 0, "M": 0, "rank_rows": 0} for k in ("all", "mirrored")}
        for m in sorted({k[0] for k in rows}):
            folder = root / f"{GPU}x2" / sub / m
            steps, ops = read_csv(folder / "pipeline_step.csv"), read_csv(folder / "pipeline_ops.csv")
            for meas in s31clk.config_clocks(steps, read_csv(folder / "gpu_clocks.csv")):
                r = rows.get((m, meas["schedule"], int(meas["num_microbatches"])))
                if r is None or meas["samples"] == 0:
                    continue
                srow = steps[(steps["schedule"] == r["schedule"]) & (steps["num_microbatches"] == r["num_microbatches"])
                             & (steps["bench"] == "pipeline_step")].iloc[0]
                idle = pipe.measured_idle_s(pipe.ops_of(srow, ops))
                f = meas["clock_mhz"]
                mean = float(np.exp(np.mean(np.log(f))))
                scales = {k: pipe.spread_scale(c, mean, alpha, comps) for k, c in enumerate(f)}
                res = {}
                with switch(False):
                    res["B"] = pipe.simulate_row(pd.Series(r), gpu, profile, accumulate, host, None, None, hold_s)[0]
                    res["M"] = pipe._simulate_row(pd.Series(r), gpu, profile, accumulate, host, None, None, hold_s,
                                                  scales)[0]
                with switch(True, form):
                    res["C"] = pipe.simulate_row(pd.Series(r), gpu, profile, accumulate, host, None, None, hold_s)[0]
                for k in range(2):
                    tol = max(IDLE_TOL * idle[k], IDLE_FLOOR_OF_STEP * float(srow["time_s"]))
                    for group in ("all",) + (("mirrored",) if r["schedule"] == "dualpipe" else ()):
                        counts[group]["rank_rows"] += 1
                        for who, x in res.items():
                            counts[group][who] += int(abs(float(x.idle_s[k]) - idle[k]) <= tol)
        out[label] = counts
    return out


def format_misses(d: pd.DataFrame) -> str:
    m = d[~d["within"]]
    lines = [f"{int(d['within'].sum())} of {len(d)} rank-rows within; misses by class: "
             + ", ".join(f"{k} {v}" for k, v in m["miss_class"].value_counts().items())]
    for r in m.itertuples():
        lines.append(f"  {r.set} {r.gpu} {r.model} {r.schedule} n{r.num_microbatches} rank {r.rank} ({r.miss_class}): "
                     f"idle measured {r.measured_idle_s * 1e3:.1f} ms, twin {r.predicted_idle_s * 1e3:.1f} (tol "
                     f"{r.tolerance_s * 1e3:.1f}); error {r.idle_error_s * 1e3:+.1f} = span {r.span_error_s * 1e3:+.1f} "
                     f"- own busy {r.busy_error_s * 1e3:+.1f}; pace {r.pace_error_s * 1e3:+.1f} + other rank's idle "
                     f"{r.other_idle_error_s * 1e3:+.1f}")
    return "\n".join(lines + [str(miss_summary(d))])


MISS_FIELDS = ("set", "gpu", "model", "schedule", "num_microbatches", "rank", "miss_class", "measured_step_s",
               "measured_idle_s", "predicted_idle_s", "tolerance_s", "idle_error_s", "span_error_s", "busy_error_s",
               "pace_error_s", "other_idle_error_s")


def record(root: Path | str | None = None) -> dict:
    """The round's record: the misses in force and their split, the fit, both forms' screens with the standing
    guards, the mechanism given the measured clocks, and the verdict (not adopted unless a form passes the screen;
    even then only a rule and a fresh set could adopt it)."""
    d = misses(root)
    f = fit(root)
    forms = {}
    for form in pipe.SPREAD_FORMS:
        sets = screen(root, form=form)
        with switch(True, form):
            under = misses(root)
        forms[form] = {"elasticity": pipe.RANK_CLOCK_ELASTICITY[gpu_spec(GPU).name][form], "sets": sets,
                       "guards": guards(sets), "misses_summary": miss_summary(under),
                       "measured_clock_check": measured_clock_check(root, form)}
    passed = [k for k, v in forms.items() if v["guards"]["pass"]]
    return {"registration": NAME, "note": "docs/notes/s32idle.md", "switch": "pipeline.ADOPT_RANK_CLOCK_SPREAD",
            "targets": {"idle_tol": IDLE_TOL, "idle_floor_of_step": IDLE_FLOOR_OF_STEP,
                        "step_not_worse": STEP_NOT_WORSE},
            "misses_summary": miss_summary(d),
            "misses": [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                       for r in d[~d["within"]][list(MISS_FIELDS)].to_dict("records")],
            "fit": f, "forms": forms, "screen_passed": passed, "adopt": False,
            "campaign": ("none: no form passes the screen (a fresh set cannot undo a failed guard)" if not passed
                         else "a rule and a fresh set first")}


def read_judgement(path: Path = JUDGEMENT_FILE) -> dict | None:
    return read_json(path) if json_exists(path) else None


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser(f"calibration.{NAME}", __doc__)
    ap.add_argument("action", choices=["misses", "fit", "screen", "record"])
    ap.add_argument("--form", choices=sorted(pipe.SPREAD_FORMS), default="uniform", help="the screen's form")
    ap.add_argument("--json", type=Path, default=JUDGEMENT_FILE, help="where `record` writes")
    args = ap.parse_args(argv)
    if args.action == "record":
        entry.write_json(args.json, record(), default=float)
        print(f"wrote {args.json}")
    elif args.action == "misses":
        print(format_misses(misses()))
    elif args.action == "fit":
        f = fit()
        for form in pipe.SPREAD_FORMS:
            print(f"{form}: elasticity {f[form]['elasticity']:.4f} (r {f[form]['r']:.3f}, rms residual "
                  f"{f[form]['rms_residual']:.4f} of {f['rms_y']:.4f})")
        print(f"n {f['n']} configurations; free two-class {f['free_two_class']}; uniform with an intercept "
              f"{f['uniform_with_intercept']}; folders {', '.join(f['folders'])}")
    else:
        sets = screen(form=args.form)
        print(s31clk2.format_sets(sets))
        print(guards(sets))
    return 0


if __name__ == "__main__":
    sys.exit(main())

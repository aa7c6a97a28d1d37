"""s31clk2: round 2 of the per-rank power-capped clock (issue 13): each kernel class priced from the reference clock its
rates were fitted at to the rank's own clock, the power law refitted with a class split, screened on every committed
PP2 set, judged on a fresh 2xH200 set (docs/notes/s31clk2_rule.md).

The candidate is pipeline.ADOPT_RANK_REF_CLOCK (off): rank_clock.REF_CLOCK_MHZ (per GPU and class: dense GEMM, grouped
GEMM, attention; the time-weighted median SM clock of the fitting split's BF16 rows of the class's records) and
rank_clock.RANK_POWER_REF (P_s + (f / f_max)^3 (u_gemm D_gemm + u_grouped D_grouped + u_memory D_memory), the grouped
class holding grouped GEMM and attention), fitted by least squares on every clock record now seen: s30fb's
(h200x2/s30fb_20261128_2153, DualPipeV, s31clk's selection), s31clk's (h200x2/s31clk, 24 PP2 rows) and s31clk1's
(h200/s31clk1, five one-GPU steps), the latter two with the s31clk rule's sample selection (s31clk.config_clocks). A
class's duty at the measured clock f: its twin kernel seconds x ref / f over the measured step. pp > 1 rows only: a
one-GPU step keeps its rates (its twin is validated on one-GPU records at their own clocks; the one-GPU points enter
the power fit only).

    python -m calibration.s31clk2 refs       # the reference clocks, live from the records
    python -m calibration.s31clk2 fit        # RANK_POWER_REF's D's and the fitting points
    python -m calibration.s31clk2 screen     # B (in force) and C (the candidate) on every committed PP2 set
    python -m calibration.s31clk2 write      # the fresh set's predictions (refuses dirty code)
    python -m calibration.s31clk2 judge      # the rule's verdict once the fresh records are filed
    python -m calibration.s31clk2 record     # and its record, calibration/s31clk2_judgement.json
"""

from __future__ import annotations

import contextlib
import functools
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import pipeline as pipe
from calibration import prereg, prereg_pp, rank_clock, s29idle, s31clk
from calibration import records as rec
from calibration.grouped_clock import time_weighted_median
from calibration.power_cap import DYNAMIC_POWER_EXPONENT, MAX_SM_CLOCK_MHZ, idle_power_w
from calibration.records_io import csv_exists, read_csv
from calibration.split import is_held_out
from calibration.whole_step import gpu_spec

NAME = "s31clk2"
GPU = "h200"
# class -> (records file under <gpu>/, its benches): the records each class's rates are fitted on (calibration.fit)
REF_SOURCES = {"gemm": ("gemm.csv", ("gemm",)), "grouped_gemm": ("gemm.csv", ("grouped_gemm", "grouped_gemm_wgrad")),
               "attention": ("attention.csv", ("attn_fwd", "attn_bwd"))}
# the fresh set: real/campaigns/s31clk2.sh's PP in its order (a test holds them equal): dsv2-slice (PP records hold
# 4 / 6 / 10), v2-lite-slice (none), qwen3moe-mla-slice (4 / 8)
FRESH_CASES = (("dsv2-slice", 4), ("v2-lite-slice", 4), ("qwen3moe-mla-slice", 4))
FRESH_MICROBATCHES = (8, 12)
SCHEDULES = s31clk.SCHEDULES
FRESH_SUBDIR = NAME   # calibration/measurements/h200x2/s31clk2/<model>/
PREDICTIONS_FILE = prereg.PREREG_DIR / "s31clk2_predictions.csv"
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s31clk2_judgement.json"
STEP_NOT_WORSE = 0.001
# the committed PP2 sets (all seen): s30mem's three plus s31clk's fresh set (its two-GPU rows)
GUARD_SETS = s31clk.GUARD_SETS + (("s31clk", s31clk.PREDICTIONS_FILE, s31clk.FRESH_SUBDIR),)


@contextlib.contextmanager
def switch(on: bool):
    """pipeline.ADOPT_RANK_REF_CLOCK held at `on` inside (round 1's switch off), restored after."""
    was = pipe.ADOPT_RANK_REF_CLOCK, pipe.ADOPT_RANK_POWER_CLOCK
    pipe.ADOPT_RANK_REF_CLOCK, pipe.ADOPT_RANK_POWER_CLOCK = on, False
    try:
        yield
    finally:
        pipe.ADOPT_RANK_REF_CLOCK, pipe.ADOPT_RANK_POWER_CLOCK = was


def reference_clocks(gpu: str = GPU, root: Path | str | None = None) -> dict:
    """{class: MHz}: the time-weighted median SM clock of the fitting split's BF16 rows of each class's records."""
    root = Path(rec.records_root() if root is None else root)
    out = {}
    for cls, (name, benches) in REF_SOURCES.items():
        df = read_csv(root / gpu / name)
        rows = df[df["bench"].isin(benches) & (df["precision"] == "bf16")
                  & (pd.to_numeric(df["sm_clock_mhz"], errors="coerce") > 0)]
        rows = rows[[not is_held_out(r) for r in rows.to_dict("records")]]
        out[cls] = time_weighted_median(rows["sm_clock_mhz"], rows["time_s"])
    return out


def _components(row: dict, inputs: tuple) -> tuple[float, list[dict]]:
    """(the twin's makespan, each rank's kernel seconds per component) of a row at the twin's rates (switches off)."""
    profile, accumulate, host, hold_s = inputs
    with switch(False):
        res, _, det = pipe.simulate_row(pd.Series(row), gpu_spec(GPU), profile, accumulate, host, None, None, hold_s)
    schedule = pipe.build_schedule(det["schedule"], int(row["pp"]), int(row["num_microbatches"]))
    return float(res.makespan_s), rank_clock.rank_component_s(schedule, det["stage_kernel_s"])


def _row_key(r) -> tuple:
    return (str(r["model"]), str(r["schedule"]) if int(r["pp"]) > 1 else "", int(r["pp"]), int(r["num_microbatches"]))


def fit_points(root: Path | str | None = None) -> list[dict]:
    """Per fitting configuration and rank: measured power, clock and step, the twin's kernel seconds per component
    (switches off) and its makespan. s30fb: s31clk.fit_points' selection; s31clk / s31clk1: the s31clk rule's."""
    root = Path(rec.records_root() if root is None else root)
    inputs = prereg.two_gpu_inputs(GPU, root)
    out, memo = [], {}

    def components(row: dict) -> tuple[float, list[dict]]:   # one simulation a configuration, not one a rank
        key = tuple(sorted(row.items()))
        if key not in memo:
            memo[key] = _components(row, inputs)
        return memo[key]

    for p in s31clk.fit_points(root):
        row = {"gpu": GPU, "model": p["model"], "schedule": p["schedule"], "pp": 2, "ep": 1, "dp": 1,
               "num_microbatches": p["num_microbatches"], "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16",
               "num_layers": s31clk._num_layers(root / p["folder"])}
        span, comps = components(row)
        ops = _ops(root / p["folder"], "pipeline_host.csv")
        out.append({k: p[k] for k in ("folder", "model", "schedule", "num_microbatches", "rank", "power_w",
                                      "clock_mhz", "measured_step_s")} | {"pp": 2, "twin_makespan_s": span,
                                                                          "component_s": comps[p["rank"]],
                                                                          "busy_s": busy_s(ops, p, p["rank"])})
    rows = {_row_key(r): r for r in s31clk.fresh_rows() + s31clk.one_gpu_rows()}
    for sub, cases in ((Path(f"{GPU}x2") / s31clk.FRESH_SUBDIR, s31clk.FRESH_CASES),
                       (Path(GPU) / s31clk.ONE_GPU_SUBDIR, s31clk.ONE_GPU_CASES)):
        for m, _ in cases:
            folder = root / sub / m
            if not (csv_exists(folder / "pipeline_step.csv") and csv_exists(folder / "gpu_clocks.csv")):
                continue
            steps = read_csv(folder / "pipeline_step.csv")
            for meas, (_, srow) in zip(s31clk.config_clocks(steps, read_csv(folder / "gpu_clocks.csv")),
                                       steps.assign(_t=pd.to_datetime(steps["timestamp_utc"], utc=True,
                                                                      format="ISO8601")).sort_values("_t").iterrows()):
                row = rows.get(_row_key(meas))
                if row is None or meas["samples"] == 0:
                    continue
                span, comps = components(row)
                ops = _ops(folder, "pipeline_ops.csv") if int(meas["pp"]) > 1 else None
                for k in range(int(meas["pp"])):
                    out.append({"folder": str(sub / m), "model": m, "schedule": meas["schedule"], "pp": meas["pp"],
                                "num_microbatches": meas["num_microbatches"], "rank": k,
                                "power_w": meas["power_w"][k], "clock_mhz": meas["clock_mhz"][k],
                                "measured_step_s": float(srow["time_s"]), "twin_makespan_s": span,
                                "component_s": comps[k],
                                "busy_s": busy_s(ops, meas, k) if ops is not None else float("nan")})
    return out


COMPUTE_OPS = ("F", "B", "W", "BW", "FB")


@functools.lru_cache(maxsize=16)
def _ops(folder: Path, name: str) -> pd.DataFrame:
    """A folder's per-op spans, read once (the fit reads them per rank)."""
    return read_csv(folder / name)


def busy_s(ops: pd.DataFrame, cfg: dict, rank: int) -> float:
    """A rank's measured compute-op seconds per step (its F / B / W / BW / FB spans summed, median over timed steps)."""
    o = ops[(ops["schedule"] == cfg["schedule"]) & (ops["num_microbatches"] == int(cfg["num_microbatches"]))
            & (ops["rank"] == rank) & ops["kind"].isin(COMPUTE_OPS)]
    return float((o["end_s"] - o["start_s"]).groupby(o["rep"]).sum().median())


def fit_memory_scale(points: list[dict], ref: dict) -> dict:
    """rank_clock.MEMORY_SCALE: least squares of busy_s - (compute components x ref / f + every other component but
    `memory`) = factor x memory seconds over the pp > 1 points; beside it the free fit (three reference clocks and the
    factor) and the per-rank median |error| of both and of the twin's rates (the check, not the fit)."""
    pts = [p for p in points if p["pp"] > 1 and np.isfinite(p["busy_s"])]
    comp = np.array([sum(s * ref[c] / p["clock_mhz"] for c, s in p["component_s"].items() if c in ref) for p in pts])
    mem = np.array([p["component_s"].get("memory", 0.0) for p in pts])
    rest = np.array([sum(s for c, s in p["component_s"].items() if c not in ref and c != "memory") for p in pts])
    busy = np.array([p["busy_s"] for p in pts])
    factor = float(((busy - comp - rest) * mem).sum() / (mem ** 2).sum())
    a = np.column_stack([[p["component_s"].get(c, 0.0) / p["clock_mhz"] for p in pts] for c in ref] + [mem])
    free, *_ = np.linalg.lstsq(a, busy - rest, rcond=None)
    twin = np.array([sum(p["component_s"].values()) for p in pts])
    return {"memory_scale": factor, "n": len(pts), "free_ref_mhz": dict(zip(ref, map(float, free[:-1]))),
            "free_memory_scale": float(free[-1]),
            "median_abs_rel_error": float(np.median(np.abs((comp + rest + factor * mem) / busy - 1))),
            "twin_median_abs_rel_error": float(np.median(np.abs(twin / busy - 1)))}


def fit_law(points: list[dict], static_w: float, ref: dict, memory_scale: float = 1.0,
            exponent: float = DYNAMIC_POWER_EXPONENT) -> dict:
    """Least squares of P - P_s = x^k sum_class u_class D_class over the points, x = f / f_max, u_class = the class's
    twin kernel seconds (compute components x ref / f) over the measured step: {static_w, <class>_w, rms_w, n}."""
    a, y = [], []
    for p in points:
        f = p["clock_mhz"]
        t = rank_clock.class_seconds(f, p["component_s"], ref, memory_scale)
        x = f / MAX_SM_CLOCK_MHZ
        a.append([x ** exponent * t[k] / p["measured_step_s"] for k in rank_clock.POWER_CLASSES])
        y.append(p["power_w"] - static_w)
    a, y = np.array(a), np.array(y)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    rms = float(np.sqrt(np.mean((a @ coef - y) ** 2)))
    return {"static_w": float(static_w)} | {f"{k}_w": float(v) for k, v in zip(rank_clock.POWER_CLASSES, coef)} | {
        "rms_w": rms, "n": len(points)}


def fit(root: Path | str | None = None) -> tuple[dict, dict, list[dict]]:
    """The memory factor (fit_memory_scale), the law's parameters (at the committed memory factor) from the fitting
    records, and the points (each with the law's clock for its rank, solved at the twin's makespan as the candidate
    solves it)."""
    root = rec.records_root() if root is None else root
    name = gpu_spec(GPU).name
    ref, mem = rank_clock.REF_CLOCK_MHZ[name], rank_clock.MEMORY_SCALE[name]
    points = fit_points(root)
    scale = fit_memory_scale(points, ref)
    law = fit_law(points, idle_power_w(GPU, root), ref, mem)
    limit_w = float(gpu_spec(GPU).tdp_w)
    for p in points:
        p["law_clock_mhz"] = rank_clock.rank_ref_clock_mhz(p["component_s"], p["twin_makespan_s"], law, ref, limit_w,
                                                           mem)
    return scale, law, points


def priced_sets(root: Path | str | None = None, sets: tuple = GUARD_SETS) -> list[dict]:
    """Each committed PP2 set's two-GPU rows priced live with the candidate off (B) and on (C): round 1's scoring
    (s31clk.priced_sets) under this round's switch."""
    return s31clk.priced_sets(root, sets, candidate=switch, two_gpu_only=True)


def format_sets(sets: list[dict]) -> str:
    lines = []
    for s in sets:
        b, c = s["B"], s["C"]
        lines.append(f"{s['set']}: steps median |err| B {b['median_abs_rel_error']:.2%} / C {c['median_abs_rel_error']:.2%},"
                     f" P90 {b['p90_abs_rel_error']:.2%} / {c['p90_abs_rel_error']:.2%}; idle within B {b['num_within']} / "
                     f"C {c['num_within']} of {b['num_rank_rows']} (lost {len(s['lost_rank_rows'])}, gained "
                     f"{len(s['gained_rank_rows'])}); misordered B {b['num_misordered']} / C {c['num_misordered']} of "
                     f"{b['num_resolved']}")
        for m in s["lost_rank_rows"] + s["gained_rank_rows"]:
            lines.append(f"   {'lost' if m['B_within'] else 'gained'} {m['model']} {m['schedule']} n{m['num_microbatches']} "
                         f"rank {m['rank']}: measured {m['measured_idle_s'] * 1e3:.1f} ms, B {m['B_s'] * 1e3:.1f}, "
                         f"C {m['C_s'] * 1e3:.1f}")
    return "\n".join(lines)


def fresh_rows() -> list[dict]:
    return [{"gpu": GPU, "bench": "pipeline_step", "model": m, "schedule": s, "pp": 2, "ep": 1, "dp": 1, "num_gpus": 2,
             "num_microbatches": n, "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16", "num_layers": layers}
            for m, layers in FRESH_CASES for n in FRESH_MICROBATCHES for s in SCHEDULES]


def law_clocks(r: dict, inputs: tuple) -> list[float]:
    """Round 2's law's clock of each rank of a row, from the twin's simulation at its rates (switches off)."""
    span, comps = _components(r, inputs)
    name = gpu_spec(GPU).name
    law, ref, mem = rank_clock.RANK_POWER_REF[name], rank_clock.REF_CLOCK_MHZ[name], rank_clock.MEMORY_SCALE[name]
    return [rank_clock.rank_ref_clock_mhz(k, span, law, ref, float(gpu_spec(GPU).tdp_w), mem) for k in comps]


def predict_all(root: Path | str | None = None) -> pd.DataFrame:
    """The fresh rows priced B (candidate off) and C (on, columns prefixed cand_), with the law's clock of each rank
    (law_clock_r<k>_mhz)."""
    root = rec.records_root() if root is None else root
    inputs = {GPU: prereg.two_gpu_inputs(GPU, root)}
    rows = fresh_rows()
    with switch(False):
        base = prereg.predict_ep(rows, root, inputs=inputs)
    with switch(True):
        cand = prereg.predict_ep(rows, root, inputs=inputs)
    cols = ["predicted_s"] + [c for c in base.columns if c.startswith("predicted_idle_r")]
    two = pd.concat([base, cand[cols].add_prefix("cand_")], axis=1)
    clocks = [law_clocks(r, inputs[GPU]) for r in rows]
    for k in (0, 1):
        two[f"law_clock_r{k}_mhz"] = [c[k] for c in clocks]
    return two


def write(allow_dirty: bool = False) -> pd.DataFrame:
    return prereg.write_registered(PREDICTIONS_FILE, predict_all, allow_dirty)


def measured_clocks(root: Path | str | None = None) -> list[dict]:
    """s31clk.config_clocks of every filed folder of the fresh set (h200x2/s31clk2/<model>/)."""
    root = Path(rec.records_root() if root is None else root)
    out = []
    for m, _ in FRESH_CASES:
        folder = root / f"{GPU}x2" / FRESH_SUBDIR / m
        if csv_exists(folder / "pipeline_step.csv") and csv_exists(folder / "gpu_clocks.csv"):
            out += s31clk.config_clocks(read_csv(folder / "pipeline_step.csv"), read_csv(folder / "gpu_clocks.csv"))
    return out


def judge(root: Path | str | None = None, with_guards: bool = True) -> dict:
    """The rule's verdict on the filed fresh records: C1 (idle), C2 (steps), C3 (ranking), the guards G1 / G2 on every
    committed PP2 set, and the law's clocks against the measured (recorded, part D)."""
    root = rec.records_root() if root is None else root
    if not csv_exists(PREDICTIONS_FILE):
        return {"registration": NAME, "predictions": None}
    preds = read_csv(PREDICTIONS_FILE)
    clocks = s31clk.clock_criteria(preds, measured_clocks(root))
    secs = {"B": prereg_pp.section(root, subdir=FRESH_SUBDIR, preds=preds),
            "C": prereg_pp.section(root, subdir=FRESH_SUBDIR, preds=s29idle._candidate_frame(preds))}
    scores = {w: s29idle._score(v) if v["rows"] else None for w, v in secs.items()}
    crit = None
    if scores["B"] and scores["C"]:
        b, c = scores["B"], scores["C"]
        lost = [{k: x[k] for k in ("model", "schedule", "num_microbatches", "rank")}
                for x, y in zip(secs["B"]["idle"], secs["C"]["idle"]) if x["within"] and not y["within"]]
        crit = {"C1_idle_more_none_lost": c["num_within"] > b["num_within"] and not lost,
                "C2_steps": (c["median_abs_rel_error"] <= prereg.MEDIAN_TARGET
                             and c["p90_abs_rel_error"] <= prereg.P90_TARGET
                             and c["median_abs_rel_error"] <= b["median_abs_rel_error"] + STEP_NOT_WORSE),
                "C3_ranking": c["num_misordered"] <= b["num_misordered"], "lost_rank_rows": lost}
    guards = None
    if with_guards:
        sets = priced_sets(root)
        guards = {"sets": [{"set": x["set"], "B": x["B"], "C": x["C"], "lost": len(x["lost_rank_rows"]),
                            "gained": len(x["gained_rank_rows"])} for x in sets],
                  "G1_no_rank_row_lost": all(not x["lost_rank_rows"] for x in sets),
                  "G2_steps_not_worse": all(x["C"]["median_abs_rel_error"] <= x["B"]["median_abs_rel_error"]
                                            + STEP_NOT_WORSE for x in sets)}
    adopt = bool(crit and guards and crit["C1_idle_more_none_lost"] and crit["C2_steps"] and crit["C3_ranking"]
                 and guards["G1_no_rank_row_lost"] and guards["G2_steps_not_worse"])
    return {"registration": NAME, "note": "docs/notes/s31clk2_rule.md", "switch": "pipeline.ADOPT_RANK_REF_CLOCK",
            "predictions_commit": str(preds["code_commit"].iloc[0]), "clocks": clocks, "B": scores["B"],
            "C": scores["C"], "criteria": crit, "guards": guards, "adopt": adopt}


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.s31clk2", __doc__)
    ap.add_argument("action", nargs="?", default="fit", choices=["refs", "fit", "screen", "write", "judge", "record"])
    args = ap.parse_args(argv)
    if args.action == "refs":
        print(reference_clocks())
    if args.action == "fit":
        scale, law, points = fit()
        for p in points:
            comp = sum(s for c, s in p["component_s"].items() if c in rank_clock.COMPUTE_COMPONENTS)
            print(f"{p['folder'][-28:]:28s} {p['schedule']:9s} n{p['num_microbatches']:<3d} r{p['rank']}: "
                  f"{p['power_w']:4.0f} W at {p['clock_mhz']:5.0f} MHz (law {p['law_clock_mhz']:5.0f}); step "
                  f"{p['measured_step_s'] * 1e3:6.1f} ms (twin {p['twin_makespan_s'] * 1e3:6.1f}); compute "
                  f"{comp * 1e3:6.1f} ms")
        print("memory factor", json.dumps(scale, default=float))
        print({k: round(v, 1) if isinstance(v, float) else v for k, v in law.items()})
    if args.action == "screen":
        print(format_sets(priced_sets()))
    if args.action == "write":
        print(write().to_string(max_cols=30))
    if args.action in ("judge", "record"):
        if args.action == "record" and prereg.refuses_uncommitted_record():
            return 2
        out = judge()
        print(json.dumps(out, indent=1, default=float))
        if args.action == "record":
            prereg.write_code_record(JUDGEMENT_FILE, "python -m calibration.s31clk2 record", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

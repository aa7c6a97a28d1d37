"""s30mem: a pipeline stage's kernels at the rate the profiled pipeline ops ran them, judged on a fresh PP2 set (issue 13).

s29idle2's kernel split (docs/notes/s29idle2.md §4-5): by component, the twin prices the memory-bound kernels of every
PP stage's F and B ops (elementwise, copies, adds, fills) 10-40% under the profiled step, and its GEMMs and grouped GEMMs
5-20% over; the two cancel on MoE stages and not elsewhere, and the bubble ranks' idle misses of s29idle sit where they
do not. Candidate (pipeline.ADOPT_PIPELINE_KERNEL_RATES, off): every pipeline stage's (pp > 1) kernel seconds, per
component (gemm, grouped_gemm, attention, memory) and direction ("fb": the F and B ops' kernels; "w": the weight-gradient
ops'), times the fitting profiles' measured kernel seconds over the twin's (a ratio of sums over every profiled op of
that direction; memory less the twin's launch-bound kernels, which stay at launch_s). One factor per (GPU, direction,
component): nothing per row, slice, stage or schedule.

Fitting records: the committed 2xH200 PP2 kernel profiles (real/pipeline/probe.py's profiled step, split fit):
FIT_FOLDERS' pipeline_op_kernels.csv, pp 2, ep 1, the pure F, B and W ops (a pair's FB and 1F1B's BW mix directions and
run two streams at once: they are predicted, not fitted). The fresh set's records (h200x2/s30mem/) are never read by the
fit.

Screened before any rule or campaign (docs/notes/s30mem.md): the candidate, priced with the switch on (C) beside the
twin in force (B) on every committed pre-registered PP2 set (s20ppnew, s28blind pp, s29idle), on `twin validate`'s
2xH200 folder and on its own fitting configurations, makes the steps worse everywhere and loses rank-rows, so the
fresh campaign the brief planned was not asked for (a fresh set cannot undo a failed guard) and the switch stays off.

    python -m calibration.s30mem fit                 # the factors (pipeline.STAGE_KERNEL_SCALE) and the fit's table
    python -m calibration.s30mem                     # the screen, live (about two minutes of CPU)
    python -m calibration.s30mem record              # and its record, calibration/s30mem_judgement.json
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import pipeline as pipe
from calibration import prereg
from calibration import prereg_pp
from calibration import records as rec
from calibration import s29idle
from calibration.pipeline_judgement import IDLE_FLOOR_OF_STEP, IDLE_TOL
from calibration.fit import PROFILES_DIR
from calibration.records_io import json_exists, read_csv, read_json
from calibration.whole_step import gpu_spec
from twin.core.schedules import build_schedule
from twin.costs.profile import profile_from_json

NAME = "s30mem"
GPU = "h200"
FIT_FOLDERS = ("h200x2", "h200x2/s29idle2_20261128_1906/dsv2-slice", "h200x2/s29idle2_20261128_1906/mixtral-mla-slice",
               "h200x2/s29idle2_20261128_1906/qwen2moe-mla-slice")
FIT_KINDS = {"F": "fb", "B": "fb", "W": "w"}
COMPONENTS = ("gemm", "grouped_gemm", "attention", "memory")
CONFIG_KEYS = ["model", "schedule", "pp", "ep", "num_microbatches", "micro_batch_seqs", "seq_len", "precision"]


@contextlib.contextmanager
def _switch(on: bool):
    """ADOPT_PIPELINE_KERNEL_RATES held at `on` inside, restored after."""
    was = pipe.ADOPT_PIPELINE_KERNEL_RATES
    pipe.ADOPT_PIPELINE_KERNEL_RATES = on
    try:
        yield
    finally:
        pipe.ADOPT_PIPELINE_KERNEL_RATES = was


def _num_layers(folder: Path, model: str) -> int:
    """The profiled configuration's layer count: its pipeline_step rows' where the folder has them, else the probe's
    own config (env_pipeline_probe.json)."""
    steps, _ = pipe.load(folder)
    if len(steps) and "num_layers" in steps.columns:
        sel = steps[(steps["model"] == model) & (steps["pp"] > 1)]
        if len(sel):
            return int(sel["num_layers"].iloc[0])
    return int(json.loads((folder / "env_pipeline_probe.json").read_text())["config"]["num_layers"])


def _twin_parts(op) -> list[tuple[str, int]]:
    if op.kind == "FB":
        return [("F", op.chunk), ("B", op.b_chunk)] + ([] if op.b_split else [("W", op.b_chunk)])
    if op.kind == "BW":
        return [("B", op.chunk), ("W", op.chunk)]
    return [(op.kind, op.chunk)]


def component_rows(root: Path | str | None = None, folders: tuple = FIT_FOLDERS) -> pd.DataFrame:
    """Per profiled PP2 configuration, rank, op kind and model stage: the measured kernel seconds per component
    (pipeline.kernel_component of the profiled step's kernels attributed to the kind's ops, NCCL apart) and the twin's
    (the GPU seconds of the same ops' lists, Eager.component_s, launch-bound kernels apart), with the switch off."""
    root = Path(rec.records_root() if root is None else root)
    profile, accumulate, host, hold_s = prereg.two_gpu_inputs(GPU, root)
    with _switch(False):
        out = []
        for folder in folders:
            k = read_csv(root / folder / "pipeline_op_kernels.csv")
            k = k[(k["pp"] == 2) & (k["ep"] == 1) & k["kind"].notna() & (k["split"] == "fit")]
            for cfg, kern in k.groupby(CONFIG_KEYS):
                row = dict(zip(CONFIG_KEYS, cfg)) | {"dp": 1, "num_layers": _num_layers(root / folder, cfg[0])}
                _, _, det = pipe.simulate_row(pd.Series(row), gpu_spec(GPU), profile, accumulate, host, None, None,
                                              hold_s)
                schedule = build_schedule(det["schedule"], 2, int(row["num_microbatches"]))
                kern = kern.assign(component=kern["kernel"].astype(str).map(pipe.kernel_component),
                                   stage=[schedule.stage_of(int(r), int(c)) for r, c in zip(kern["rank"], kern["chunk"])])
                for rank, program in enumerate(schedule.programs):
                    twin: dict = {}
                    for op in program:
                        d = twin.setdefault((op.kind, schedule.stage_of(rank, op.chunk)), {})
                        for kind, chunk in _twin_parts(op):
                            for c, v in det["stage_kernel_s"][schedule.stage_of(rank, chunk)][kind].items():
                                d[c] = d.get(c, 0.0) + v
                    for (kind, stage), d in twin.items():
                        mine = kern[(kern["rank"] == rank) & (kern["kind"] == kind) & (kern["stage"] == stage)]
                        meas = mine.groupby("component")["time_s"].sum()
                        out.append({"folder": folder, "model": row["model"], "schedule": row["schedule"],
                                    "num_microbatches": int(row["num_microbatches"]), "rank": rank, "kind": kind,
                                    "stage": stage,
                                    **{f"measured_{c}_s": float(meas.get(c, 0.0)) for c in COMPONENTS + ("nccl",)},
                                    **{f"twin_{c}_s": float(d.get(c, 0.0)) for c in COMPONENTS + ("launch",)}})
    return pd.DataFrame(out)


def fit_scale(rows: pd.DataFrame) -> dict:
    """{(direction, component): measured / twin}: ratio of sums over the fitting ops of each direction (FIT_KINDS);
    memory's measured less the twin's launch-bound seconds (kept at launch_s: the factor is the rest's)."""
    out = {}
    for direction in sorted(set(FIT_KINDS.values())):
        sel = rows[rows["kind"].map(FIT_KINDS.get) == direction]
        for c in COMPONENTS:
            twin = float(sel[f"twin_{c}_s"].sum())
            meas = float(sel[f"measured_{c}_s"].sum()) - (float(sel["twin_launch_s"].sum()) if c == "memory" else 0.0)
            if twin > 0 and meas > 0:
                out[(direction, c)] = meas / twin
    return out


def ratio_table(rows: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """measured / twin per component (memory less the twin's launch-bound seconds) grouped by `by`."""
    g = rows.groupby(by).sum(numeric_only=True)
    out = pd.DataFrame({c: (g[f"measured_{c}_s"] - (g["twin_launch_s"] if c == "memory" else 0.0))
                        / g[f"twin_{c}_s"].replace(0.0, np.nan) for c in COMPONENTS})
    return out.assign(twin_memory_ms=g["twin_memory_s"] * 1e3)


JUDGEMENT_FILE = Path(__file__).resolve().parent / "s30mem_judgement.json"
# the committed pre-registered PP2 sets: (label, predictions file whose rows are re-priced, records subdir)
GUARD_SETS = (("s20ppnew", prereg_pp.PREDICTIONS_FILE, prereg_pp.RECORDS_SUBDIR),
              ("s28blind", prereg.PREREG_DIR / "s28blind_pp_predictions.csv", "s28blind/pp"),
              ("s29idle", s29idle.PREDICTIONS_FILE, s29idle.FRESH_SUBDIR))
ROW_KEYS = ["gpu", "bench", "model", "schedule", "pp", "ep", "dp", "num_gpus", "num_microbatches", "micro_batch_seqs",
            "seq_len", "precision", "num_layers"]
STEP_NOT_WORSE = 0.001   # the screen: C's median |step error| at most B's + 0.1 point (s29idle's G2)


def priced_sets(root: Path | str | None = None) -> list[dict]:
    """Each committed PP2 set's rows priced live by the twin in force (B, switch off) and with the candidate (C, on),
    scored as its pre-registration scores them (prereg_pp.section: steps, each rank's idle within IDLE_TOL or the
    floor, resolved schedule pairs), with the rank-rows within under B that fall out under C."""
    root = rec.records_root() if root is None else root
    out = []
    for label, path, subdir in GUARD_SETS:
        rows = read_csv(path)[ROW_KEYS].to_dict("records")
        secs = {}
        for who, on in (("B", False), ("C", True)):
            with _switch(on):
                preds = prereg.predict_ep(rows, root, inputs={}).assign(code_commit="live")
            secs[who] = prereg_pp.section(root, subdir=subdir, preds=preds)
        lost = [{k: c[k] for k in ("gpu", "model", "schedule", "num_microbatches", "rank", "measured_idle_s")}
                | {"B_s": b["predicted_idle_s"], "C_s": c["predicted_idle_s"]}
                for b, c in zip(secs["B"]["idle"], secs["C"]["idle"]) if b["within"] and not c["within"]]
        out.append({"set": label, "B": s29idle._score(secs["B"]), "C": s29idle._score(secs["C"]), "lost_rank_rows": lost})
    return out


def fitting_configs(root: Path | str | None = None) -> list[dict]:
    """The profiled configurations of the fit's probe folders (s29idle2: n4, ZB1P and DualPipeV, unprofiled timed
    steps in pipeline_host.csv) priced B and C: measured step (median over the timed steps) and each rank's idle."""
    root = Path(rec.records_root() if root is None else root)
    profile, accumulate, host, hold_s = prereg.two_gpu_inputs(GPU, root)
    out = []
    for folder in FIT_FOLDERS[1:]:
        h = read_csv(root / folder / "pipeline_host.csv")
        for cfg, ops in h.groupby(CONFIG_KEYS):
            row = dict(zip(CONFIG_KEYS, cfg)) | {"dp": 1, "num_layers": _num_layers(root / folder, cfg[0])}
            reps = ops.groupby("rep")
            step = float((reps["end_s"].max() - reps["start_s"].min()).median())
            idle = pipe.measured_idle_s(ops)
            r = {"folder": folder, "model": row["model"], "schedule": row["schedule"],
                 "num_microbatches": int(row["num_microbatches"]), "measured_s": step,
                 "measured_idle_s": [float(idle[k]) for k in sorted(idle)]}
            for who, on in (("B", False), ("C", True)):
                with _switch(on):
                    res, pred, _ = pipe.simulate_row(pd.Series(row), gpu_spec(GPU), profile, accumulate, host, None,
                                                     None, hold_s)
                r[f"{who}_s"] = float(pred)
                r[f"{who}_idle_s"] = [float(x) for x in res.idle_s]
            out.append(r)
    return out


def validate_guard(root: Path | str | None = None) -> dict:
    """`twin validate`'s 2xH200 folder (its PP2 rows and the s16idle idle judgement) with the switch off and on, as
    s29idle.validate_guard reads it for term M."""
    root = rec.records_root() if root is None else root
    profile = profile_from_json(json.loads((Path(PROFILES_DIR) / f"{GPU}.json").read_text()))
    views = {}
    for who, on in (("B", False), ("C", True)):
        with _switch(on):
            views[who] = s29idle._validate_view(root, profile)
    b, c = views["B"], views["C"]
    both_b, both_c = {**b["rank_rows"], **b["idle_gpus"]}, {**c["rank_rows"], **c["idle_gpus"]}
    return {w: {"median_abs_rel_error": v["median_abs_rel_error"], "rank_rows_within": sum(v["rank_rows"].values()),
                "rank_rows": len(v["rank_rows"]), "idle_gpus_met": sum(v["idle_gpus"].values()),
                "idle_gpus": len(v["idle_gpus"])} for w, v in views.items()} \
        | {"lost": sorted(k for k, v in both_b.items() if v and not both_c[k])}


def criteria(sets: list[dict], fitting: list[dict], vg: dict) -> dict:
    """The screen (docs/notes/s30mem.md): S1 no rank-row within under B lost under C on any committed set or in
    validate's folder; S2 C's median |step error| at most B's + 0.1 point on each set and in validate's folder; S3 on
    the fit's own configurations, C's median |step error| at most B's."""
    fit_b = float(np.median([abs(r["B_s"] / r["measured_s"] - 1) for r in fitting]))
    fit_c = float(np.median([abs(r["C_s"] / r["measured_s"] - 1) for r in fitting]))
    return {"S1_no_rank_row_lost": all(not s["lost_rank_rows"] for s in sets) and not vg["lost"],
            "S2_steps_not_worse": all(s["C"]["median_abs_rel_error"] <= s["B"]["median_abs_rel_error"] + STEP_NOT_WORSE
                                      for s in sets)
            and vg["C"]["median_abs_rel_error"] <= vg["B"]["median_abs_rel_error"] + STEP_NOT_WORSE,
            "S3_fitting_configs_not_worse": fit_c <= fit_b}


def judge(root: Path | str | None = None) -> dict:
    """The screen, live: factors refitted, every committed PP2 set, the fit's own configurations, validate's folder."""
    root = rec.records_root() if root is None else root
    rows = component_rows(root)
    scale = fit_scale(rows)
    sets, fitting, vg = priced_sets(root), fitting_configs(root), validate_guard(root)
    crit = criteria(sets, fitting, vg)
    return {"registration": NAME, "note": "docs/notes/s30mem.md", "switch": "pipeline.ADOPT_PIPELINE_KERNEL_RATES",
            "targets": {"idle_tol": IDLE_TOL, "idle_floor_of_step": IDLE_FLOOR_OF_STEP,
                        "step_not_worse": STEP_NOT_WORSE},
            "fit_scale": {f"{d}:{c}": v for (d, c), v in sorted(scale.items())},
            "committed_scale": {f"{d}:{c}": v for (d, c), v in
                                sorted(pipe.STAGE_KERNEL_SCALE.get(gpu_spec(GPU).name, {}).items())},
            "fit_table": [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()}
                          for r in ratio_table(rows, ["kind", "model"]).reset_index().to_dict("records")],
            "sets": sets, "fitting_configs": fitting, "validate_guard": vg, "criteria": crit,
            "adopt": all(crit.values()), "campaign": "none: a fresh set cannot undo a failed screen"}


def read_judgement(path: Path = JUDGEMENT_FILE) -> dict | None:
    return read_json(path) if json_exists(path) else None


def section(root: Path | str | None = None) -> dict:
    """`twin validate`'s part s30mem: the committed screen (two minutes of CPU: not recomputed here; the test
    recomputes the fit and one set live)."""
    j = read_judgement()
    return j if j is not None else {"registration": NAME, "sets": [], "criteria": {}, "adopt": False}


def format_section(sec: dict) -> str:
    head = ("s30mem: pipeline-stage kernels at the profiled ops' rate per component (ADOPT_PIPELINE_KERNEL_RATES, "
            "docs/notes/s30mem.md), screened on the committed PP2 sets")
    if not sec.get("sets"):
        return head + ": no record (python -m calibration.s30mem record)"
    lines = [head + ":"]
    for s in sec["sets"]:
        b, c = s["B"], s["C"]
        lines.append(f"  s30mem {s['set']}: steps median |err| B {b['median_abs_rel_error']:.2%} / C "
                     f"{c['median_abs_rel_error']:.2%}, P90 {b['p90_abs_rel_error']:.2%} / {c['p90_abs_rel_error']:.2%}; "
                     f"idle within B {b['num_within']} / C {c['num_within']} of {b['num_rank_rows']}, lost "
                     f"{len(s['lost_rank_rows'])}; misordered B {b['num_misordered']} / C {c['num_misordered']} of "
                     f"{b['num_resolved']}")
    vg = sec["validate_guard"]
    lines.append(f"  s30mem validate h200x2: PP2 rank-rows within B {vg['B']['rank_rows_within']} / C "
                 f"{vg['C']['rank_rows_within']} of {vg['B']['rank_rows']}, idle GPUs {vg['B']['idle_gpus_met']} / "
                 f"{vg['C']['idle_gpus_met']}, lost {len(vg['lost'])}; steps median |err| "
                 f"{vg['B']['median_abs_rel_error']:.2%} / {vg['C']['median_abs_rel_error']:.2%}")
    fit = sec["fitting_configs"]
    lines.append("  s30mem fit's own configurations (n4): steps " + ", ".join(
        f"{r['model'].split('-')[0]} {r['schedule']} {r['measured_s'] * 1e3:.1f} / B {r['B_s'] * 1e3:.1f} / C "
        f"{r['C_s'] * 1e3:.1f} ms" for r in fit))
    lines.append("  s30mem screen: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in sec["criteria"].items()))
    lines.append(f"  s30mem verdict: {'adopt' if sec['adopt'] else 'not adopted'} (campaign: {sec.get('campaign')})")
    return "\n".join(lines)


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.s30mem", __doc__)
    ap.add_argument("action", nargs="?", default="judge", choices=["judge", "fit", "record"])
    args = ap.parse_args(argv)
    if args.action == "fit":
        rows = component_rows()
        with pd.option_context("display.width", 200, "display.max_rows", 200):
            print(ratio_table(rows, ["kind", "model"]).round(3).to_string())
        scale = fit_scale(rows)
        print("{" + ", ".join(f"({d!r}, {c!r}): {v:.4f}" for (d, c), v in sorted(scale.items())) + "}")
        print(f"committed: {pipe.STAGE_KERNEL_SCALE.get(gpu_spec(GPU).name)}")
        return 0
    if args.action == "record" and prereg.refuses_uncommitted_record():
        return 2
    sec = judge(rec.records_root())
    print(format_section(sec))
    if args.action == "record":
        prereg.write_code_record(JUDGEMENT_FILE, "python -m calibration.s30mem record", sec)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pre-registered predictions of two-GPU PIPELINE steps (PP2) of models no record holds (session s20ppnew).

calibration.prereg pre-registered one-GPU train steps (s20new, s20gqa) and EP2 steps (s20epnew) of
the slices of other MoE families (twin/data/models.toml: qwen3moe-, qwen2moe-, mixtral-mla-slice).
This module does the same for real/pipeline's pipeline_step rows at pp 2 under each schedule the
committed two-GPU pipeline rows use (1F1B, ZB1P, DualPipeV, DualPipe), through the path `twin
validate` prices those rows with (calibration.pipeline.simulate_row under the host inputs of the
committed `<gpu>x2` folder: calibration.prereg.predict_ep, which takes the row's pp and schedule),
with each rank's simulated idle. The predictions are written with the commit of their code and a
UTC timestamp to calibration/measurements/prereg/s20ppnew_predictions.csv BEFORE the GPU run
(real/campaigns/s20ppnew.sh) and never rewritten. Records land in
calibration/measurements/<gpu>x2/s20ppnew/<model>/ (a subfolder no fit and no validation reads).

    python -m calibration.prereg_pp write     # the predictions file (refuses a dirty twin/ or calibration/)
    python -m calibration.prereg_pp compare   # predictions beside the records: steps, idle, ranking

Judgements (docs/notes/s20ppnew.md, written before the run):
  steps    issue 13's pipeline_step target per GPU: median |error| <= 5%, P90 <= 10%;
  ranking  per (model, micro-batches): every pair of schedules whose timed steps differ at rank-sum
           p < 0.05 (calibration.pipeline_judgement.rank_sum_p, RANKING_ALPHA) is ordered as the
           twin orders it; pairs the run does not resolve are reported, not judged;
  idle     each rank's predicted idle within 10% of its measured median idle or 1% of the measured
           step (pipeline_judgement IDLE_TOL / IDLE_FLOOR_OF_STEP), reported as a count: the run's
           few steps are below the idle rule's IDLE_MIN_STEPS, so it is not a judgement.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pandas as pd

from calibration import entry
from calibration import pipeline as pipe
from calibration import prereg
from calibration import records as rec
from calibration.pipeline_judgement import (IDLE_FLOOR_OF_STEP, IDLE_TOL, RANKING_ALPHA, rank_sum_p,
                                            step_times_by_rep_s)
from calibration.records_io import csv_exists, glob_csv, read_csv

PREDICTIONS_FILE = prereg.PREREG_DIR / "s20ppnew_predictions.csv"
RECORDS_SUBDIR = "s20ppnew"   # calibration/measurements/<gpu>x2/s20ppnew/<model>/pipeline_step.csv
# (model, num_layers): real/campaigns/s20ppnew.sh's MODELS, in its order (a test holds them equal).
# 4 layers each: DualPipeV cuts pp 2 into 4 model stages (one layer each)
CASES = (("qwen3moe-mla-slice", 4), ("qwen2moe-mla-slice", 4), ("mixtral-mla-slice", 4))
SCHEDULES = ("1f1b", "zb1p", "dualpipev", "dualpipe")   # the committed h200x2 pipeline_step rows'
MICROBATCHES = (4, 8)
KEY = ["gpu", "model", "schedule", "num_layers", "num_microbatches"]


def case_rows() -> list[dict]:
    """One pipeline_step row (real/pipeline/bench.py's fields) per (gpu, model, schedule, micro-batches)."""
    return [{"gpu": gpu, "bench": "pipeline_step", "model": model, "schedule": sched, "pp": 2, "ep": 1, "dp": 1,
             "num_gpus": 2, "num_microbatches": n, "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16",
             "num_layers": layers}
            for gpu in prereg.GPUS for model, layers in CASES for n in MICROBATCHES for sched in SCHEDULES]


def write(path: Path = PREDICTIONS_FILE, allow_dirty: bool = False) -> pd.DataFrame:
    """Write the predictions file; refuses to overwrite one (a pre-registration is never redone)."""
    return prereg.write_registered(path, lambda: prereg.predict_ep(case_rows()), allow_dirty)


def measured(root: Path | str | None = None, subdir: str = RECORDS_SUBDIR) -> pd.DataFrame:
    """The campaign's pipeline_step rows with each rank's measured idle (median over its timed steps)
    and the timed steps' times, from every two-GPU folder that has them (one subfolder a model, under
    <gpu>x2/<subdir>: s20ppnew's unless given; s28blind's are under s28blind/pp)."""
    root = rec.records_root() if root is None else root
    out = []
    for gpu in prereg.GPUS:
        for path in glob_csv(Path(root) / f"{gpu}x2" / subdir, "*/pipeline_step.csv"):
            steps = read_csv(path)
            ops_path = Path(path).parent / "pipeline_ops.csv"
            ops = read_csv(ops_path) if csv_exists(ops_path) else pd.DataFrame()
            for _, row in steps[steps["bench"] == "pipeline_step"].iterrows():
                mine = pipe.ops_of(row, ops) if not ops.empty else ops
                idle = pipe.measured_idle_s(mine) if not mine.empty else {}
                out.append({**{k: row[k] for k in KEY[1:]}, "gpu": gpu, "time_s": float(row["time_s"]),
                            "gpu_name": row["gpu_name"], "step_times_s": step_times_by_rep_s(mine),
                            **{f"measured_idle_r{r}_s": v for r, v in idle.items()}})
    return pd.DataFrame(out, columns=None if out else KEY + ["time_s", "gpu_name", "step_times_s"])


def idle_rows(rows: pd.DataFrame) -> list[dict]:
    """Per compared row and rank: predicted and measured idle and whether it is within the idle
    tolerance (10% of the measured idle, or 1% of the measured step where larger)."""
    out = []
    for _, r in rows.iterrows():
        for rank in (0, 1):
            pred, meas = r.get(f"predicted_idle_r{rank}_s"), r.get(f"measured_idle_r{rank}_s")
            if pred is None or meas is None or pd.isna(pred) or pd.isna(meas):
                continue
            tol = max(IDLE_TOL * meas, IDLE_FLOOR_OF_STEP * r["time_s"])
            out.append({**{k: r[k] for k in KEY}, "rank": rank, "predicted_idle_s": float(pred),
                        "measured_idle_s": float(meas), "within": bool(abs(pred - meas) <= tol)})
    return out


def ranking(rows: pd.DataFrame) -> list[dict]:
    """Per (gpu, model, micro-batches) and pair of schedules: the measured and predicted order, the
    rank-sum p of the pair's timed steps, resolved (p < RANKING_ALPHA) and, where resolved, whether
    the twin orders it as measured."""
    out = []
    for (gpu, model, n), sub in rows.groupby(["gpu", "model", "num_microbatches"]):
        by = {r["schedule"]: r for _, r in sub.iterrows()}
        for a, b in itertools.combinations(sorted(by), 2):
            ra, rb = by[a], by[b]
            p = rank_sum_p(list(ra["step_times_s"]), list(rb["step_times_s"]))
            measured_faster = a if ra["time_s"] < rb["time_s"] else b
            predicted_faster = a if ra["predicted_s"] < rb["predicted_s"] else b
            resolved = p < RANKING_ALPHA
            out.append({"gpu": gpu, "model": model, "num_microbatches": int(n), "pair": f"{a}/{b}", "p": p,
                        "measured_faster": measured_faster, "predicted_faster": predicted_faster,
                        "resolved": bool(resolved), "ordered": bool(measured_faster == predicted_faster)})
    return out


def section(root: Path | str | None = None, path: Path = PREDICTIONS_FILE,
            subdir: str = RECORDS_SUBDIR, preds: pd.DataFrame | None = None) -> dict:
    """The committed predictions beside the records under `root` (<gpu>x2/<subdir>/<model>/): per-row step
    error, per GPU the median / P90 against issue 13's target, each rank's idle, and the schedules' ranking.
    `preds`: predictions given as a frame instead of `path` (s29idle: the same file with a term added)."""
    root = rec.records_root() if root is None else root
    if preds is None:
        if not csv_exists(path):
            return {"predictions_commit": None, "by_gpu": {}, "rows": [], "idle": [], "ranking": []}
        preds = read_csv(path)
    meas = measured(root, subdir)
    rows, summary = prereg.compare(preds, meas.drop(columns=[c for c in meas.columns if c.startswith("measured_idle")]),
                                   key=KEY) if not meas.empty else (pd.DataFrame(), {})
    if rows.empty:
        return {"predictions_commit": str(preds["code_commit"].iloc[0]), "by_gpu": {}, "rows": [], "idle": [],
                "ranking": []}
    idle_cols = [c for c in preds.columns if c.startswith("predicted_idle")]
    full = rows.merge(preds[KEY + idle_cols], on=KEY).merge(
        meas[KEY + [c for c in meas.columns if c.startswith("measured_idle")]], on=KEY)
    order = full.assign(order=full.groupby(["gpu", "model", "num_microbatches"])["time_s"].rank())
    return {"predictions_commit": str(preds["code_commit"].iloc[0]), "by_gpu": summary,
            "rows": order[KEY + ["time_s", "predicted_s", "rel_error"]].rename(columns={"time_s": "measured_s"})
            .to_dict("records"),
            "idle": idle_rows(full), "ranking": ranking(full)}


def format_table(sec: dict) -> str:
    head = f"Pre-registered PP2 steps (s20ppnew; predictions of {(sec['predictions_commit'] or 'none')[:7]})"
    if not sec["by_gpu"]:
        return head + ": no records yet"
    lines = [head + ":"]
    for gpu, s in sec["by_gpu"].items():
        lines.append(f"  prereg-pp {gpu}x2: {s['num_cases']} rows, median |err| {s['median_abs_rel_error']:.1%}, P90 "
                     f"{s['p90_abs_rel_error']:.1%} (target {prereg.MEDIAN_TARGET:.0%} / {prereg.P90_TARGET:.0%}: "
                     f"{'met' if s['meets_target'] else 'MISSED'})")
    for r in sec["rows"]:
        lines.append(f"    {r['gpu']}x2 {r['model']} {r['schedule']} n{r['num_microbatches']}: measured "
                     f"{r['measured_s'] * 1e3:.1f} ms, predicted {r['predicted_s'] * 1e3:.1f} ms ({r['rel_error']:+.1%})")
    # the rule judges ranking per host kind (docs/notes/s20ppnew.md), so each kind gets its own lines
    for gpu in sec["by_gpu"]:
        pairs = [p for p in sec["ranking"] if p["gpu"] == gpu]
        resolved = [p for p in pairs if p["resolved"]]
        lines.append(f"  ranking {gpu}x2: {len(resolved)} of {len(pairs)} pairs resolved (p < {RANKING_ALPHA}), "
                     f"{sum(p['ordered'] for p in resolved)} ordered as measured; all pairs ordered as measured: "
                     f"{sum(p['ordered'] for p in pairs)}")
        for p in resolved:
            if not p["ordered"]:
                lines.append(f"    misordered {p['gpu']} {p['model']} n{p['num_microbatches']} {p['pair']}: measured "
                             f"{p['measured_faster']} faster (p {p['p']:.3f})")
        idle = [i for i in sec["idle"] if i["gpu"] == gpu]
        lines.append(f"  idle {gpu}x2: {sum(i['within'] for i in idle)} of {len(idle)} rank-rows within "
                     f"{IDLE_TOL:.0%} or {IDLE_FLOOR_OF_STEP:.0%} of the step (indicative: few steps)")
    return "\n".join(lines)


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.prereg_pp", description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["write", "compare"])
    ap.add_argument("--allow-dirty", action="store_true", help="write with uncommitted predicting code (tests only)")
    ap.add_argument("--out", type=Path, default=PREDICTIONS_FILE)
    args = ap.parse_args(argv)
    if args.action == "write":
        print(write(args.out, allow_dirty=args.allow_dirty).to_string(index=False))
        return 0
    print(format_table(section()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

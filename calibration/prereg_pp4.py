"""Pre-registered predictions of FOUR-GPU pipeline steps (PP4, PP2 x EP2) of models no record holds (session s21pp4).

calibration.prereg_pp pre-registered PP2 steps of the slices of other MoE families (s20ppnew, 2xH200).
The only four-GPU pipeline records hold v2-lite-slice at PP2 x EP2. This module pre-registers
real/pipeline's pipeline_step rows on four GPUs of the same slices under two layouts no record holds
for them: pp 4 (ep 1, dp 1: one stage a GPU) and pp 2 x ep 2 (dp 2: each model stage's experts over
two GPUs), each schedule (1F1B, ZB1P, DualPipeV, DualPipe) at 8 and 16 micro-batches, through the path
`twin validate` prices the committed four-GPU pipeline_step rows with (calibration.pipeline.simulate_row
under the host inputs of the committed `<gpu>x4` folder: calibration.prereg.predict_ep with num_gpus 4;
no routing records, as s20epnew and s20ppnew: the run's own routing is not known before it runs), with
each simulated pipeline rank's idle. The predictions are written with the commit of their code and a
UTC timestamp to calibration/measurements/prereg/s21pp4_predictions.csv BEFORE the GPU run
(real/campaigns/s21pp4.sh) and never rewritten. Records land in
calibration/measurements/<gpu>x4/s21pp4/<model>/ (a subfolder no fit and no validation reads).

    python -m calibration.prereg_pp4 write     # the predictions file (refuses a dirty twin/ or calibration/)
    python -m calibration.prereg_pp4 compare   # predictions beside the records: steps, idle, ranking

live_section (s22pp4j, docs/notes/s22pp4j_rule.md) re-predicts a delivery's pp2ep2 rows with today's code,
balanced or at the run's own routing (the EP peers' rendezvous in lockstep: term R), judged the same way.

Judgements (docs/notes/s21pp4_rule.md, written before the run), per GPU kind over the rows measured:
  steps    issue 13's pipeline_step target: median |error| <= 5%, P90 <= 10% (also per layout, reported);
  ranking  per (model, layout, micro-batches): every pair of schedules whose timed steps differ at
           rank-sum p < 0.05 (calibration.pipeline_judgement.rank_sum_p, RANKING_ALPHA) is ordered as
           the twin orders it; unresolved pairs are reported, not judged;
  idle     each measured rank's median idle beside its pipeline rank's predicted idle (global rank
           = dp_rank * pp + pp_rank: pipeline rank = rank % pp), within 10% of the measured idle or
           1% of the measured step (pipeline_judgement IDLE_TOL / IDLE_FLOOR_OF_STEP); met where every
           rank-row is within (on 4 timed steps a configuration: below the idle rule's IDLE_MIN_STEPS).
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import pipeline as pipe
from calibration import prereg
from calibration import records as rec
from calibration.pipeline_judgement import (IDLE_FLOOR_OF_STEP, IDLE_TOL, RANKING_ALPHA, rank_sum_p,
                                            step_times_by_rep_s)
from calibration.records_io import csv_exists, glob_csv, read_csv

PREDICTIONS_FILE = prereg.PREREG_DIR / "s21pp4_predictions.csv"
RECORDS_SUBDIR = "s21pp4"   # calibration/measurements/<gpu>x4/s21pp4/<model>/pipeline_step.csv
# the second delivery of the pp2ep2 rows (real/campaigns/s21pp4b.sh; docs/notes/s21pp4_rule.md addendum A),
# judged on its own against the same predictions
SECOND_SUBDIR = "s21pp4b"
NUM_GPUS = 4
# (model, num_layers): real/campaigns/s21pp4.sh's MODELS, in its order (a test holds them equal).
# 8 layers each: DualPipeV cuts pp 4 into 8 model stages (one layer each)
CASES = (("qwen3moe-mla-slice", 8), ("qwen2moe-mla-slice", 8), ("mixtral-mla-slice", 8))
# (pp, ep): the campaign's --layouts pp4,pp2ep2; on 4 ranks real/pipeline's mesh has dp = 4 / pp (ep splits
# the dp replicas' experts: pp2ep2 is two pipelines of 2 whose stages share their experts)
LAYOUTS = ((4, 1), (2, 2))
SCHEDULES = ("1f1b", "zb1p", "dualpipev", "dualpipe")
# the campaign's --layout-microbatches pp4=8/16,pp2ep2=4 (DualPipe at pp 4 needs >= 8; pp2ep2 at one
# count, 4, for the campaign's 200 s)
MICROBATCHES = {(4, 1): (8, 16), (2, 2): (4,)}
KEY = ["gpu", "model", "pp", "ep", "schedule", "num_layers", "num_microbatches"]
GROUP = ["gpu", "model", "pp", "ep", "num_microbatches"]   # the schedules ranked against each other


def layout_name(pp: int, ep: int) -> str:
    return f"pp{pp}" + (f"ep{ep}" if ep > 1 else "")


def case_rows() -> list[dict]:
    """One pipeline_step row (real/pipeline/bench.py's fields) per (gpu, model, layout, schedule, count).
    dp = the ranks over the pipeline's: real/pipeline's mesh (ep splits the dp replicas' experts)."""
    return [{"gpu": gpu, "bench": "pipeline_step", "model": model, "schedule": sched, "pp": pp, "ep": ep,
             "dp": NUM_GPUS // pp, "num_gpus": NUM_GPUS, "num_microbatches": n, "micro_batch_seqs": 1,
             "seq_len": 4096, "precision": "bf16", "num_layers": layers}
            for gpu in prereg.GPUS for model, layers in CASES for pp, ep in LAYOUTS for n in MICROBATCHES[pp, ep]
            for sched in SCHEDULES]


def predict(rows: list[dict], root: Path | str | None = None) -> pd.DataFrame:
    """The twin's step seconds and each pipeline rank's idle of `rows`, priced as rows of `<gpu>x4`."""
    root = rec.records_root() if root is None else root
    return prereg.predict_ep(rows, root, num_gpus=NUM_GPUS)


def write(path: Path = PREDICTIONS_FILE, allow_dirty: bool = False) -> pd.DataFrame:
    """Write the predictions file; refuses to overwrite one (a pre-registration is never redone)."""
    return prereg.write_registered(path, lambda: predict(case_rows()), allow_dirty)


def measured(root: Path | str | None = None, subdir: str = RECORDS_SUBDIR) -> pd.DataFrame:
    """The campaign's pipeline_step rows with each global rank's measured idle (median over its timed
    steps) and the timed steps' times, from every four-GPU folder that has them (one subfolder a model)."""
    root = rec.records_root() if root is None else root
    out = []
    for gpu in prereg.GPUS:
        for path in glob_csv(Path(root) / f"{gpu}x{NUM_GPUS}" / subdir, "*/pipeline_step.csv"):
            steps = read_csv(path)
            ops_path = Path(path).parent / "pipeline_ops.csv"
            ops = read_csv(ops_path) if csv_exists(ops_path) else pd.DataFrame()
            for _, row in steps[steps["bench"] == "pipeline_step"].iterrows():
                mine = pipe.ops_of(row, ops) if not ops.empty else ops
                idle = pipe.measured_idle_s(mine) if not mine.empty else {}
                out.append({**{k: row[k] for k in KEY[1:]}, "gpu": gpu, "time_s": float(row["time_s"]),
                            "gpu_name": row["gpu_name"], "step_times_s": step_times_by_rep_s(mine),
                            "measured_idle_s": {int(r): float(v) for r, v in idle.items()}})
    return pd.DataFrame(out, columns=None if out else KEY + ["time_s", "gpu_name", "step_times_s", "measured_idle_s"])


def idle_rows(rows: pd.DataFrame) -> list[dict]:
    """Per compared row and measured global rank: its idle beside its pipeline rank's (rank % pp)
    predicted idle, and whether within IDLE_TOL of the measured idle or IDLE_FLOOR_OF_STEP of the step."""
    out = []
    for _, r in rows.iterrows():
        for rank, meas in sorted(r["measured_idle_s"].items()):
            pred = r.get(f"predicted_idle_r{rank % int(r['pp'])}_s")
            if pred is None or pd.isna(pred):
                continue
            tol = max(IDLE_TOL * meas, IDLE_FLOOR_OF_STEP * r["time_s"])
            out.append({**{k: r[k] for k in KEY}, "rank": rank, "predicted_idle_s": float(pred),
                        "measured_idle_s": float(meas), "within": bool(abs(pred - meas) <= tol)})
    return out


def ranking(rows: pd.DataFrame) -> list[dict]:
    """Per (gpu, model, layout, micro-batches) and pair of schedules: the measured and predicted order,
    the rank-sum p of the pair's timed steps, resolved (p < RANKING_ALPHA) and whether the twin orders
    the pair as measured."""
    out = []
    for (gpu, model, pp, ep, n), sub in rows.groupby(GROUP):
        by = {r["schedule"]: r for _, r in sub.iterrows()}
        for a, b in itertools.combinations(sorted(by), 2):
            ra, rb = by[a], by[b]
            p = rank_sum_p(list(ra["step_times_s"]), list(rb["step_times_s"]))
            measured_faster = a if ra["time_s"] < rb["time_s"] else b
            predicted_faster = a if ra["predicted_s"] < rb["predicted_s"] else b
            out.append({"gpu": gpu, "model": model, "layout": layout_name(int(pp), int(ep)),
                        "num_microbatches": int(n), "pair": f"{a}/{b}", "p": p, "measured_faster": measured_faster,
                        "predicted_faster": predicted_faster, "resolved": bool(p < RANKING_ALPHA),
                        "ordered": bool(measured_faster == predicted_faster)})
    return out


def _summary(rel_errors: np.ndarray) -> dict:
    errs = np.abs(rel_errors)
    median, p90 = float(np.median(errs)), float(np.percentile(errs, 90))
    return {"num_cases": int(errs.size), "median_abs_rel_error": median, "p90_abs_rel_error": p90,
            "meets_target": bool(median <= prereg.MEDIAN_TARGET and p90 <= prereg.P90_TARGET)}


def section(root: Path | str | None = None, path: Path = PREDICTIONS_FILE,
            subdir: str = RECORDS_SUBDIR) -> dict:
    """The committed predictions beside the records under `root` (the delivery in `subdir`): per-row
    step error; per GPU (and per GPU and layout) the median / P90 against issue 13's target; each
    rank's idle; the schedules' ranking."""
    root = rec.records_root() if root is None else root
    if not csv_exists(path):
        return compared(pd.DataFrame(), pd.DataFrame(), subdir)
    return compared(read_csv(path), measured(root, subdir), subdir)


def compared(preds: pd.DataFrame, meas: pd.DataFrame, subdir: str) -> dict:
    """section's comparison of predictions `preds` (KEY, predicted_s, predicted_idle_r<k>_s, code_commit)
    with records `meas` (measured's rows)."""
    empty = {"delivery": subdir, "predictions_commit": None, "by_gpu": {}, "by_layout": {}, "rows": [], "idle": [],
             "ranking": []}
    if preds.empty:
        return empty
    empty["predictions_commit"] = str(preds["code_commit"].iloc[0])
    if meas.empty:
        return empty
    idle_cols = [c for c in preds.columns if c.startswith("predicted_idle")]
    full = meas.merge(preds[KEY + ["predicted_s"] + idle_cols], on=KEY, how="inner")
    if full.empty:
        return empty
    full = full.assign(rel_error=full["predicted_s"] / full["time_s"] - 1.0)
    by_gpu = {gpu: _summary(sub["rel_error"].to_numpy()) for gpu, sub in full.groupby("gpu")}
    by_layout = {f"{gpu} {layout_name(int(pp), int(ep))}": _summary(sub["rel_error"].to_numpy())
                 for (gpu, pp, ep), sub in full.groupby(["gpu", "pp", "ep"])}
    return {"delivery": subdir, "predictions_commit": empty["predictions_commit"], "by_gpu": by_gpu,
            "by_layout": by_layout,
            "rows": full[KEY + ["time_s", "predicted_s", "rel_error"]].rename(columns={"time_s": "measured_s"})
            .to_dict("records"),
            "idle": idle_rows(full), "ranking": ranking(full)}


def routing_of(root: Path | str | None = None, subdir: str = RECORDS_SUBDIR) -> pd.DataFrame:
    """Every model's pipeline_routing rows of a delivery (h200x4 and h100x4 folders), concatenated."""
    root = rec.records_root() if root is None else root
    parts = [read_csv(p) for gpu in prereg.GPUS
             for p in glob_csv(Path(root) / f"{gpu}x{NUM_GPUS}" / subdir, "*/pipeline_routing.csv")]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def live_section(subdir: str, routed: bool, root: Path | str | None = None,
                 inputs: dict | None = None) -> dict:
    """s22pp4j: a delivery's pp2ep2 rows (ep > 1) predicted by today's code on prereg_pp4's path (predict),
    with `routed` each MoE layer at the delivery's own routing (the most loaded EP rank's rows per local
    expert: prereg.predict_ep's `routing`, the lockstep limit of the EP peers' rendezvous) or balanced,
    beside the records, judged as section judges the committed predictions (code_commit "live"); `inputs`:
    prereg.predict_ep's, shared between calls."""
    root = rec.records_root() if root is None else root
    meas = measured(root, subdir)
    if meas.empty:
        return compared(pd.DataFrame(), meas, subdir)
    meas = meas[meas["ep"] > 1]
    keys = {tuple(m[k] for k in KEY) for _, m in meas.iterrows()}
    rows = [case for case in case_rows() if tuple(case[k] for k in KEY) in keys]
    preds = prereg.predict_ep(rows, root, num_gpus=NUM_GPUS,
                              routing=routing_of(root, subdir) if routed else None, inputs=inputs)
    return compared(preds.assign(code_commit="live"), meas, f"{subdir} live{' routed' if routed else ''}")


def judgement(sec: dict) -> dict:
    """Per GPU: steps (issue 13's target), ranking (no resolved pair misordered) and idle (every rank-row within)."""
    out = {}
    for gpu, s in sec["by_gpu"].items():
        pairs = [p for p in sec["ranking"] if p["gpu"] == gpu and p["resolved"]]
        idle = [i for i in sec["idle"] if i["gpu"] == gpu]
        out[gpu] = {"steps": s["meets_target"], "ranking": all(p["ordered"] for p in pairs),
                    "idle": bool(idle) and all(i["within"] for i in idle)}
    return out


def format_table(sec: dict) -> str:
    commit = (sec["predictions_commit"] or "none")[:7]
    head = f"Pre-registered four-GPU pipeline steps ({sec.get('delivery', RECORDS_SUBDIR)}; predictions of {commit})"
    if not sec["by_gpu"]:
        return head + ": no records yet"
    lines = [head + ":"]
    verdict = judgement(sec)
    for gpu, s in sec["by_gpu"].items():
        lines.append(f"  prereg-pp4 {gpu}x4: {s['num_cases']} rows, median |err| {s['median_abs_rel_error']:.1%}, P90 "
                     f"{s['p90_abs_rel_error']:.1%} (target {prereg.MEDIAN_TARGET:.0%} / {prereg.P90_TARGET:.0%}: "
                     f"{'met' if s['meets_target'] else 'MISSED'})")
        for label, t in sec["by_layout"].items():
            if label.split()[0] == gpu:
                lines.append(f"    {label}: {t['num_cases']} rows, median {t['median_abs_rel_error']:.1%}, "
                             f"P90 {t['p90_abs_rel_error']:.1%}")
        pairs = [p for p in sec["ranking"] if p["gpu"] == gpu]
        resolved = [p for p in pairs if p["resolved"]]
        lines.append(f"  prereg-pp4 ranking {gpu}x4: {len(resolved)} of {len(pairs)} pairs resolved (p < {RANKING_ALPHA}), "
                     f"{sum(p['ordered'] for p in resolved)} ordered as measured "
                     f"({'met' if verdict[gpu]['ranking'] else 'MISSED'}); all pairs ordered as measured: "
                     f"{sum(p['ordered'] for p in pairs)}")
        idle = [i for i in sec["idle"] if i["gpu"] == gpu]
        lines.append(f"  prereg-pp4 idle {gpu}x4: {sum(i['within'] for i in idle)} of {len(idle)} rank-rows within "
                     f"{IDLE_TOL:.0%} or {IDLE_FLOOR_OF_STEP:.0%} of the step "
                     f"({'met' if verdict[gpu]['idle'] else 'MISSED'}; 4 timed steps a configuration)")
    for r in sec["rows"]:
        lines.append(f"    {r['gpu']}x4 {r['model']} {layout_name(int(r['pp']), int(r['ep']))} {r['schedule']} "
                     f"n{r['num_microbatches']}: measured {r['measured_s'] * 1e3:.1f} ms, predicted "
                     f"{r['predicted_s'] * 1e3:.1f} ms ({r['rel_error']:+.1%})")
    for p in sec["ranking"]:
        if p["resolved"] and not p["ordered"]:
            lines.append(f"    misordered {p['gpu']} {p['model']} {p['layout']} n{p['num_microbatches']} {p['pair']}: "
                         f"measured {p['measured_faster']} faster (p {p['p']:.3f})")
    return "\n".join(lines)


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.prereg_pp4", description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["write", "compare"])
    ap.add_argument("--allow-dirty", action="store_true", help="write with uncommitted predicting code (tests only)")
    ap.add_argument("--out", type=Path, default=PREDICTIONS_FILE)
    args = ap.parse_args(argv)
    if args.action == "write":
        print(write(args.out, allow_dirty=args.allow_dirty).to_string(index=False))
        return 0
    print(format_table(section()))
    print(format_table(section(subdir=SECOND_SUBDIR)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

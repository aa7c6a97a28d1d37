"""s29idle: DualPipe's mirrored-rank wait, fitted on the fitting PP2 records and judged on a fresh 2xH200 set (issue 13).

In DualPipe at pp 2 the two ranks hold mirrored, equal work (each the first stage of one direction and the last of the
other) and no bubble: every direction change is a rendezvous. The twin gives both ranks the same op durations, so each
idles only the transfers (0.2-0.7 ms). Measured, the two ranks' paces differ over a step (the host issuing one rank's
ops slower than the other's, independently op by op: calibration.pipeline.measured_host_by_rank's note), so the faster
rank waits the difference at each direction change; which rank is the slower flips between runs (the records below).
The expected difference of two independent random walks of k ops grows as sqrt(k), k proportional to the micro-batch
count n. Term M (pipeline.ADOPT_DUALPIPE_MIRROR_WAIT, off): each rank's idle and the step of a PP2 DualPipe row get
M(n) = c * sqrt(n), c = the median over the fitting rows of (mean over the two ranks of measured idle - the twin's
idle) / sqrt(n) (the expected wait of a rank whose sign is unknown: half the pace gap, plus the transfers' lateness).

Fitting records (the repo's convention: `split == "fit"` rows of committed PP2 folders; the pre-registered, judged sets
s20ppnew and s28blind are held out and never read here): FIT_FOLDERS under h200x2/, DualPipe pp 2 rows of the fit split.

    python -m calibration.s29idle fit                # c from the fitting records (pipeline.MIRROR_WAIT_PER_SQRT_MB_S)
    python -m calibration.s29idle write              # the fresh set's predictions, B and C (refuses dirty code)
    python -m calibration.s29idle                    # the judgement (the rule's), live
    python -m calibration.s29idle record             # and its record, calibration/s29idle_judgement.json
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry, judged_under
from calibration import pipeline_judgement as judgement
from calibration import pipeline as pipe
from calibration import prereg
from calibration import prereg_pp
from calibration import records as rec
from calibration.pipeline_judgement import IDLE_FLOOR_OF_STEP, IDLE_TOL
from calibration.records_io import csv_exists, json_exists, read_csv, read_json
from calibration.fit import PROFILES_DIR
from calibration.validate import MEDIAN_TARGET, P90_TARGET, predict_multi_gpu
from calibration.whole_step import gpu_spec
from twin.costs.profile import profile_from_json

NAME = "s29idle"
GPU = "h200"
# the fitting PP2 records: the fit split of every committed 2xH200 PP2 folder but the pre-registered sets
FIT_FOLDERS = ("h200x2", "h200x2/i13pp_20261126_0322", "h200x2/s16idle_20261127_0654/round_a",
               "h200x2/s16idle_20261127_0654/round_b", "h200x2/s16idle16_20261127_0729/round_a",
               "h200x2/s16idle16_20261127_0729/round_b", "h200x2/s17alt_20261127_0948", "h200x2/s18probe_20261127_1252",
               "h200x2/s27epfwd_20261128_1204/qwen3-pp2", "h200x2/s28pp42_20261128_1459/qwen2-pp2")
ROW_KEYS = ("bench", "model", "schedule", "pp", "ep", "dp", "num_gpus", "num_microbatches", "micro_batch_seqs",
            "seq_len", "precision", "num_layers")

# the fresh set: real/campaigns/s29idle.sh's PP, in its order (a test holds them equal); slices and counts no PP record
# holds (dsv2-slice has no PP record; mixtral- and qwen2moe-mla-slice PP2 records hold 4 and 8 micro-batches)
FRESH_CASES = (("dsv2-slice", 4), ("mixtral-mla-slice", 4), ("qwen2moe-mla-slice", 4))
FRESH_MICROBATCHES = (6, 10)
SCHEDULES = prereg_pp.SCHEDULES
FRESH_SUBDIR = NAME   # calibration/measurements/h200x2/s29idle/<model>/
PREDICTIONS_FILE = prereg.PREREG_DIR / "s29idle_predictions.csv"
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s29idle_judgement.json"
# the committed pipeline sets the guards read: (label, predictions file, records subdir) of the pre-registered PP2
# sets, whose committed predictions are the twin in force's (B)
GUARD_SETS = (("s20ppnew", prereg_pp.PREDICTIONS_FILE, prereg_pp.RECORDS_SUBDIR),
              ("s28blind", prereg.PREREG_DIR / "s28blind_pp_predictions.csv", "s28blind/pp"))
STEP_NOT_WORSE = 0.001   # criterion C3 / guard G2: C's median |step error| at most B's + 0.1 point


def fit_rows(root: Path | str | None = None, inputs: dict | None = None, folders: tuple = FIT_FOLDERS) -> list[dict]:
    """Per fitting DualPipe PP2 row: the measured idle of each rank (median over its timed steps), the twin's
    (prereg.predict_ep: the committed h200x2 inputs, balanced routing; the term off), and the row's residual per
    sqrt(micro-batch): mean over the ranks of (measured - twin) / sqrt(n)."""
    root = rec.records_root() if root is None else root
    inputs = {} if inputs is None else inputs
    out = []
    for folder in folders:
        steps, ops = pipe.load(Path(root) / folder)
        sel = steps[(steps["bench"] == "pipeline_step") & (steps["pp"] == 2) & (steps["ep"] == 1)
                    & (steps["schedule"] == "dualpipe") & (steps["split"] == "fit")]
        for _, row in sel.iterrows():
            mine = pipe.ops_of(row, ops)
            idle = pipe.measured_idle_s(mine[mine["rep"].notna()])
            r = {k: row[k] for k in ROW_KEYS}
            pred = prereg.predict_ep([{**r, "gpu": GPU}], root, inputs=inputs).iloc[0]
            twin = [float(pred[f"predicted_idle_r{k}_s"]) for k in (0, 1)]
            n = int(row["num_microbatches"])
            out.append({"folder": folder, "model": row["model"], "num_microbatches": n, "step_s": float(row["time_s"]),
                        "measured_idle_s": [idle[0], idle[1]], "twin_idle_s": twin,
                        "residual_per_sqrt_mb_s": float(np.mean([idle[k] - twin[k] for k in (0, 1)]) / math.sqrt(n))})
    return out


def fit_coefficient(rows: list[dict]) -> float:
    """c: the median of the fitting rows' residual per sqrt(micro-batch)."""
    return float(np.median([r["residual_per_sqrt_mb_s"] for r in rows]))


def fresh_rows() -> list[dict]:
    return [{"gpu": GPU, "bench": "pipeline_step", "model": m, "schedule": s, "pp": 2, "ep": 1, "dp": 1, "num_gpus": 2,
             "num_microbatches": n, "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16", "num_layers": layers}
            for m, layers in FRESH_CASES for n in FRESH_MICROBATCHES for s in SCHEDULES]


def with_term(preds: pd.DataFrame) -> pd.DataFrame:
    """Predictions (predicted_s, predicted_idle_r<k>_s) with term M added where it applies (pipe.mirror_wait_s)."""
    out = preds.copy()
    w = np.array([pipe.mirror_wait_s(str(r["schedule"]), int(r["pp"]), int(r["num_microbatches"]),
                                     gpu_spec(str(r["gpu"])).name) for _, r in out.iterrows()], dtype=float)
    out["predicted_s"] = out["predicted_s"] + w
    for c in [c for c in out.columns if c.startswith("predicted_idle_r")]:
        out[c] = out[c] + w
    return out


def predict_both() -> pd.DataFrame:
    """The fresh rows priced by the twin in force (B: predict_ep, term off) and with term M (C), one frame:
    C's columns prefixed `cand_`."""
    base = prereg.predict_ep(fresh_rows())
    cand = with_term(base)
    pred_cols = ["predicted_s"] + [c for c in base.columns if c.startswith("predicted_idle_r")]
    return pd.concat([base, cand[pred_cols].add_prefix("cand_")], axis=1)


def write(allow_dirty: bool = False) -> pd.DataFrame:
    return prereg.write_registered(PREDICTIONS_FILE, predict_both, allow_dirty)


def _candidate_frame(preds: pd.DataFrame) -> pd.DataFrame:
    """The predictions file's C columns under B's names (so prereg_pp's comparison reads them)."""
    keep = [c for c in preds.columns if not c.startswith(("predicted_", "cand_"))]
    cand = preds[[c for c in preds.columns if c.startswith("cand_")]].rename(columns=lambda c: c[len("cand_"):])
    return pd.concat([preds[keep], cand], axis=1)


def _score(sec: dict) -> dict:
    """Steps (median / P90 / max |error|), idle (rank-rows within, DualPipe rows' median |pred - meas|), ranking."""
    errs = np.abs([r["rel_error"] for r in sec["rows"]]) if sec["rows"] else np.array([])
    idle = sec["idle"]
    dual_rows = [i for i in idle if i["schedule"] == "dualpipe"]
    dual = [abs(i["predicted_idle_s"] - i["measured_idle_s"]) for i in dual_rows]
    resolved = [p for p in sec["ranking"] if p["resolved"]]
    return {"num_rows": int(errs.size),
            "median_abs_rel_error": float(np.median(errs)) if errs.size else None,
            "p90_abs_rel_error": float(np.percentile(errs, 90)) if errs.size else None,
            "max_abs_rel_error": float(errs.max()) if errs.size else None,
            "num_rank_rows": len(idle), "num_within": int(sum(i["within"] for i in idle)),
            "dualpipe_rank_rows": len(dual_rows), "dualpipe_within": int(sum(i["within"] for i in dual_rows)),
            "dualpipe_median_abs_idle_miss_s": float(np.median(dual)) if dual else None,
            "num_resolved": len(resolved), "num_misordered": int(sum(not p["ordered"] for p in resolved))}


def _sections(root, preds_path_or_frame, subdir: str) -> tuple[dict, dict]:
    """(B's section, C's section) of prereg_pp.section on the records under <gpu>x2/<subdir>; C = B's committed
    predictions with term M added (guard sets) or the file's cand_ columns (the fresh set)."""
    preds = read_csv(preds_path_or_frame)
    if any(c.startswith("cand_") for c in preds.columns):
        base = preds[[c for c in preds.columns if not c.startswith("cand_")]]
        cand = _candidate_frame(preds)
    else:
        base, cand = preds, with_term(preds)
    return (prereg_pp.section(root, subdir=subdir, preds=base.reset_index(drop=True)),
            prereg_pp.section(root, subdir=subdir, preds=cand.reset_index(drop=True)))


VALIDATE_FOLDER = "h200x2"   # guard G3: the 2xH200 folder `twin validate` prices, and its idle folders (s16idle)


def _validate_view(root, profile) -> dict:
    """The h200x2 folder as `twin validate` prices it under the switches in force: each PP2 pipeline row's step error
    and each rank's idle within IDLE_TOL / the floor (on the row's median idle), and the s16idle judgement's GPUs."""
    _, pipelines = predict_multi_gpu(Path(root) / VALIDATE_FOLDER, GPU, 2, profile)
    rows, ranks = [], {}
    for p in pipelines:
        if p["pp"] != 2:
            continue
        rows.append(p["predicted_s"] / p["measured_s"] - 1.0)
        for k, meas in p["idle_measured_s"].items():
            pred = p["idle_simulated_s"][int(k) % len(p["idle_simulated_s"])]
            tol = max(IDLE_TOL * meas, IDLE_FLOOR_OF_STEP * p["measured_s"])
            ranks[f"{p['name']} r{k}"] = bool(abs(pred - meas) <= tol)
    idle = judgement.host_idle_judgement(Path(root) / VALIDATE_FOLDER, GPU, profile) or {"configs": []}
    gpus = {f"{c['config']} g{g}": bool(v["met"]) for c in idle["configs"] for g, v in c["gpus"].items()}
    return {"median_abs_rel_error": float(np.median(np.abs(rows))) if rows else None, "rank_rows": ranks,
            "idle_gpus": gpus}


def validate_guard(root: Path | str | None = None) -> dict:
    """G3: the h200x2 folder's pipelines and idle judgement with term M off (today) and on: rank-rows and idle GPUs
    within today that fall out with M, and the PP2 steps' median |error| both ways."""
    root = rec.records_root() if root is None else root
    profile = profile_from_json(json.loads((Path(PROFILES_DIR) / f"{GPU}.json").read_text()))
    was = pipe.ADOPT_DUALPIPE_MIRROR_WAIT
    try:
        pipe.ADOPT_DUALPIPE_MIRROR_WAIT = False
        off = _validate_view(root, profile)
        pipe.ADOPT_DUALPIPE_MIRROR_WAIT = True
        on = _validate_view(root, profile)
    finally:
        pipe.ADOPT_DUALPIPE_MIRROR_WAIT = was
    lost = sorted(k for k, v in {**off["rank_rows"], **off["idle_gpus"]}.items()
                  if v and not {**on["rank_rows"], **on["idle_gpus"]}[k])
    return {"B": {"median_abs_rel_error": off["median_abs_rel_error"],
                  "rank_rows_within": sum(off["rank_rows"].values()), "rank_rows": len(off["rank_rows"]),
                  "idle_gpus_met": sum(off["idle_gpus"].values()), "idle_gpus": len(off["idle_gpus"])},
            "C": {"median_abs_rel_error": on["median_abs_rel_error"],
                  "rank_rows_within": sum(on["rank_rows"].values()), "rank_rows": len(on["rank_rows"]),
                  "idle_gpus_met": sum(on["idle_gpus"].values()), "idle_gpus": len(on["idle_gpus"])},
            "lost": lost}


def fresh_part(root: Path | str | None = None) -> dict | None:
    """B's and C's scores on the fresh set (each row, rank-row and schedule pair); None without predictions."""
    root = rec.records_root() if root is None else root
    if not csv_exists(PREDICTIONS_FILE):
        return None
    fb, fc = _sections(root, PREDICTIONS_FILE, FRESH_SUBDIR)
    return {"B": _score(fb), "C": _score(fc), "rows_B": fb["rows"], "rows_C": fc["rows"],
            "idle_B": fb["idle"], "idle_C": fc["idle"], "ranking_B": fb["ranking"], "ranking_C": fc["ranking"]}


def guards_part(root: Path | str | None = None) -> dict:
    """G1 / G2 on the pre-registered PP2 sets and G3 on `twin validate`'s h200x2 folder (about two minutes of CPU)."""
    root = rec.records_root() if root is None else root
    guards = []
    for label, path, subdir in GUARD_SETS:
        gb, gc = _sections(root, path, subdir)
        lost = [{k: c[k] for k in ("gpu", "model", "schedule", "num_microbatches", "rank", "measured_idle_s")}
                | {"B_s": b["predicted_idle_s"], "C_s": c["predicted_idle_s"]}
                for b, c in zip(gb["idle"], gc["idle"]) if b["within"] and not c["within"]]
        guards.append({"set": label, "B": _score(gb), "C": _score(gc), "lost_rank_rows": lost})
    return {"guards": guards, "validate_guard": validate_guard(root)}


def criteria(fresh: dict | None, guards: dict) -> dict:
    """The rule's C1-C4 (fresh set) and G1-G3 (guards), each True where met."""
    have = bool(fresh) and fresh["C"]["num_rows"] > 0
    b, c = (fresh["B"], fresh["C"]) if have else ({}, {})
    gs, vg = guards["guards"], guards["validate_guard"]
    return {"C1_every_dualpipe_rank_row_within": have and c["dualpipe_rank_rows"] > 0
            and c["dualpipe_within"] == c["dualpipe_rank_rows"],
            "C2_dualpipe_closer": have and b["dualpipe_median_abs_idle_miss_s"] is not None
            and c["dualpipe_median_abs_idle_miss_s"] < b["dualpipe_median_abs_idle_miss_s"],
            "C3_steps": have and c["median_abs_rel_error"] <= MEDIAN_TARGET and c["p90_abs_rel_error"] <= P90_TARGET
            and c["median_abs_rel_error"] <= b["median_abs_rel_error"] + STEP_NOT_WORSE,
            "C4_ranking": have and c["num_misordered"] <= b["num_misordered"],
            "G1_no_rank_row_lost": all(not g["lost_rank_rows"] for g in gs),
            "G2_steps_not_worse": all(g["C"]["median_abs_rel_error"] is None
                                      or g["C"]["median_abs_rel_error"] <= g["B"]["median_abs_rel_error"] + STEP_NOT_WORSE
                                      for g in gs),
            "G3_validate_h200x2": not vg["lost"] and vg["C"]["median_abs_rel_error"]
            <= vg["B"]["median_abs_rel_error"] + STEP_NOT_WORSE}


def _assemble(fresh: dict | None, guards: dict) -> dict:
    crit = criteria(fresh, guards)
    return {"registration": NAME, "rule": "docs/notes/s29idle_rule.md",
            "coefficient_s_per_sqrt_mb": pipe.MIRROR_WAIT_PER_SQRT_MB_S.get(gpu_spec(GPU).name),
            "targets": {"median": MEDIAN_TARGET, "p90": P90_TARGET, "idle_tol": IDLE_TOL,
                        "idle_floor_of_step": IDLE_FLOOR_OF_STEP},
            "issue13_idle_target_met": {w: bool(fresh and fresh[w]["num_rank_rows"])
                                        and fresh[w]["num_within"] == fresh[w]["num_rank_rows"] for w in ("B", "C")},
            "fresh": fresh, **guards, "criteria": crit, "adopt": all(crit.values())}


def judge(root: Path | str | None = None) -> dict:
    """The rule's verdict (docs/notes/s29idle_rule.md): C1-C4 on the fresh set, G1-G3 on the guards, all live."""
    root = rec.records_root() if root is None else root
    return _assemble(fresh_part(root), guards_part(root))


def read_judgement(path: Path = JUDGEMENT_FILE) -> dict | None:
    return read_json(path) if json_exists(path) else None


def section(root: Path | str | None = None) -> dict:
    """`twin validate`'s part s29idle: the fresh set live on the records under `root`, the guards (two minutes of
    CPU: not recomputed here) as the committed judgement (`record`) computed them."""
    root = rec.records_root() if root is None else root
    fresh = fresh_part(root)
    rec_ = read_judgement()
    if rec_ is None:
        return {"registration": NAME, "fresh": fresh, "guards": [], "criteria": {}, "adopt": False}
    return {**_assemble(fresh, {"guards": rec_["guards"], "validate_guard": rec_["validate_guard"]}),
            "guards_from": f"{JUDGEMENT_FILE.name} (code {rec_.get('code_commit')})", "guards_note": judged_under.note(rec_)}


def format_section(sec: dict) -> str:
    head = "s29idle: DualPipe's mirrored-rank wait (term M, docs/notes/s29idle_rule.md) on a fresh PP2 set"
    if not sec.get("fresh") or not sec["fresh"]["B"]["num_rows"]:
        return head + ": no records yet"
    lines = [head + ":"]
    for who, what in (("B", "the twin in force"), ("C", "with M")):
        s = sec["fresh"][who]
        lines.append(f"  s29idle {who} ({what}): steps {s['num_rows']} rows, median |err| {s['median_abs_rel_error']:.1%}, P90 "
                     f"{s['p90_abs_rel_error']:.1%}; idle {s['num_within']} of {s['num_rank_rows']} rank-rows within "
                     f"(DualPipe {s['dualpipe_within']} of {s['dualpipe_rank_rows']}, median |miss| "
                     f"{s['dualpipe_median_abs_idle_miss_s'] * 1e3:.2f} ms); {s['num_misordered']} of "
                     f"{s['num_resolved']} resolved pairs misordered")
    for g in sec.get("guards", []):
        lines.append(f"  s29idle guard {g['set']}: idle within B {g['B']['num_within']} / C {g['C']['num_within']} of "
                     f"{g['B']['num_rank_rows']}, lost {len(g['lost_rank_rows'])}; steps median |err| "
                     f"{g['B']['median_abs_rel_error']:.2%} / {g['C']['median_abs_rel_error']:.2%}")
    if sec.get("guards_note"):   # s30stale: the guards are the committed judgement's; a switch moved since
        lines.append(f"  s29idle guards {sec['guards_note']}")
    vg = sec.get("validate_guard")
    if vg:
        lines.append(f"  s29idle guard validate h200x2: PP2 rank-rows within {vg['B']['rank_rows_within']} / "
                     f"{vg['C']['rank_rows_within']} of {vg['B']['rank_rows']}, idle GPUs {vg['B']['idle_gpus_met']} / "
                     f"{vg['C']['idle_gpus_met']} of {vg['B']['idle_gpus']}, lost {len(vg['lost'])}; steps median |err| "
                     f"{vg['B']['median_abs_rel_error']:.2%} / {vg['C']['median_abs_rel_error']:.2%}")
    if sec.get("criteria"):
        lines.append("  s29idle criteria: " + ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in sec["criteria"].items()))
        lines.append(f"  s29idle verdict: {'adopt' if sec['adopt'] else 'not adopted'}")
    return "\n".join(lines)


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.s29idle", __doc__)
    ap.add_argument("action", nargs="?", default="judge", choices=["judge", "fit", "write", "record"])
    ap.add_argument("--allow-dirty", action="store_true", help="write with uncommitted predicting code (tests only)")
    args = ap.parse_args(argv)
    if args.action == "fit":
        rows = fit_rows()
        for r in rows:
            print(f"  {r['folder']} {r['model']} n{r['num_microbatches']}: idle measured "
                  f"{r['measured_idle_s'][0] * 1e3:.2f} / {r['measured_idle_s'][1] * 1e3:.2f} ms, twin "
                  f"{r['twin_idle_s'][0] * 1e3:.2f} / {r['twin_idle_s'][1] * 1e3:.2f}; residual / sqrt(n) "
                  f"{r['residual_per_sqrt_mb_s'] * 1e3:.3f} ms")
        print(f"c = {fit_coefficient(rows) * 1e3:.4f} ms per sqrt(micro-batch) over {len(rows)} fitting rows")
        return 0
    if args.action == "write":
        df = write(args.allow_dirty)
        print(f"{len(df)} rows, code {df['code_commit'].iloc[0][:7]}")
        return 0
    if args.action == "record" and prereg.refuses_uncommitted_record():
        return 2
    sec = judge(rec.records_root())
    print(format_section(sec))
    if args.action == "record":
        fit = fit_rows()
        prereg.write_code_record(JUDGEMENT_FILE, "python -m calibration.s29idle record",
                                 {**sec, "fit_rows": fit, "fit_coefficient_s_per_sqrt_mb": fit_coefficient(fit)})
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""s29dec2 (issue 13, round 2 of s29dec): decode's host cost per kernel actually launched.

s29dec (docs/notes/s29dec.md) priced each probed decode step at ratio x probe a twin op and missed issue 13's decode
target on both fresh leases (A 11.7% / 18.9%, B 8.8% / 12.9%); its residual is per model and the same on both leases,
and llama's step launches 148-153 kernels against the twin's 128 ops (20 cuBLASLt split-K reduce kernels). The
candidate (ADOPT_KERNEL_HOST_COUNT, default False; docs/notes/s29dec2_rule.md) prices the host side of a decode step at
the kernels the step actually launches on that GPU at its shape: the run's own profiled step of the same record
(serve_kernels.csv `kernels`, a fitting count, never a time) over the twin's op count scales the host time per op:

  in force   record = median_i grid(ratio x probe_i)                        (s29dec's judged twin, unchanged)
  candidate  record = median_i grid(ratio x probe_i x kernels / twin_ops)   (decode; prefill as in force)

grid, ratio and probe_i as calibration.s29dec; twin_ops = step_host.twin_decode_ops at the record's mid cache length,
fixed in the predictions file. The guard recomputes s29dec's two leases under the candidate with s29dec's predictions.

    python -m calibration.s29dec2 write                    # the predictions JSON (refuses a dirty tree)
    python -m calibration.s29dec2 [--json calibration/s29dec2_judgement.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import prereg
from calibration import records as rec
from calibration import s29dec
from calibration import step_host
from calibration.records_io import csv_exists, read_csv
from calibration.validate import MEDIAN_TARGET, P90_TARGET
from calibration.whole_step import gpu_spec

NAME = "s29dec2"
# The candidate's switch (docs/notes/s29dec2_rule.md): True makes the section's judged line the candidate's.
ADOPT_KERNEL_HOST_COUNT = False
PREDICTIONS_FILE = prereg.PREREG_DIR / "s29dec2_predictions.json"
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s29dec2_judgement.json"
GPUS = prereg.GPUS
# real/campaigns/s29dec2.sh's CASES, in its order (a test holds them equal): new prompts (KV lengths) and decode batches
# of s29dec's four slices, and one slice s29dec did not serve (mixtral-slice: GQA + 8 wide experts top-2, 1 layer).
CASES = (("llama3-8b-slice", 2048, 64, (2,), (4, 16, 32)),
         ("dsv2-slice", 2048, 64, (4,), (4, 16, 32)),
         ("phi35moe-slice", 1024, 64, (4,), (4, 16, 32)),
         ("olmoe-slice", 1024, 64, (4,), (4, 16, 32)),
         ("mixtral-slice", 1024, 64, (2,), (4, 16, 32)))
REG = prereg.Registration(NAME, PREDICTIONS_FILE, NAME, CASES, section="serve")
LEASES = ("s29dec2",)
GUARD_LEASES = s29dec.LEASES
KEY = prereg.SERVE_KEY


def case_rows() -> list[dict]:
    return prereg.case_rows(REG)


def predict(rows: list[dict]) -> dict:
    """s29dec's predictions of the rows (plain, the judged grid, the synchronised grid) plus each decode row's twin op
    count at its mid cache length (the candidate's denominator)."""
    out = s29dec.predict(rows)
    for r in out["rows"]:
        mid = {"model": r["model"], "batch": r["batch"], "cache_len": int(r["prompt_len"]) + int(r["gen_len"]) // 2}
        r["twin_ops"] = (int(step_host.twin_decode_ops(mid, gpu_spec(r["gpu"]), s29dec._profile(r["gpu"])))
                         if r["bench"] == "decode" else 0)
    out.update(registration=NAME, rule="docs/notes/s29dec2_rule.md",
               candidate_formula="decode record = median over probed steps i of grid(ratio x probe_i x kernels / "
                                 "twin_ops); kernels = the same record's profiled step (serve_kernels.csv)")
    return out


def write(path: Path = PREDICTIONS_FILE, allow_dirty: bool = False) -> dict:
    return s29dec.write(path, allow_dirty, predict_cases=lambda: predict(case_rows()))


def load_predictions(path: Path = PREDICTIONS_FILE) -> dict:
    return s29dec.load_predictions(path)


def kernel_factor(kernels: pd.DataFrame, r, twin_ops: int) -> float:
    """The record's kernels launched (its profiled step, the same lease and shape) over the twin's ops; NaN where the
    profiled count is missing."""
    k = kernels[(kernels["bench"] == "decode") & (kernels["model"] == r["model"])
                & (kernels["batch"].astype(int) == int(r["batch"]))
                & (kernels["prompt_len"].astype(int) == int(r["prompt_len"]))]["kernels"].astype(float)
    return float(k.iloc[0] / twin_ops) if len(k) and twin_ops else float("nan")


def lease_rows(folder: Path, gpu: str, pred: dict) -> tuple[pd.DataFrame, dict]:
    """s29dec.lease_rows (the twin in force: `rel_error`) plus, per decode record, the kernel factor and the
    candidate's prediction (`cand_rel_error`); prefill's candidate is the twin in force."""
    rows, info = s29dec.lease_rows(folder, gpu, pred)
    if rows.empty:
        return rows, info
    steps = read_csv(folder / "serve_steps.csv")
    kernels = read_csv(folder / "serve_kernels.csv") if csv_exists(folder / "serve_kernels.csv") else pd.DataFrame(
        columns=["bench", "model", "batch", "prompt_len", "kernels"])
    grid = s29dec.grid_frame(pred)
    fac, cand = [], []
    for _, r in rows.iterrows():
        if r["bench"] != "decode":
            fac.append(1.0)
            cand.append(float(r["predicted_s"]))
            continue
        f = kernel_factor(kernels, r, int(r["twin_ops"]))
        fac.append(f)
        cand.append(step_host.record_prediction(s29dec._case_grid(grid, gpu, r), steps, r, info["probe_ratio"] * f)
                    if np.isfinite(f) else float("nan"))
    rows = rows.assign(kernel_factor=fac, cand_predicted_s=cand)
    rows["cand_rel_error"] = rows["cand_predicted_s"] / rows["measured_s"] - 1.0
    return rows, info


def _group(errs) -> dict:
    errs = np.asarray(errs, dtype=float)
    errs = errs[np.isfinite(errs)]
    if not errs.size:
        return {"num_cases": 0, "meets_target": False}
    a = np.abs(errs)
    median, p90 = float(np.median(a)), float(np.percentile(a, 90))
    return {"num_cases": int(a.size), "median_abs_rel_error": median, "p90_abs_rel_error": p90,
            "max_abs_rel_error": float(a.max()), "signed_mean_rel_error": float(errs.mean()),
            "meets_target": bool(median <= MEDIAN_TARGET and p90 <= P90_TARGET)}


def _judge_leases(root, pred: dict, leases) -> dict:
    out = {}
    for lease in leases:
        for gpu in GPUS:
            rows, info = lease_rows(Path(root) / gpu / lease, gpu, pred)
            if rows.empty:
                continue
            groups = {b: {"in_force": _group(sub["rel_error"]), "candidate": _group(sub["cand_rel_error"])}
                      for b, sub in rows.groupby("bench")}
            out[f"{gpu} {lease}"] = {**info, "by_kind": groups, "rows": rows.to_dict("records")}
    return out


def verdict(fresh: dict, guard: dict) -> dict:
    """The rule's verdict: adopt iff on the fresh lease the candidate's decode meets issue 13 (median <= 5%, P90 <=
    10%, at least 12 decode records) and on each of s29dec's two leases the candidate's decode median is no worse than
    the twin in force's."""
    d = [v["by_kind"].get("decode", {}) for v in fresh.values()]
    met = bool(d) and all(g.get("candidate", {}).get("meets_target") and g["candidate"]["num_cases"] >= 12 for g in d)
    guards = {k: bool(v["by_kind"]["decode"]["candidate"]["median_abs_rel_error"]
                      <= v["by_kind"]["decode"]["in_force"]["median_abs_rel_error"])
              for k, v in guard.items() if "decode" in v["by_kind"]}
    held = bool(guards) and all(guards.values())
    return {"fresh_decode_met": met, "guards_held": guards, "adopt": bool(met and held)}


def judge(root: Path | str | None = None, pred: dict | None = None, guard_pred: dict | None = None) -> dict:
    root = rec.records_root() if root is None else root
    pred = load_predictions() if pred is None else pred
    guard_pred = s29dec.load_predictions() if guard_pred is None else guard_pred
    fresh = _judge_leases(root, pred, LEASES)
    guard = _judge_leases(root, guard_pred, GUARD_LEASES)
    return {"registration": NAME, "rule": "docs/notes/s29dec2_rule.md", "predictions_commit": pred.get("code_commit"),
            "targets": {"median": MEDIAN_TARGET, "p90": P90_TARGET}, "adopted": ADOPT_KERNEL_HOST_COUNT,
            "leases": fresh, "guard_leases": guard, "verdict": verdict(fresh, guard)}


def section(root: Path | str | None = None) -> dict:
    """`twin validate`'s part s29dec2_kernels: the judgement live on the records under `root`."""
    return judge(root)


def format_table(sec: dict) -> str:
    head = ("Decode host cost per kernel launched (s29dec2: the profiled step's kernels / the twin's ops scale ratio x "
            f"probe; candidate {'ADOPTED' if sec['adopted'] else 'not adopted'})")
    lines = [head + ":"]
    for part, leases in (("fresh", sec["leases"]), ("guard", sec["guard_leases"])):
        if not leases:
            lines.append(f"  {part}: no records yet")
        for lease, v in leases.items():
            for bench, g in v["by_kind"].items():
                a, c = g["in_force"], g["candidate"]
                if not c.get("num_cases"):
                    continue
                lines.append(f"  kernels-host {part} {lease} {bench}: {a['num_cases']} rows, in force "
                             f"{a['median_abs_rel_error']:.1%} / {a['p90_abs_rel_error']:.1%}, candidate "
                             f"{c['median_abs_rel_error']:.1%} / {c['p90_abs_rel_error']:.1%} (target "
                             f"{MEDIAN_TARGET:.0%} / {P90_TARGET:.0%}: {'met' if c['meets_target'] else 'MISSED'})")
    v = sec["verdict"]
    lines.append(f"  kernels-host verdict: fresh decode met {v['fresh_decode_met']}, guards {v['guards_held']}, adopt {v['adopt']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return s29dec.cli("s29dec2", __doc__, write, judge, format_table, argv)


if __name__ == "__main__":
    sys.exit(main())

"""s29dec (issue 13): decode and prefill on fresh leases, predicted blind with each lease's host probed in the same run.

s28blind (docs/notes/s28blind.md) met every kind but decode (7.9% / 12.0%): its decode rows are host-paced, the twin
prices them at the profile's host time per kernel (h200 `infer` 18.84 us), and the lease's host speed moved the same
rows -19..+34% between two leases. The adopted ADOPT_STEP_HOST_INPUT path (calibration.whole_step, step_host,
docs/notes/s21host2_rule.md) takes the host time per kernel from probes taken in the same run, but s28blind's harness
took none. Here the probed harness (real/bench/host_steps.py, section host_steps: the fitting layer repetitions each
after its own 3 ms launch probe, then every record's steps alternating control / probed) runs fresh shapes of
s28blind's three slices and one new slice (olmoe-slice), on two leases, each judged on its own
(docs/notes/s29dec_rule.md).

The prediction of a record, fixed before the run but for the probe values (the committed twin's adopted path):
  ratio      step_host.fit_step_ratio: the median over the run's fitting repetitions (host_dispatch `infer`, split
             fit, v3-slice-1l MoE / MLA layers) of rep host_s / the row's net kernels / the rep's own probe
  h_i        ratio x probe_i, probe_i = the 3 ms launch probe's mean host seconds per launch right before probed step i
             (serve_steps.csv host_probe_launch_s, block probed)
  step i     the committed grid at h_i (the record's op lists timed with every dispatched op at host time h per
             kernel, back-to-back window, whole_step.predict_model_row's path; linear between the grid's points,
             5-100 us every 0.5 us, clamped to its ends)
  record     the median over its probed steps of the step predictions, against model.csv time_s (the probed steps'
             median event seconds)
The GPU side of each op (GEMMs, attention, memory-bound kernels, the Eager overlap of host and GPU) is the committed
profile's, unchanged; only the host time per kernel comes from the run. Reported beside, never judged: the plain
twin (the profile's 18.84 us a kernel) and the synchronised window (whole_step.ADOPT_SYNCED_STEPS's, off).

    python -m calibration.s29dec write                    # the predictions JSON (refuses a dirty twin/ or calibration/)
    python -m calibration.s29dec [--json calibration/s29dec_judgement.json]   # the judgement of every lease filed
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import host_input
from calibration import prereg
from calibration import records as rec
from calibration import step_host
from calibration.fit import git_commit
from calibration.records_io import csv_exists, read_csv
from calibration.validate import MEDIAN_TARGET, P90_TARGET, load_fitted_profile
from calibration.whole_step import gpu_spec, predict_model_row
from twin.core import atomic

NAME = "s29dec"
PREDICTIONS_FILE = prereg.PREREG_DIR / "s29dec_predictions.json"
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s29dec_judgement.json"
GPUS = prereg.GPUS   # both predicted (a one-GPU lease may come as an H100); the campaign asks for one H200
# real/campaigns/s29dec.sh's CASES, in its order (a test holds them equal): (model, prompt_len, gen_len, prefill
# batches, decode batches). s28blind served its slices at prompt 1536, 32 generated, prefill b2,8, decode b4,16,64;
# no record holds these prompts, decode batches or olmoe-slice.
CASES = (("llama3-8b-slice", 1024, 64, (4,), (2, 8, 24, 48)),
         ("dsv2-slice", 1024, 64, (2, 8), (2, 8, 24, 48)),
         ("phi35moe-slice", 2048, 64, (2,), (2, 8, 24, 48)),
         ("olmoe-slice", 2048, 64, (2, 8), (2, 8, 24, 48)))
REG = prereg.Registration(NAME, PREDICTIONS_FILE, NAME, CASES, section="serve")
# the leases, each filed in its own records subfolder of calibration/measurements/<gpu>/ (no fit, no validation
# folder reads a subfolder) and judged on its own
LEASES = ("s29dec_a", "s29dec_b")
BENCHES = ("prefill", "decode")
GRID_S = step_host.STEP_HOST_GRID_S
KEY = prereg.SERVE_KEY


def case_rows() -> list[dict]:
    return prereg.case_rows(REG)


def _ns(seconds) -> list[float]:
    """Seconds rounded to the nanosecond (the file's size; 1e-6 of a millisecond step)."""
    return [round(float(t), 9) for t in seconds]


def predict(rows: list[dict], root: Path | str | None = None) -> dict:
    """Every row's plain prediction (the profile's host time per kernel) and its two grids over GRID_S (back-to-back,
    judged; synchronised, reported), under its GPU's committed profile."""
    root = rec.records_root() if root is None else root
    profiles: dict = {}
    out = []
    for r in rows:
        gpu = r["gpu"]
        if gpu not in profiles:
            profiles[gpu] = load_fitted_profile(gpu, rec.load_records(gpu, root))[0]
        prof, spec = profiles[gpu], gpu_spec(gpu)
        out.append({**r, "profile_infer_host_s_per_kernel": float(prof.eager["host_s"]["infer"]),
                    "plain_predicted_s": float(predict_model_row(r, spec, prof)),
                    "grid_predicted_s": _ns(host_input.predict_at_host_s(r, spec, prof, GRID_S, False)),
                    "synced_grid_predicted_s": _ns(host_input.predict_at_host_s(r, spec, prof, GRID_S, True))})
    return {"registration": NAME, "rule": "docs/notes/s29dec_rule.md",
            "formula": "record = median over probed steps i of grid(ratio x probe_i); ratio = step_host.fit_step_ratio "
                       "of the run's fitting repetitions; grid linear in host_s_per_kernel, clamped to its ends",
            "host_grid_s_per_kernel": [float(h) for h in GRID_S], "rows": out}


def write(path: Path = PREDICTIONS_FILE, allow_dirty: bool = False, predict_cases=None) -> dict:
    """Write the predictions JSON (`predict_cases()`, default predict(case_rows())), stamped with the predicting code's
    commit and the time; refuses to overwrite one and to predict from uncommitted code (prereg.write_registered's
    rules). s29dec2 writes its own through this."""
    if Path(path).exists():
        raise SystemExit(f"{path} exists: pre-registered predictions are never rewritten")
    dirty = prereg.dirty_paths(Path(__file__).resolve().parents[1])
    if dirty and not allow_dirty:
        raise SystemExit("uncommitted changes in the predicting code; commit first:\n" + "\n".join(dirty))
    out = predict(case_rows()) if predict_cases is None else predict_cases()
    out["code_commit"] = git_commit()
    out["predicted_at_utc"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, json.dumps(out, separators=(",", ":")) + "\n")
    return out


def load_predictions(path: Path = PREDICTIONS_FILE) -> dict:
    return json.loads(Path(path).read_text())


def grid_frame(pred: dict, column: str = "grid_predicted_s") -> pd.DataFrame:
    """One row per (case, grid host time): the case's key, host_s_per_kernel, predicted_s (step_host.grid_at's input)."""
    hosts = pred["host_grid_s_per_kernel"]
    return pd.DataFrame([{**{k: r[k] for k in KEY}, "host_s_per_kernel": h, "predicted_s": t}
                         for r in pred["rows"] for h, t in zip(hosts, r[column])])


def _case_grid(grid: pd.DataFrame, gpu: str, r) -> pd.DataFrame:
    """The grid rows of record `r` on `gpu` (s32ci: numpy masks, one take; the same rows, order and index)."""
    eq = step_host.equal_mask
    return grid[eq(grid["gpu"], gpu) & eq(grid["bench"], r["bench"]) & eq(grid["model"], r["model"])
                & eq(grid["batch"], int(r["batch"])) & eq(grid["prompt_len"], int(r["prompt_len"]))
                & eq(grid["gen_len"], int(r["gen_len"]))]


def _measured_host_per_op(steps: pd.DataFrame, r, twin_ops: int) -> float:
    """The record's probed steps' median host seconds of the call over the twin's op count (a diagnostic: the host time
    per op the run spent issuing the step, beside ratio x probe)."""
    s = step_host.record_steps(steps, r)["host_s"].astype(float)
    return float(s.median() / twin_ops) if len(s) and twin_ops else float("nan")


def lease_rows(folder: Path, gpu: str, pred: dict) -> tuple[pd.DataFrame, dict]:
    """The lease's prefill / decode records with the judged prediction (`predicted_s`, `rel_error`), the plain and
    synchronised twins' (reported), the record's host time per kernel (ratio x its probed steps' median probe) and the
    measured host seconds per twin op; the lease's ratio and median probe. Empty without the three files."""
    if not all(csv_exists(folder / f) for f in ("model.csv", "host_dispatch.csv", "serve_steps.csv")):
        return pd.DataFrame(), {}
    model, hd, steps = (read_csv(folder / f) for f in ("model.csv", "host_dispatch.csv", "serve_steps.csv"))
    ratio = step_host.fit_step_ratio(hd, steps, gpu)
    grids = {c: grid_frame(pred, c) for c in ("grid_predicted_s", "synced_grid_predicted_s")}
    plain = {tuple(r[k] for k in KEY): (r["plain_predicted_s"], r["profile_infer_host_s_per_kernel"])
             for r in pred["rows"]}
    rows = model[model["bench"].isin(BENCHES)].assign(gpu=gpu).reset_index(drop=True)
    out = []
    for _, r in rows.iterrows():
        key = (gpu, r["bench"], r["model"], int(r["batch"]), int(r["prompt_len"]), int(r["gen_len"]), r["precision"])
        if key not in plain:
            continue
        probes = step_host.record_steps(steps, r)["host_probe_launch_s"].astype(float)
        measured = float(r["time_s"])
        pred_s = step_host.record_prediction(_case_grid(grids["grid_predicted_s"], gpu, r), steps, r, ratio)
        synced_s = step_host.record_prediction(_case_grid(grids["synced_grid_predicted_s"], gpu, r), steps, r, ratio)
        mid = {"model": r["model"], "batch": r["batch"], "cache_len": int(r["prompt_len"]) + int(r["gen_len"]) // 2}
        ops = step_host.twin_decode_ops(mid, gpu_spec(gpu), _profile(gpu)) if r["bench"] == "decode" else 0
        out.append({**dict(zip(KEY, key)), "measured_s": measured, "predicted_s": pred_s,
                    "rel_error": pred_s / measured - 1.0,
                    "plain_predicted_s": plain[key][0], "plain_rel_error": plain[key][0] / measured - 1.0,
                    "synced_predicted_s": synced_s, "synced_rel_error": synced_s / measured - 1.0,
                    "probe_launch_median_s": float(probes[probes > 0].median()) if (probes > 0).any() else float("nan"),
                    "step_infer_host_s_per_kernel": step_host.step_host_s_of_record(steps, r, ratio),
                    "profile_infer_host_s_per_kernel": plain[key][1],
                    "twin_ops": ops, "measured_host_s_per_op": _measured_host_per_op(steps, r, ops),
                    "probe_effect": step_host.probe_effect(steps, r)})
    probed = steps[(steps["block"] == "probed") & steps["bench"].isin(BENCHES)]["host_probe_launch_s"].astype(float)
    info = {"probe_ratio": ratio, "probe_launch_median_s": float(probed.median()) if len(probed) else float("nan"),
            "infer_host_s_per_kernel": ratio * float(probed.median()) if len(probed) else float("nan"),
            "gpu_name": str(model["gpu_name"].iloc[0]) if "gpu_name" in model.columns and len(model) else ""}
    return pd.DataFrame(out), info


_PROFILES: dict = {}


def _profile(gpu: str):
    """The GPU's committed profile (the predictions' own; computed once a process)."""
    if gpu not in _PROFILES:
        _PROFILES[gpu] = load_fitted_profile(gpu, rec.load_records(gpu, rec.MEASUREMENTS_DIR))[0]
    return _PROFILES[gpu]


def _group(errs) -> dict:
    errs = np.asarray(errs, dtype=float)
    a = np.abs(errs)
    median, p90 = float(np.median(a)), float(np.percentile(a, 90))
    return {"num_cases": int(a.size), "median_abs_rel_error": median, "p90_abs_rel_error": p90,
            "max_abs_rel_error": float(a.max()), "signed_mean_rel_error": float(errs.mean()),
            "meets_target": bool(median <= MEDIAN_TARGET and p90 <= P90_TARGET)}


def judge(root: Path | str | None = None, pred: dict | None = None) -> dict:
    """The rule's verdicts per lease filed under `root` (each `<gpu>/<lease>/`): per kind the count, median, P90 and max
    |error| of the judged twin against issue 13's targets (the verdict), the plain and synchronised twins' beside it,
    the lease's probe ratio and host time per kernel; `meets_target`: every lease's prefill and decode met."""
    root = rec.records_root() if root is None else root
    pred = load_predictions() if pred is None else pred
    leases = {}
    for lease in LEASES:
        for gpu in GPUS:
            rows, info = lease_rows(Path(root) / gpu / lease, gpu, pred)
            if rows.empty:
                continue
            groups = {}
            for bench, sub in rows.groupby("bench"):
                groups[bench] = {**_group(sub["rel_error"]), "plain": _group(sub["plain_rel_error"]),
                                 "synced": _group(sub["synced_rel_error"])}
            leases[f"{gpu} {lease}"] = {**info, "by_kind": groups, "rows": rows.to_dict("records"),
                                        "meets_target": all(groups.get(b, {}).get("meets_target", False)
                                                            for b in BENCHES)}
    return {"registration": NAME, "rule": "docs/notes/s29dec_rule.md", "predictions_commit": pred.get("code_commit"),
            "targets": {"median": MEDIAN_TARGET, "p90": P90_TARGET}, "leases": leases,
            "num_leases": len(leases), "meets_target": bool(leases) and all(v["meets_target"] for v in leases.values())}


def section(root: Path | str | None = None) -> dict:
    """`twin validate`'s part prereg_s29dec: the judgement live on the records under `root`."""
    return judge(root)


def format_table(sec: dict) -> str:
    head = "Pre-registered probed decode / prefill on fresh leases (s29dec: 4 slices, each lease's host probed)"
    if not sec["leases"]:
        return head + ": no records yet"
    lines = [head + ":"]
    for lease, v in sec["leases"].items():
        lines.append(f"  {lease} ({v['gpu_name']}): probe ratio {v['probe_ratio']:.2f} x median probe "
                     f"{v['probe_launch_median_s'] * 1e6:.1f} us = {v['infer_host_s_per_kernel'] * 1e6:.1f} us a kernel "
                     f"(profile {v['rows'][0]['profile_infer_host_s_per_kernel'] * 1e6:.2f})")
        for bench, g in v["by_kind"].items():
            lines.append(f"  prereg-probed {lease} {bench}: {g['num_cases']} rows, median |err| "
                         f"{g['median_abs_rel_error']:.1%}, P90 {g['p90_abs_rel_error']:.1%}, max "
                         f"{g['max_abs_rel_error']:.1%}, signed mean {g['signed_mean_rel_error']:+.1%} (target "
                         f"{MEDIAN_TARGET:.0%} / {P90_TARGET:.0%}: {'met' if g['meets_target'] else 'MISSED'}); plain "
                         f"{g['plain']['median_abs_rel_error']:.1%} / {g['plain']['p90_abs_rel_error']:.1%}, synced "
                         f"{g['synced']['median_abs_rel_error']:.1%} / {g['synced']['p90_abs_rel_error']:.1%} (reported)")
        for r in v["rows"]:
            lines.append(f"    {r['bench']} {r['model']} b{r['batch']} p{r['prompt_len']}: measured "
                         f"{r['measured_s'] * 1e3:.2f} ms, predicted {r['predicted_s'] * 1e3:.2f} ms ({r['rel_error']:+.1%}); "
                         f"host {r['step_infer_host_s_per_kernel'] * 1e6:.1f} us/kernel")
    return "\n".join(lines)


def cli(name: str, doc: str | None, write_fn, judge_fn, format_fn, argv: list[str] | None = None) -> int:
    """`python -m calibration.<name> [judge|write] [--json F] [--allow-dirty]`, shared by s29dec and s29dec2."""
    ap = entry.parser(f"calibration.{name}", doc)
    ap.add_argument("action", nargs="?", default="judge", choices=["judge", "write"])
    ap.add_argument("--json", type=Path, help=f"write the judgement here (calibration/{name}_judgement.json)")
    ap.add_argument("--allow-dirty", action="store_true", help="write with uncommitted predicting code (tests only)")
    args = ap.parse_args(argv)
    if args.action == "write":
        out = write_fn(allow_dirty=args.allow_dirty)
        print(f"{len(out['rows'])} rows, code {out['code_commit'][:8]}, {out['predicted_at_utc']}")
        return 0
    sec = judge_fn(rec.records_root())
    print(format_fn(sec))
    return prereg.record_judgement(args.json, name, sec)


def main(argv: list[str] | None = None) -> int:
    return cli("s29dec", __doc__, write, judge, format_table, argv)


if __name__ == "__main__":
    sys.exit(main())

"""s33blind: a blind, pre-registered judgement of today's twin on fresh one-H200 runs it never saw (issue 13).

No model change: the twin as committed predicts every row before the run (docs/notes/s33blind_rule.md), through the
paths that price each kind today, and nothing is fitted to the records:
  train_step        real.bench --only train (bench_train, AdamW, BF16 + the device's FP8), priced as s28blind priced
                    it (calibration.prereg.predict: whole_step.predict_model_row under the GPU's committed profile);
                    predictions prereg/s33blind_train_predictions.csv; records <gpu>/s33blind/train/model.csv
  prefill, decode   section host_steps in the cold process (real/campaigns/cold_host_steps.sh, the harness of the
                    adopted decode pricing), priced by the pricing in force since s30dec (ADOPT_SYNCED_KERNEL_HOST:
                    synchronised window, decode expert occupancy, the record's profiled kernels at w x ratio x probe,
                    w s30dec's committed one) exactly as calibration.s30dec2 predicts it (imported, not copied);
                    predictions prereg/s33blind_serve_predictions.json (grids over the host time per kernel, fixed
                    before the run; the lease's ratio and probes pick the point); records <gpu>/s33blind/serve/
The configurations are fresh: no committed model.csv holds a (model, training length) or (model, prompt length) of the
set (seen_configs, fresh_violations; a test holds it). Records sit two levels under the GPU folder: no fit and no
validation folder reads them (records.load_records reads the GPU folder's top level; s30dec.fit_folders its direct
subfolders holding the host_steps files).

    python -m calibration.s33blind write     # both predictions files (refuses uncommitted predicting code)
    python -m calibration.s33blind [judge] [--json calibration/s33blind_judgement.json]
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from calibration import entry
from calibration import prereg
from calibration import records as rec
from calibration import s29dec
from calibration import s30dec
from calibration import s30dec2
from calibration import step_protocol
from calibration.records_io import csv_exists, glob_csv, read_csv
from calibration.validate import MEDIAN_TARGET, P90_TARGET, load_fitted_profile

NAME = "s33blind"
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s33blind_judgement.json"
RULE = "docs/notes/s33blind_rule.md"
# real/campaigns/s33blind.sh's TRAIN (model, seq_len, batches), in its order (a test holds them equal): training lengths
# no record holds for these slices (olmoe-slice never trained; phi35moe-slice seen at 4096, llama3-8b-slice at 4096,
# dsv2-slice at 3072)
TRAIN_CASES = (("olmoe-slice", 3072, (1, 2)), ("phi35moe-slice", 3072, (1, 2)), ("llama3-8b-slice", 2048, (3,)),
               ("dsv2-slice", 2048, (3,)))
# real/campaigns/s33blind.sh's CASES (model, prompt_len, gen_len, prefill batches, decode batches), in its order: prompt
# lengths no record holds for the slice (seen 256-2560 in steps of 256 or more; never 1792 or 3072) and batches no
# record holds for any of them (prefill seen 1-4, 8, 16, 64; decode 1-4, 6, 8, 12, 16, 20, 24, 32, 40, 48, 56, 64, 128,
# 256)
CASES = (("llama3-8b-slice", 3072, 64, (5,), (10, 28, 44)),
         ("dsv2-slice", 1792, 64, (5,), (10, 28, 44)),
         ("phi35moe-slice", 3072, 64, (5,), (10, 28, 44)),
         ("olmoe-slice", 1792, 64, (5,), (10, 28, 44)),
         ("mixtral-slice", 1792, 64, (5,), (10, 28, 44)),
         ("v2-lite-slice", 1792, 64, (5,), (10, 28, 44)))
TRAIN_SUBDIR, SERVE_LEASE = f"{NAME}/train", f"{NAME}/serve"
TRAIN = prereg.Registration(f"{NAME}_train", prereg.PREREG_DIR / f"{NAME}_train_predictions.csv", TRAIN_SUBDIR,
                            TRAIN_CASES)
SERVE = prereg.Registration(f"{NAME}_serve", prereg.PREREG_DIR / f"{NAME}_serve_predictions.json", SERVE_LEASE, CASES,
                            section="serve")
# the adopted pricing's w is s30dec's, fixed for h200 (a one-GPU lease as an H100: no serve verdict)
SERVE_GPUS = s30dec2.GPUS
MIN_ROWS = 3                # a group of fewer records is reported, not judged (the rule)
KINDS = ("train_step", "prefill", "decode")


def train_rows() -> list[dict]:
    return prereg.case_rows(TRAIN)


def serve_rows() -> list[dict]:
    return [r for r in prereg.case_rows(SERVE) if r["gpu"] in SERVE_GPUS]


case_rows = serve_rows   # the cold part's campaign test reads calibration.<name>.case_rows / CASES


def seen_configs(root: Path | str | None = None, exclude: str = NAME) -> dict[str, set]:
    """Every committed model.csv's configurations (any GPU folder, any depth; `exclude`'s own folders left out):
    "train" (model, seq_len) of train_step rows, "serve" (model, prompt_len) of prefill / decode rows."""
    root = Path(rec.MEASUREMENTS_DIR if root is None else root)
    seen: dict[str, set] = {"train": set(), "serve": set()}
    for p in glob_csv(root, "model.csv", recursive=True):
        if exclude in Path(p).relative_to(root).parts:
            continue
        d = read_csv(p)
        if "bench" not in d.columns:
            continue
        t = d[d["bench"] == "train_step"].dropna(subset=["seq_len"])
        seen["train"] |= {(m, int(s)) for m, s in zip(t["model"], t["seq_len"])}
        s = d[d["bench"].isin(("prefill", "decode"))].dropna(subset=["prompt_len"])
        seen["serve"] |= {(m, int(p_)) for m, p_ in zip(s["model"], s["prompt_len"])}
    return seen


def fresh_violations(root: Path | str | None = None) -> list[tuple]:
    """The set's configurations some committed record already holds (empty: the set is fresh)."""
    seen = seen_configs(root)
    return ([("train", m, s) for m, s, _ in TRAIN_CASES if (m, s) in seen["train"]]
            + [("serve", m, p) for m, p, *_ in CASES if (m, p) in seen["serve"]])


def write(allow_dirty: bool = False) -> dict:
    """Both predictions files, each refusing to overwrite one and to predict from uncommitted code."""
    if not s30dec.ADOPT_SYNCED_KERNEL_HOST:
        raise SystemExit("s30dec.ADOPT_SYNCED_KERNEL_HOST is off: the rule judges the adopted decode pricing")
    train = prereg.write_registered(TRAIN.predictions_file, lambda: prereg.predict(train_rows()), allow_dirty)
    serve = s29dec.write(SERVE.predictions_file, allow_dirty, predict_cases=lambda: s30dec2.predict(serve_rows()))
    return {"train": train, "serve": serve}


def _group(errs) -> dict:
    errs = np.abs(np.asarray([e for e in errs if np.isfinite(e)], dtype=float))
    if not errs.size:
        return {"num_cases": 0, "judged": False, "meets_target": False}
    median, p90 = float(np.median(errs)), float(np.percentile(errs, 90))
    return {"num_cases": int(errs.size), "median_abs_rel_error": median, "p90_abs_rel_error": p90,
            "max_abs_rel_error": float(errs.max()), "judged": bool(errs.size >= MIN_ROWS),
            "meets_target": bool(errs.size >= MIN_ROWS and median <= MEDIAN_TARGET and p90 <= P90_TARGET)}


def train_residuals(rows: list[dict]) -> list[dict]:
    """Per measured train_step row the twin's component split (prereg.predicted_components under the GPU's committed
    profile) beside the measured step: the residual is measured - predicted (bench_train gives whole steps only)."""
    out, profiles = [], {}
    for r in rows:
        gpu = r["gpu"]
        if gpu not in profiles:
            profiles[gpu] = load_fitted_profile(gpu, rec.load_records(gpu))[0]
        comp = prereg.predicted_components(r, profiles[gpu])
        out.append({**{k: r[k] for k in prereg.KEY}, "measured_s": r["measured_s"], "predicted_s": r["predicted_s"],
                    "residual_s": r["measured_s"] - r["predicted_s"], **{f"twin_{k}": v for k, v in comp.items()}})
    return out


def judge(root: Path | str | None = None) -> dict:
    """The rule's verdicts on the records under `root`: per `<gpu> <kind>` the count, median, P90 and max |error| of
    the judged line (train_step: prereg.predict's; prefill / decode: the adopted pricing's, s30dec's `candidate`);
    the serve rows' other lines (s29dec's back-to-back, synchronised alone, plain profile) reported beside."""
    root = rec.records_root() if root is None else root
    train = prereg.validate_section(root, reg=TRAIN)
    rows = [{**r, "kind": "train_step"} for r in train["rows"]]
    reported: dict = {}
    serve_info: dict = {}
    if SERVE.predictions_file.exists():
        pred = s29dec.load_predictions(SERVE.predictions_file)
        fresh = s30dec._judge(root, [(SERVE_LEASE, SERVE_GPUS, pred, pred)])
        for label, v in fresh.items():
            gpu = label.split()[0]
            serve_info[gpu] = {k: v[k] for k in ("probe_ratio", "probe_launch_median_s", "infer_host_s_per_kernel",
                                                 "gpu_name") if k in v}
            for r in v["rows"]:
                rows.append({"gpu": gpu, "kind": r["bench"], **{k: r[k] for k in prereg.SERVE_KEY if k != "gpu"},
                             "measured_s": r["measured_s"], "predicted_s": r["cand_predicted_s"],
                             "rel_error": r["cand_rel_error"], "kernel_host_factor": r["kernel_host_factor"],
                             "in_force_b2b_rel_error": r["rel_error"], "synced_rel_error": r["synced_rel_error"],
                             "plain_rel_error": r["plain_rel_error"],
                             "step_infer_host_s_per_kernel": r["step_infer_host_s_per_kernel"],
                             "measured_host_s_per_op": r["measured_host_s_per_op"], "twin_ops": r["twin_ops"]})
            for bench, g in v["by_kind"].items():
                reported[f"{gpu} {bench}"] = {k: g[k] for k in ("in_force", "synced", "plain")}
    groups: dict = {}
    for r in rows:
        groups.setdefault(f"{r['gpu']} {r['kind']}", []).append(r["rel_error"])
    by_group = {k: _group(v) for k, v in sorted(groups.items())}
    judged = [g for g in by_group.values() if g["judged"]]
    return {"registration": NAME, "rule": RULE, "targets": {"median": MEDIAN_TARGET, "p90": P90_TARGET},
            "predictions_commit": {"train": train["predictions_commit"],
                                   "serve": (s29dec.load_predictions(SERVE.predictions_file).get("code_commit")
                                             if SERVE.predictions_file.exists() else None)},
            "by_group": by_group, "all_met": bool(judged) and all(g["meets_target"] for g in judged),
            "reported_serve_lines": reported, "serve_lease": serve_info, "rows": rows}


def decode_residuals(root: Path | str | None = None, rows: list[dict] | None = None) -> list[dict]:
    """Per decode record of the serve lease, where its step goes (calibration.step_protocol.protocol_rows: the probed
    steps' median step, host and tail seconds, the profiled step's kernels and their summed GPU seconds, the twin's
    decode ops and their GPU seconds), beside the judged prediction: the GPU residual (profiled kernels' sum - the
    twin's GPU sum) and the rest (measured - predicted - the GPU residual: host issue and tail the twin does not
    price)."""
    root = rec.records_root() if root is None else root
    pred = {(r["gpu"], r["model"], int(r["batch"])): r for r in (rows or []) if r["kind"] == "decode"}
    out = []
    for gpu in SERVE_GPUS:
        folder = Path(root) / gpu / SERVE_LEASE
        if not all(csv_exists(folder / f) for f in ("model.csv", "host_dispatch.csv", "serve_steps.csv",
                                                    "serve_kernels.csv", "step_kernels.csv")):
            continue
        prof = load_fitted_profile(gpu, rec.load_records(gpu))[0]
        for _, r in step_protocol.protocol_rows(folder, gpu, prof).iterrows():
            p = pred.get((gpu, r["model"], int(r["batch"])))
            cols = ["probed_step_s", "probed_host_s", "probed_tail_s", "back_to_back_step_s", "kernels",
                    "kernel_sum_s", "twin_ops", "twin_gpu_s", "step_host_s_per_kernel"]
            d = {"gpu": gpu, "model": r["model"], "batch": int(r["batch"]), "prompt_len": int(r["prompt_len"]),
                 **{c: float(r[c]) for c in cols}, "gpu_residual_s": float(r["kernel_sum_s"] - r["twin_gpu_s"])}
            if p is not None:
                d.update(measured_s=p["measured_s"], predicted_s=p["predicted_s"], rel_error=p["rel_error"],
                         rest_residual_s=p["measured_s"] - p["predicted_s"] - d["gpu_residual_s"])
            out.append(d)
    return out


def judge_with_reported(root: Path | str | None = None) -> dict:
    sec = judge(root)
    return {**sec, "reported_train_components": train_residuals([r for r in sec["rows"] if r["kind"] == "train_step"]),
            "reported_decode_residuals": decode_residuals(root, sec["rows"])}


def section(root: Path | str | None = None) -> dict:
    return judge(root)


def format_table(sec: dict) -> str:
    head = "Pre-registered blind set of today's twin (s33blind: fresh one-GPU train_step, prefill, decode)"
    if not sec["by_group"]:
        return head + ": no records yet"
    lines = [head + ":"]
    for label, s in sec["by_group"].items():
        verdict = ("met" if s["meets_target"] else "MISSED") if s["judged"] else "reported (too few rows)"
        lines.append(f"  s33blind {label}: {s['num_cases']} rows, median |err| {s['median_abs_rel_error']:.1%}, "
                     f"P90 {s['p90_abs_rel_error']:.1%}, max {s['max_abs_rel_error']:.1%} (target "
                     f"{MEDIAN_TARGET:.0%} / {P90_TARGET:.0%}: {verdict})")
    for label, lines_ in sec["reported_serve_lines"].items():
        lines.append(f"    (reported) {label}: " + ", ".join(
            f"{n} {s30dec._fig(g)}" for n, g in lines_.items()))
    for r in sec["rows"]:
        shape = f"s{int(r['seq_len'])} b{int(r['batch'])} {r['precision']}" if r["kind"] == "train_step" else \
            f"p{int(r['prompt_len'])} b{int(r['batch'])}"
        lines.append(f"    {r['gpu']} {r['kind']} {r['model']} {shape}: measured {r['measured_s'] * 1e3:.2f} ms, "
                     f"predicted {r['predicted_s'] * 1e3:.2f} ms ({r['rel_error']:+.1%})")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.s33blind", __doc__)
    ap.add_argument("action", nargs="?", default="judge", choices=["judge", "write", "fresh"])
    ap.add_argument("--json", type=Path, help="write the judgement here (calibration/s33blind_judgement.json)")
    ap.add_argument("--allow-dirty", action="store_true", help="write with uncommitted predicting code (tests only)")
    args = ap.parse_args(argv)
    if args.action == "write":
        out = write(args.allow_dirty)
        print(f"train: {len(out['train'])} rows, code {out['train']['code_commit'].iloc[0][:8]}; serve: "
              f"{len(out['serve']['rows'])} rows, code {out['serve']['code_commit'][:8]}")
        return 0
    if args.action == "fresh":
        bad = fresh_violations()
        print("fresh: no committed record holds any configuration of the set" if not bad else f"seen: {bad}")
        return 1 if bad else 0
    sec = judge_with_reported(rec.records_root())
    print(format_table(sec))
    return prereg.record_judgement(args.json, NAME, sec)


if __name__ == "__main__":
    sys.exit(main())

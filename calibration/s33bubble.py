"""s33bubble (issue 13): the GPU's bubble between queued kernels in an eager one-GPU train step, a candidate judged on a
fresh blind one-H200 train set (docs/notes/s33bubble_rule.md).

Candidate calibration.whole_step.ADOPT_TRAIN_KERNEL_BUBBLE: every GPU op of the train step adds b to its GPU time, b per
GPU name (whole_step.TRAIN_KERNEL_BUBBLE_S); H200 only: b is the mean GPU idle before a kernel of the backward and
optimizer phases of the s33train profiled steps, over the gaps <= 20 us (s33train.SMALL_GAP_US: the GPU between queued
kernels, not waiting on the host); H100 has no traces and keeps the step in force.

    fit     b from the fitting traces (calibration/measurements/h200/s33train/trace/train_kernels.csv)
    screen  the candidate beside the step in force on the committed train_step rows (s33train.committed: the held-out
            rows, described only) and on s33blind's 12 fresh rows (seen)
    write   the predictions of the fresh set U (prereg/s33bubble_train_predictions.csv: in force `predicted_s` and the
            candidate's `cand_predicted_s`), refused from uncommitted predicting code and never rewritten
    judge   the rule's criteria on U's records (<gpu>/s33bubble/train/model.csv) and its guards (two `twin validate
            --json` results, the switch off and on (below): which fields move)

    python -m calibration.s33bubble [fit|screen|write|fresh]
    twin validate --quiet --json OFF.json        # the guards' two sides (calibration never imports the CLI):
    python -c "import calibration.whole_step as w; w.ADOPT_TRAIN_KERNEL_BUBBLE = True; \
        from twin.cli.main import main; main(['validate', '--quiet', '--json', 'ON.json'])"
    python -m calibration.s33bubble judge --validate-off OFF.json --validate-on ON.json \
        [--json calibration/s33bubble_judgement.json]
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import prereg
from calibration import records as rec
from calibration import s33blind
from calibration import s33train
from calibration import whole_step
from calibration.records_io import csv_exists, read_csv
from calibration.validate import failures

NAME = "s33bubble"
RULE = "docs/notes/s33bubble_rule.md"
JUDGEMENT_FILE = Path(__file__).resolve().parent / f"{NAME}_judgement.json"
FIT_GPU = "h200"
FIT_PHASES = ("bwd", "opt")
# real/campaigns/s33bubble.sh's TRAIN (model, seq_len, batches), in its order (a test holds them equal): training
# lengths no committed record holds for the slice (seen_configs; olmoe-slice seen at 3072 only, mixtral-slice and
# phi35moe-slice at 4096 / 3072-4096, qwen3moe-slice and v2-lite-slice and v3-slice-1l at 2048 / 4096, llama3-8b-slice
# at 2048 / 4096, dsv2-slice at 2048 / 3072); each runs BF16 and the device's FP8: 16 rows
TRAIN_CASES = (("olmoe-slice", 1536, (2,)), ("olmoe-slice", 2560, (1,)), ("mixtral-slice", 2048, (1,)),
               ("qwen3moe-slice", 3072, (1,)), ("v2-lite-slice", 3072, (1,)), ("v3-slice-1l", 3072, (1,)),
               ("phi35moe-slice", 2048, (1,)), ("llama3-8b-slice", 3072, (1,)))
TRAIN = prereg.Registration(f"{NAME}_train", prereg.PREREG_DIR / f"{NAME}_train_predictions.csv", f"{NAME}/train",
                            TRAIN_CASES)


@contextlib.contextmanager
def candidate(on: bool = True):
    """whole_step.ADOPT_TRAIN_KERNEL_BUBBLE set to `on` inside the block."""
    saved = whole_step.ADOPT_TRAIN_KERNEL_BUBBLE
    whole_step.ADOPT_TRAIN_KERNEL_BUBBLE = on
    try:
        yield
    finally:
        whole_step.ADOPT_TRAIN_KERNEL_BUBBLE = saved


def trace_gaps_us(folder: Path | str) -> pd.DataFrame:
    """Per kernel of the CUDA-only profiled steps whose with-host step matches them kernel by kernel: its case, step,
    phase (the with-host step's) and the GPU idle before it (s33train._gaps_us)."""
    k = read_csv(Path(folder) / "train_kernels.csv")
    frames = []
    for key, ks in k.groupby(s33train.CASE_KEY, sort=False):
        kc, kh = ks[ks["mode"] == "cuda_only"], ks[ks["mode"] == "with_host"]
        host = kh[kh["step"] == kh["step"].min()].sort_values("index") if len(kh) else kh
        for step, one in kc.groupby("step"):
            one = one.sort_values("index")
            if len(host) != len(one) or not (host["kernel"].to_numpy() == one["kernel"].to_numpy()).all():
                continue
            one = one.assign(phase=host["phase"].to_numpy()).sort_values("start_us")
            frames.append(pd.DataFrame({**dict(zip(s33train.CASE_KEY, key)), "step": step,
                                        "phase": one["phase"].to_numpy(), "gap_us": s33train._gaps_us(one)}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*s33train.CASE_KEY, "gap_us"])


def fit(root: Path | str | None = None) -> dict:
    """b (seconds) from the fitting traces: the mean gap before a backward or optimizer kernel over the gaps <= 20 us
    (the total bubble of those phases over their kernels); the median and per-case means beside."""
    root = Path(rec.records_root() if root is None else root)
    g = trace_gaps_us(root / FIT_GPU / s33train.TRACE_SUBDIR)
    g = g[g["phase"].isin(FIT_PHASES) & (g["gap_us"] <= s33train.SMALL_GAP_US)]
    per_case = {" ".join(str(x) for x in k): float(v["gap_us"].mean()) for k, v in g.groupby(s33train.CASE_KEY,
                                                                                          sort=False)}
    return {"gpu": FIT_GPU, "bubble_s": round(float(g["gap_us"].mean()) * 1e-6, 9),
            "median_gap_s": float(g["gap_us"].median()) * 1e-6, "gaps": int(len(g)), "phases": list(FIT_PHASES),
            "max_gap_us": s33train.SMALL_GAP_US, "per_case_mean_us": per_case}


def _stats(err) -> dict:
    e = np.asarray(err, dtype=float)
    return {"rows": int(e.size), "under": int((e < 0).sum()), "signed_median": float(np.median(e)),
            "median_abs": float(np.median(np.abs(e))), "p90_abs": float(np.percentile(np.abs(e), 90)),
            "max_abs": float(np.abs(e).max())}


def screen(root: Path | str | None = None) -> dict:
    """The candidate beside the step in force on the committed train_step rows (per GPU) and on s33blind's rows."""
    root = rec.records_root() if root is None else root
    out: dict = {}
    with candidate(False):
        off = s33train.committed(root)[["gpu", "folder", "model", "batch", "seq_len", "precision", "measured_s",
                                        "predicted_s"]]
    with candidate(True):
        on = s33train.committed(root)["predicted_s"].to_numpy()
    off = off.assign(cand_predicted_s=on)
    for gpu, d in off.groupby("gpu"):
        out[f"committed {gpu}"] = {"in_force": _stats(d["predicted_s"] / d["measured_s"] - 1),
                                   "candidate": _stats(d["cand_predicted_s"] / d["measured_s"] - 1)}
    blind = off[off["folder"].str.contains("s33blind")]
    for gpu, d in blind.groupby("gpu"):
        out[f"s33blind {gpu}"] = {"in_force": _stats(d["predicted_s"] / d["measured_s"] - 1),
                                  "candidate": _stats(d["cand_predicted_s"] / d["measured_s"] - 1)}
    return out


def predict_both(rows: list[dict]) -> pd.DataFrame:
    """prereg.predict's seconds in force (`predicted_s`) and with the candidate (`cand_predicted_s`)."""
    with candidate(False):
        df = prereg.predict(rows)
    with candidate(True):
        df["cand_predicted_s"] = prereg.predict(rows)["predicted_s"].to_numpy()
    return df


def write(allow_dirty: bool = False) -> pd.DataFrame:
    if whole_step.ADOPT_TRAIN_KERNEL_BUBBLE:
        raise SystemExit("whole_step.ADOPT_TRAIN_KERNEL_BUBBLE is on: the predictions in force are the switch off")
    return prereg.write_registered(TRAIN.predictions_file, lambda: predict_both(prereg.case_rows(TRAIN)), allow_dirty)


def fresh_violations(root: Path | str | None = None) -> list[tuple]:
    seen = s33blind.seen_configs(root, exclude=NAME)
    return [(m, s) for m, s, _ in TRAIN_CASES if (m, s) in seen["train"]]


def criteria(in_force: dict, cand: dict) -> dict:
    """The rule's three criteria on U (one GPU's rows)."""
    c1 = cand["median_abs"] < in_force["median_abs"]
    c2 = abs(cand["signed_median"]) < abs(in_force["signed_median"])
    c3 = cand["p90_abs"] <= in_force["p90_abs"]
    return {"C1_median_abs_lower": bool(c1), "C2_signed_median_closer_to_0": bool(c2), "C3_p90_not_worse": bool(c3),
            "all": bool(c1 and c2 and c3)}


def fresh_rows(root: Path | str | None = None) -> pd.DataFrame:
    pred = prereg.load_predictions(TRAIN.predictions_file, TRAIN)
    recs = prereg.measured(root, TRAIN)
    rows, _ = prereg.compare(pred, recs, TRAIN)
    cand = recs.merge(pred[TRAIN.key + ["cand_predicted_s"]], on=TRAIN.key, how="inner")
    rows = rows.merge(cand[TRAIN.key + ["cand_predicted_s"]], on=TRAIN.key, how="left")
    return rows.assign(cand_rel_error=rows["cand_predicted_s"] / rows["time_s"] - 1.0)


def _flat(d, prefix=""):
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flat(v, f"{prefix}/{k}" if prefix else str(k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _flat(v, f"{prefix}[{i}]")
    else:
        yield prefix, d


def _allowed(key: str, on: dict) -> bool:
    """Whether a moved `twin validate` field is one the rule's G3 lets move: an h200 train_step case or step component,
    the h200 train_step summaries, the H100-profile-on-H200 block's train_step lines."""
    m = re.match(r"(cases|step_components|by_gpu_kind_gpus)\[(\d+)\]", key)
    if m:
        item = on[m[1]][int(m[2])]
        is_train = item.get("kind", item.get("bench")) == "train_step" or str(item.get("name", "")).startswith("train_step")
        return item.get("gpu") == "h200" and is_train
    return (key.startswith(("by_gpu_kind/h200/train_step/", "gpus/h200/by_bench/train_step/",
                            "gpus/h200/by_kind/train_step/"))
            or (key.startswith("h100_to_h200/") and "train_step" in key))


def validate_moves(off: dict, on: dict) -> dict:
    """Two `twin validate --json` results (switch off, on): the fields that differ (name: [off, on]), those the rule
    does not let move (G3), and the h100 / h200 train_step held-out medians and P90s."""
    a, b = dict(_flat(off)), dict(_flat(on))
    moved = {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}

    def ts(res, gpu):
        g = res.get("by_gpu_kind", {}).get(gpu, {}).get("train_step", {}).get("held_out", {})
        return {k: g.get(k) for k in ("num_cases", "median_abs_rel_error", "p90_abs_rel_error")}
    return {"moved": moved, "num_moved": len(moved), "not_allowed": [k for k in moved if not _allowed(k, on)],
            "failures_off": failures(off), "failures_on": failures(on),
            "train_step": {gpu: {"off": ts(off, gpu), "on": ts(on, gpu)} for gpu in ("h100", "h200")}}


def judge(root: Path | str | None = None, validate_off: dict | None = None, validate_on: dict | None = None) -> dict:
    """The rule's criteria on U; its guards where both `twin validate --json` results are given."""
    root = rec.records_root() if root is None else root
    out: dict = {"registration": NAME, "rule": RULE, "fit": fit(root),
                 "bubble_in_force_s": whole_step.TRAIN_KERNEL_BUBBLE_S, "adopted": whole_step.ADOPT_TRAIN_KERNEL_BUBBLE}
    if not TRAIN.predictions_file.exists():
        return {**out, "verdict": "no predictions"}
    rows = fresh_rows(root)
    out["predictions_commit"] = str(rows["code_commit"].iloc[0]) if len(rows) else None
    out["rows"] = rows[[*TRAIN.key, "time_s", "gpu_name", "predicted_s", "cand_predicted_s", "rel_error",
                        "cand_rel_error"]].to_dict("records")
    out["by_gpu"] = {}
    for gpu, d in rows.groupby("gpu"):
        f, c = _stats(d["rel_error"]), _stats(d["cand_rel_error"])
        out["by_gpu"][gpu] = {"in_force": f, "candidate": c, "criteria": criteria(f, c)}
    h200 = out["by_gpu"].get(FIT_GPU)
    guards = validate_off is not None and validate_on is not None
    if guards:
        out["validate"] = validate_moves(validate_off, validate_on)
        ts = out["validate"]["train_step"]
        g1 = all((ts["h200"]["on"][k] or 0) <= (ts["h200"]["off"][k] or 0) + 0.003
                 for k in ("median_abs_rel_error", "p90_abs_rel_error"))
        g2 = ts["h100"]["on"] == ts["h100"]["off"]
        v = out["validate"]
        h100_moved = [k for k in v["moved"] if "h100" in k and "h100_to_h200" not in k]
        g4 = ((ts["h200"]["on"]["median_abs_rel_error"] or 1) <= prereg.MEDIAN_TARGET
              and (ts["h200"]["on"]["p90_abs_rel_error"] or 1) <= prereg.P90_TARGET
              and len(v["failures_on"] or []) <= len(v["failures_off"] or []))
        out["guards"] = {"G1_h200_train_step_within_0.3_points": bool(g1),
                         "G2_h100_unchanged": bool(g2 and not h100_moved), "G3_only_named_fields_moved":
                         not v["not_allowed"], "G4_issue13_targets_still_met": bool(g4), "h100_fields_moved": h100_moved}
    if h200 is None or len(rows[rows["gpu"] == FIT_GPU]) < 8:
        out["verdict"] = "not judged (fewer than 8 h200 rows)"
    else:
        ok = h200["criteria"]["all"] and guards and all(v for k, v in out["guards"].items() if k.startswith("G"))
        out["verdict"] = "adopt" if ok else ("reject" if guards or not h200["criteria"]["all"] else
                                             "criteria met; guards not computed")
    return out


def format_judgement(sec: dict) -> str:
    lines = [f"s33bubble: b = {sec['fit']['bubble_s'] * 1e6:.3f} us (h200, {sec['fit']['gaps']} gaps; median "
             f"{sec['fit']['median_gap_s'] * 1e6:.2f} us)"]
    for gpu, g in sec.get("by_gpu", {}).items():
        for name in ("in_force", "candidate"):
            s = g[name]
            lines.append(f"  U {gpu} {name}: {s['rows']} rows, {s['under']} under, signed median "
                         f"{s['signed_median']:+.2%}, median |err| {s['median_abs']:.2%}, P90 {s['p90_abs']:.2%}")
        lines.append(f"  U {gpu} criteria: {g['criteria']}")
    for r in sec.get("rows", []):
        lines.append(f"    {r['gpu']} {r['model']} s{int(r['seq_len'])} b{int(r['batch'])} {r['precision']}: measured "
                     f"{r['time_s'] * 1e3:.2f} ms, in force {r['rel_error']:+.2%}, candidate {r['cand_rel_error']:+.2%}")
    if "guards" in sec:
        lines.append(f"  guards: {sec['guards']}")
    lines.append(f"  verdict: {sec['verdict']}")
    return "\n".join(lines)


def format_screen(scr: dict) -> str:
    lines = ["s33bubble screen (in force -> candidate):"]
    for label, g in scr.items():
        f, c = g["in_force"], g["candidate"]
        lines.append(f"  {label}: {f['rows']} rows, under {f['under']} -> {c['under']}, signed median "
                     f"{f['signed_median']:+.2%} -> {c['signed_median']:+.2%}, median |err| {f['median_abs']:.2%} -> "
                     f"{c['median_abs']:.2%}, P90 {f['p90_abs']:.2%} -> {c['p90_abs']:.2%}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.s33bubble", __doc__)
    ap.add_argument("action", nargs="?", default="judge", choices=["fit", "screen", "write", "fresh", "judge"])
    ap.add_argument("--json", type=Path, help="write the judgement here (calibration/s33bubble_judgement.json)")
    ap.add_argument("--validate-off", type=Path, help="judge: `twin validate --json` with the switch off (the guards)")
    ap.add_argument("--validate-on", type=Path, help="judge: the same with the switch on (the guards)")
    ap.add_argument("--allow-dirty", action="store_true", help="write with uncommitted predicting code (tests only)")
    args = ap.parse_args(argv)
    if args.action == "fit":
        print(fit())
        return 0
    if args.action == "screen":
        print(format_screen(screen()))
        return 0
    if args.action == "write":
        df = write(args.allow_dirty)
        print(f"{len(df)} rows, code {df['code_commit'].iloc[0][:8]}")
        return 0
    if args.action == "fresh":
        bad = fresh_violations()
        print("fresh: no committed record holds any configuration of the set" if not bad else f"seen: {bad}")
        return 1 if bad else 0
    if not csv_exists(Path(rec.records_root()) / FIT_GPU / TRAIN.records_subdir / "model.csv"):
        print("s33bubble: no records of the fresh set yet")
        return 0
    sides = [json.loads(p.read_text()) if p else None for p in (args.validate_off, args.validate_on)]
    sec = judge(None, *sides)
    print(format_judgement(sec))
    return prereg.record_judgement(args.json, NAME, sec)


if __name__ == "__main__":
    sys.exit(main())

"""s28blind: a blind, pre-registered judgement of the committed twin on fresh runs of real/ (issue 13), 1 and 2 GPUs.

Three slices of released models no record holds (twin/data/models.toml: llama3-8b-slice, a dense GQA model;
dsv2-slice, DeepSeek-V2's MLA with 40 of its 160 experts, top-6 of 8 groups; phi35moe-slice, Phi-3.5-MoE's 16 experts
of width 6400, top-2, GQA), at lengths and micro-batch counts no record holds, in the harnesses and settings of the
held-out rows `twin validate` judges (docs/notes/s28blind_rule.md):
  train_step  real/bench/whole_model.py bench_train (one GPU, AdamW step, BF16 and the device's FP8)
  prefill, decode  bench_serve (one GPU, BF16; prompt 1536, 32 generated)
  ep_step     real/pipeline, pp 1, ep 2, dp 2 (two GPUs)
  pipeline_step  real/pipeline, pp 2 under 1f1b, zb1p, dualpipev, dualpipe (two GPUs), each rank's idle
Every row is predicted through the path `twin validate` prices its kind with (calibration.prereg.predict: whole_step
predict_model_row under the GPU's committed profile; calibration.prereg.predict_ep: pipeline.simulate_row under the
committed `<gpu>x2` host inputs, balanced routing), written to four files under calibration/measurements/prereg/
(s28blind_{train,serve,ep,pp}_predictions.csv, one commit, one time) BEFORE real/campaigns/s28blind.sh ran, and
never rewritten. Records: calibration/measurements/<gpu>/s28blind/model.csv (one GPU),
<gpu>x2/s28blind/{ep,pp}/<model>/ (two GPUs): subfolders no fit and no validation folder reads.

    python -m calibration.s28blind write                 # the four predictions files (refuses a dirty twin/ or calibration/)
    python -m calibration.s28blind [--json calibration/s28blind_judgement.json]   # the judgement
    python -m calibration.s28blind repeat                # a repeat of the one-GPU parts, reported (the rule's A1)
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import idle_terms
from calibration import pipeline as pipe
from calibration import prereg
from calibration import prereg_pp
from calibration import records as rec
from calibration.records_io import csv_exists, glob_csv, read_csv
from calibration.pipeline_judgement import IDLE_FLOOR_OF_STEP, IDLE_TOL
from calibration.validate import MEDIAN_TARGET, P90_TARGET
from calibration.whole_step import gpu_spec

NAME = "s28blind"
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s28blind_judgement.json"
GPUS = prereg.GPUS   # both predicted (a one-GPU lease may come as an H100); the campaign asks for 2xH200
MODELS = ("llama3-8b-slice", "dsv2-slice", "phi35moe-slice")
# real/campaigns/s28blind.sh's TRAIN and SERVE, in its order (a test holds them equal): (model, seq_len, batches);
# (model, prompt_len, gen_len, prefill batches, decode batches)
TRAIN_CASES = (("llama3-8b-slice", 4096, (1, 2)), ("dsv2-slice", 3072, (1, 2)), ("phi35moe-slice", 4096, (1, 2)))
SERVE_CASES = tuple((m, 1536, 32, (2, 8), (4, 16, 64)) for m in MODELS)
TRAIN = prereg.Registration("s28blind_train", prereg.PREREG_DIR / "s28blind_train_predictions.csv", NAME, TRAIN_CASES)
SERVE = prereg.Registration("s28blind_serve", prereg.PREREG_DIR / "s28blind_serve_predictions.csv", NAME, SERVE_CASES,
                            section="serve")
# the two-GPU parts: (model, num_layers), real/campaigns/s28blind.sh's EP and PP in its order
EP_CASES = (("dsv2-slice", 2), ("phi35moe-slice", 2))
EP_MICROBATCHES = (1, 3)
PP_CASES = (("llama3-8b-slice", 4), ("phi35moe-slice", 4))
PP_MICROBATCHES = (4, 6)
SCHEDULES = prereg_pp.SCHEDULES
SEQ_LEN_2GPU = 4096
EP_FILE = prereg.PREREG_DIR / "s28blind_ep_predictions.csv"
PP_FILE = prereg.PREREG_DIR / "s28blind_pp_predictions.csv"
EP_SUBDIR, PP_SUBDIR = f"{NAME}/ep", f"{NAME}/pp"


def _two_gpu_row(gpu: str, model: str, layers: int, n: int, pp: int, schedule: str) -> dict:
    return {"gpu": gpu, "bench": "pipeline_step" if pp > 1 else "ep_step", "model": model, "schedule": schedule,
            "pp": pp, "ep": 1 if pp > 1 else 2, "dp": 1 if pp > 1 else 2, "num_gpus": 2, "num_microbatches": n,
            "micro_batch_seqs": 1, "seq_len": SEQ_LEN_2GPU, "precision": "bf16", "num_layers": layers}


def ep_rows() -> list[dict]:
    return [_two_gpu_row(gpu, m, layers, n, 1, "1f1b") for gpu in GPUS for m, layers in EP_CASES
            for n in EP_MICROBATCHES]


def pp_rows() -> list[dict]:
    return [_two_gpu_row(gpu, m, layers, n, 2, s) for gpu in GPUS for m, layers in PP_CASES
            for n in PP_MICROBATCHES for s in SCHEDULES]


def write(allow_dirty: bool = False) -> dict[str, pd.DataFrame]:
    """The four predictions files, each refusing to overwrite one and to predict from uncommitted code."""
    inputs: dict = {}   # the <gpu>x2 host inputs, computed once for both two-GPU files
    return {"train": prereg.write_registered(TRAIN.predictions_file, lambda: prereg.predict(prereg.case_rows(TRAIN)),
                                             allow_dirty),
            "serve": prereg.write_registered(SERVE.predictions_file, lambda: prereg.predict(prereg.case_rows(SERVE)),
                                             allow_dirty),
            "ep": prereg.write_registered(EP_FILE, lambda: prereg.predict_ep(ep_rows(), inputs=inputs), allow_dirty),
            "pp": prereg.write_registered(PP_FILE, lambda: prereg.predict_ep(pp_rows(), inputs=inputs), allow_dirty)}


def _group(errs) -> dict:
    errs = np.abs(np.asarray(errs, dtype=float))
    median, p90 = float(np.median(errs)), float(np.percentile(errs, 90))
    return {"num_cases": int(errs.size), "median_abs_rel_error": median, "p90_abs_rel_error": p90,
            "max_abs_rel_error": float(errs.max()),
            "meets_target": bool(median <= MEDIAN_TARGET and p90 <= P90_TARGET)}


def ep_routed(root: Path | str | None = None) -> list[dict]:
    """Reported beside the verdict, never judged (the rule): each measured EP2 row priced again by the same committed
    code with the run's own routing records (prereg.predict_ep's `routing`: each MoE layer at its most loaded EP
    rank's rows, as `twin validate` prices committed rows under ADOPT_EP_ROUTED_ROWS)."""
    root = rec.records_root() if root is None else root
    meas = prereg.measured_ep(root, EP_SUBDIR)
    out = []
    for gpu in GPUS:
        paths = glob_csv(Path(root) / f"{gpu}x2" / EP_SUBDIR, "*/pipeline_routing.csv")
        mine = meas[meas["gpu"] == gpu]
        if not paths or mine.empty:
            continue
        routing = pd.concat([read_csv(p) for p in paths], ignore_index=True)
        # the committed <gpu>x2 inputs, as the predictions (not the records root's)
        priced = prereg.predict_ep([r for r in ep_rows() if r["gpu"] == gpu], routing=routing)
        both = priced.merge(mine[prereg.EP_KEY + ["time_s"]], on=prereg.EP_KEY)
        out += [{**{k: r[k] for k in prereg.EP_KEY}, "measured_s": float(r["time_s"]),
                 "routed_predicted_s": float(r["predicted_s"]),
                 "routed_rel_error": float(r["predicted_s"] / r["time_s"] - 1.0)} for _, r in both.iterrows()]
    return out


def op_residuals(root: Path | str | None = None) -> list[dict]:
    """Where each two-GPU row's time goes, measured beside the twin (the rule's residual, reported): per row and rank,
    the summed device spans of each compute-op kind (F, B, W, BW, FB: idle_terms.measured_op_s, the median over the
    timed steps of each op) against the twin's simulated spans of the same ops (idle_terms.twin_op_s of the
    prediction's simulation: balanced routing, the committed `<gpu>x2` inputs), and the step beside the last op's end."""
    root = rec.records_root() if root is None else root
    out = []
    inputs: dict = {}
    for gpu in GPUS:
        for subdir in (EP_SUBDIR, PP_SUBDIR):
            for path in glob_csv(Path(root) / f"{gpu}x2" / subdir, "*/pipeline_step.csv"):
                steps = read_csv(path)
                ops_path = Path(path).parent / "pipeline_ops.csv"
                if not csv_exists(ops_path):
                    continue
                ops = read_csv(ops_path)
                for _, row in steps.iterrows():
                    if gpu not in inputs:
                        inputs[gpu] = prereg.two_gpu_inputs(gpu)
                    profile, accumulate, host, hold_s = inputs[gpu]
                    result, step_s, _ = pipe.simulate_row(row, gpu_spec(gpu), profile, accumulate, host, None, {}, hold_s)
                    meas, twin = idle_terms.measured_op_s(row, ops), idle_terms.twin_op_s(result)
                    schedule = idle_terms.schedule_of(row)
                    sums: dict = {}
                    for (rank, k), d in twin.items():
                        kind = idle_terms.category(schedule, rank, k)[0]
                        cell = sums.setdefault((rank, kind), {"measured_s": 0.0, "twin_s": 0.0, "num_ops": 0})
                        cell["twin_s"] += d
                        cell["measured_s"] += meas.get((rank, k), float("nan"))
                        cell["num_ops"] += 1
                    out.append({"gpu": gpu, "bench": row["bench"], "model": row["model"], "schedule": row["schedule"],
                                "num_microbatches": int(row["num_microbatches"]), "measured_step_s": float(row["time_s"]),
                                "twin_step_s": float(step_s), "twin_makespan_s": float(result.makespan_s),
                                "by_rank_kind": [{"rank": r, "kind": k, **v} for (r, k), v in sorted(sums.items())]})
    return out


def judge(root: Path | str | None = None) -> dict:
    """The rule's verdicts on the records under `root`: per kind and GPU count (`<gpu> <kind>`, `<gpu>x2 <kind>`) the
    count, median, P90 and max |error| against issue 13's targets; each PP2 rank's idle; the schedules' ranking;
    the rows. Empty groups where no record exists."""
    root = rec.records_root() if root is None else root
    one = []
    for reg in (TRAIN, SERVE):
        sec = prereg.validate_section(root, reg=reg)
        one += [{"bench": "train_step", **r, "kind": r.get("bench", "train_step"), "num_gpus": 1} for r in sec["rows"]]
    ep = prereg.compare(prereg.load_predictions(EP_FILE), prereg.measured_ep(root, EP_SUBDIR), key=prereg.EP_KEY)[0] \
        if csv_exists(EP_FILE) else pd.DataFrame()
    ep_list = [] if ep.empty else [{**{k: r[k] for k in prereg.EP_KEY}, "kind": "ep_step", "num_gpus": 2,
                                    "measured_s": float(r["time_s"]), "predicted_s": float(r["predicted_s"]),
                                    "rel_error": float(r["rel_error"])} for _, r in ep.iterrows()]
    pp = prereg_pp.section(root, PP_FILE, PP_SUBDIR)
    pp_list = [{**r, "kind": "pipeline_step", "num_gpus": 2} for r in pp["rows"]]
    rows = one + ep_list + pp_list
    groups = {}
    for r in rows:
        label = f"{r['gpu']} {r['kind']}" if r["num_gpus"] == 1 else f"{r['gpu']}x2 {r['kind']}"
        groups.setdefault(label, []).append(r["rel_error"])
    by_group = {k: _group(v) for k, v in sorted(groups.items())}
    idle = pp["idle"]
    resolved = [p for p in pp["ranking"] if p["resolved"]]
    return {"registration": NAME, "rule": "docs/notes/s28blind_rule.md",
            "targets": {"median": MEDIAN_TARGET, "p90": P90_TARGET, "idle_tol": IDLE_TOL,
                        "idle_floor_of_step": IDLE_FLOOR_OF_STEP},
            "by_group": by_group,
            "idle": {"num_rank_rows": len(idle), "num_within": int(sum(i["within"] for i in idle)),
                     "meets_target": bool(idle) and all(i["within"] for i in idle), "rows": idle},
            "ranking": {"num_pairs": len(pp["ranking"]), "num_resolved": len(resolved),
                        "num_resolved_ordered": int(sum(p["ordered"] for p in resolved)),
                        "num_ordered": int(sum(p["ordered"] for p in pp["ranking"])),
                        "meets_target": bool(resolved) and all(p["ordered"] for p in resolved),
                        "pairs": pp["ranking"]},
            "rows": rows}


def judge_with_reported(root: Path | str | None = None) -> dict:
    """judge() and the rule's reported-only figures: the EP2 rows at the run's own routing (ep_routed), each two-GPU
    row's op spans beside the twin's (op_residuals), the one-GPU repeat's groups (repeat_groups, amendment A1)."""
    root = rec.records_root() if root is None else root
    return {**judge(root), "reported_ep_routed": ep_routed(root), "reported_op_residuals": op_residuals(root),
            "reported_repeat": repeat_groups(root)}


REPEAT_SUBDIR = "s28blind_repeat"   # the rule's amendment A1: the one-GPU parts again, reported, never judged


def repeat_groups(root: Path | str | None = None, subdir: str = REPEAT_SUBDIR) -> dict:
    """Per `<gpu> <kind>` the repeat's count, median, P90 and max |error| against the same committed predictions
    (amendment A1: reported beside the judged run, never judged); empty where no repeat was filed."""
    root = rec.records_root() if root is None else root
    groups: dict = {}
    for reg in (TRAIN, SERVE):
        sec = prereg.validate_section(root, reg=dataclasses.replace(reg, records_subdir=subdir))
        for r in sec["rows"]:
            groups.setdefault(f"{r['gpu']} {r.get('bench', 'train_step')}", []).append(r["rel_error"])
    return {k: _group(v) for k, v in sorted(groups.items())}


def section(root: Path | str | None = None) -> dict:
    """`twin validate`'s part prereg_s28blind: the judgement live on the records under `root`."""
    root = rec.records_root() if root is None else root
    return judge(root)


# a row's shape in format_table: batch, training length, prompt length, precision, layers, micro-batches, schedule
_ROW_TAGS = (("batch", "b"), ("seq_len", "s"), ("prompt_len", "p"), ("precision", ""), ("num_layers", "l"),
             ("num_microbatches", "n"), ("schedule", ""))


def format_table(sec: dict) -> str:
    """One line per kind and GPU count, then idle and ranking, then one line per row."""
    head = "Pre-registered blind set of the committed twin (s28blind: 3 fresh slices, 1 and 2 GPUs)"
    if not sec["by_group"]:
        return head + ": no records yet"
    lines = [head + ":"]
    for label, s in sec["by_group"].items():
        lines.append(f"  prereg-blind {label}: {s['num_cases']} rows, median |err| {s['median_abs_rel_error']:.1%}, "
                     f"P90 {s['p90_abs_rel_error']:.1%}, max {s['max_abs_rel_error']:.1%} (target "
                     f"{MEDIAN_TARGET:.0%} / {P90_TARGET:.0%}: {'met' if s['meets_target'] else 'MISSED'})")
    i, k = sec["idle"], sec["ranking"]
    if i["num_rank_rows"]:
        lines.append(f"  prereg-blind idle: {i['num_within']} of {i['num_rank_rows']} PP2 rank-rows within "
                     f"{IDLE_TOL:.0%} (or {IDLE_FLOOR_OF_STEP:.0%} of the step): {'met' if i['meets_target'] else 'MISSED'}")
    if k["num_pairs"]:
        lines.append(f"  prereg-blind ranking: {k['num_resolved_ordered']} of {k['num_resolved']} resolved pairs ordered "
                     f"as measured ({k['num_ordered']} of {k['num_pairs']} in all): "
                     f"{'met' if k['meets_target'] else 'MISSED'}")
    for r in sec["rows"]:
        what = " ".join(f"{tag}{int(r[c]) if isinstance(r[c], float) else r[c]}" for c, tag in _ROW_TAGS
                        if c in r and pd.notna(r[c]) and c != "bench")
        lines.append(f"    {r['gpu']}{'x2' if r['num_gpus'] == 2 else ''} {r['kind']} {r['model']} {what}: measured "
                     f"{r['measured_s'] * 1e3:.2f} ms, predicted {r['predicted_s'] * 1e3:.2f} ms ({r['rel_error']:+.1%})")
    return "\n".join(lines)


def _jsonable(obj):
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, float) and np.isnan(obj):
        return None
    return obj


def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.s28blind", __doc__)
    ap.add_argument("action", nargs="?", default="judge", choices=["judge", "write", "repeat"])
    ap.add_argument("--json", type=Path, help="write the judgement here (calibration/s28blind_judgement.json)")
    ap.add_argument("--allow-dirty", action="store_true", help="write with uncommitted predicting code (tests only)")
    args = ap.parse_args(argv)
    if args.action == "write":
        for kind, df in write(args.allow_dirty).items():
            print(f"{kind}: {len(df)} rows, code {df['code_commit'].iloc[0][:7]}")
        return 0
    if args.action == "repeat":
        groups = repeat_groups(rec.records_root())
        print("s28blind repeat (amendment A1: reported, never judged)" + ("" if groups else ": no records"))
        for label, g in groups.items():
            print(f"  {label}: {g['num_cases']} rows, median |err| {g['median_abs_rel_error']:.1%}, P90 "
                  f"{g['p90_abs_rel_error']:.1%}, max {g['max_abs_rel_error']:.1%}")
        return 0
    sec = judge_with_reported(rec.records_root())
    print(format_table(sec))
    for r in sec["reported_ep_routed"]:
        print(f"    (reported) {r['gpu']}x2 ep_step {r['model']} n{r['num_microbatches']} at the run's routing: predicted "
              f"{r['routed_predicted_s'] * 1e3:.2f} ms ({r['routed_rel_error']:+.1%})")
    if args.json:
        entry.write_json(args.json, _jsonable(sec))
    return 0


if __name__ == "__main__":
    sys.exit(main())


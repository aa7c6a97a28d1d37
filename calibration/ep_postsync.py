"""s23ephost (issue 13, docs/notes/s23ephost_rule.md): the EP layer's post-sync host time.

After dispatch's second blocking .tolist() (real/ep.py, the receive splits) the GPU has run everything
issued before it and sits empty while the host issues the rest of the MoE layer: the row gather, the
token all-to-all, the received rows' permutation, the local experts (group offsets, the padded copy,
two grouped GEMMs) and combine's un-permute, up to combine's all-to-all. How long the GPU idles there
is the host seconds of those ops against the GPU seconds they queue. The twin issues them at the
forward's one host rate a launch (calibration.pipeline measured_host_s `fwd`, solved over the run's
own PP2 forwards), the token all-to-all call at its measured term (calibration.ep_host).

real/campaigns/s23ephost.sh marks the host at each real/ep.py MARK_SEGMENTS point in EP2 steps of the
s20epnew shapes (split fit) and, in the same run, times PP2 forwards that give that run's own rate.
fit_table puts, per fitting configuration, the measured post-sync stretches of a forward (calibration.
ep_host GROUPS `gather` + `experts`: the segments gather, dispatch_post, dispatch_end and combine; the
token all-to-all call keeps its own term) and the rest of it (head, attention, gate, dispatch's first
part, the weights and shared experts, head and loss) beside the twin's launches of the same stretches at
that run's rate and EP terms: each ratio is measured over twin, the host seconds a launch there takes in
units of the launch the twin already prices. calibration.predict.with_host_terms applies them
(calibration.pipeline ADOPT_EP_POSTSYNC_HOST, ADOPT_EP_REST_HOST: both off, the rule's outcome: the post-
sync stretch runs at ~0.57 of the twin's seconds, the rest at ~1.66, and neither change passed).
holdout_live prices a run's held-out EP2 steps as s20epnew's are.

    python -m calibration.ep_postsync RUN_FOLDER GPU     (RUN_FOLDER: <gpu>x2/s23ephost_<stamp>)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import calibration.pipeline as pipe
from calibration import entry
from calibration import ep_fresh, ep_host, prereg, prereg_pp4
from calibration import records as rec
from calibration.fit import PROFILES_DIR
from calibration.predict import gpu_spec
from calibration.records_io import csv_exists, read_csv
from calibration.validate import load_fitted_profile

# real/campaigns/s23ephost.sh FIT_MODELS / HOLDOUT_MODELS (restated: calibration does not read the
# script; a test keeps them equal): (model, layers)
FIT_MODELS = (("qwen2moe-mla-slice", 4), ("qwen3moe-mla-slice", 4), ("mixtral-mla-slice", 2))
HOLDOUT_MODELS = (("bench-small", 4), ("qwen3moe-slice", 4), ("mixtral-slice", 2))
HOLDOUT_MICROBATCHES = (1, 2, 4)
RUN_PREFIX = "s23ephost_"
# the delivery whose fit folders give calibration.pipeline's ratios and whose held-out steps the rule
# judges (docs/notes/s23ephost_rule.md: the first host); s23ephost_20261128_0029 is a second 2xH100
# host's run of the same campaign, reported beside it
FIT_RUN = "s23ephost_20261128_0023"
POSTSYNC_GROUPS = ("gather", "experts")   # calibration.ep_host.GROUPS after the receive-splits sync


def run_host(folder: Path, gpu: str, fwd_s: float | None = None) -> tuple:
    """(profile, AccumulateGrad rates, host dict) of a fit folder (`marks_host`): its own PP2 forwards'
    rate (measured_host_s `fwd`; `fwd_s` where it timed none: the same run's other fit folders') and its
    own EP host terms at that rate (calibration.ep_host.ep_host_terms on its marks)."""
    base, _ = load_fitted_profile(gpu, rec.load_records(gpu), PROFILES_DIR)
    profile, accumulate, gap_s = pipe.host_inputs(Path(folder), gpu, base, rec.MEASUREMENTS_DIR / f"{gpu}x2")
    host = dict(pipe.measured_host_s(Path(folder), gpu, profile, accumulate, gap_s) or {})
    if host.get("fwd") is None and fwd_s is not None:
        host["fwd"] = fwd_s
    marks, ops = ep_host.load(Path(folder))
    if host.get("fwd") is not None:
        host.update(ep_host.ep_host_terms(marks, ops, host["fwd"]))
    return profile, accumulate, host


def twin_stretches(model: str, layers: int, n: int, gpu: str, profile, accumulate, host: dict) -> dict:
    """The twin's host seconds of an EP2 step's forward (pp 1, one sequence of 4,096, BF16) at `host`:
    `post` the MoE layers' post-sync stretches (POSTSYNC_GROUPS of ep_host.twin_groups), `rest` every
    other launch outside the EP calls and syncs (each layer's `to_counts`, the first from the op's start,
    and the last layer's `after`: the head and the loss)."""
    spec = pipe._spec_of({"model": model, "num_layers": layers})
    ops = pipe.stage_ops(spec, range(spec.num_layers), True, True, 1, 4096, "bf16", gpu_spec(gpu), profile, 2,
                         (n - 1) / n, accumulate, host)
    groups = ep_host.twin_groups(ops.f)
    return {"post": sum(g.get(k, 0.0) for g in groups for k in POSTSYNC_GROUPS),
            "rest": sum(g.get("to_counts", 0.0) for g in groups) + groups[-1].get("after", 0.0)}


def measured_stretches(folder: Path) -> pd.DataFrame:
    """Per EP2 forward (every rank, timed step, micro-batch) of a marks folder's fitting split: OP_KEYS,
    post (its MoE layers' POSTSYNC_GROUPS seconds) and rest (each layer's to_counts, the first from the
    op's host start, and the last layer's after), as twin_stretches cuts the twin's."""
    marks, ops = ep_host.load(Path(folder))
    marks, ops = marks[(marks["split"] == "fit") & (marks["pp"] == 1)], ops[ops["split"] == "fit"]
    groups = ep_host.measured_groups(ep_host.forward_segments(marks, ops))
    if groups.empty:
        return groups
    per = groups.assign(post=groups[list(POSTSYNC_GROUPS)].sum(axis=1),
                        rest=groups["to_counts"] + groups["after"].fillna(0.0) if "after" in groups else groups["to_counts"])
    return per.groupby(ep_host.OP_KEYS, as_index=False)[["post", "rest"]].sum()


def fit_table(run: Path, gpu: str) -> pd.DataFrame:
    """One row per (model, micro-batches) of a delivered run's fit folders: the run's forward rate
    (fwd_s; a folder that timed no PP2 forward takes the median of the run's others), the measured
    stretches (median over forwards) beside the twin's at that rate and EP terms, and their ratios."""
    folders = fit_folders(run)
    hosts = {f: run_host(f, gpu) for f in folders}
    rates = [h[2]["fwd"] for h in hosts.values() if h[2].get("fwd") is not None]
    out = []
    for f in folders:
        profile, accumulate, host = hosts[f]
        if host.get("fwd") is None and rates:
            profile, accumulate, host = run_host(f, gpu, float(np.median(rates)))
        meas = measured_stretches(f)
        steps = read_csv(Path(f) / "pipeline_step.csv")
        for (model, n), g in meas.groupby(["model", "num_microbatches"]):
            layers = int(steps[steps["model"] == model]["num_layers"].iloc[0])
            twin = twin_stretches(model, layers, int(n), gpu, profile, accumulate, host)
            row = {"gpu": gpu, "model": model, "num_microbatches": int(n), "fwd_s": host["fwd"], "forwards": int(len(g))}
            for k in ("post", "rest"):
                row[f"measured_{k}_s"], row[f"twin_{k}_s"] = float(g[k].median()), twin[k]
                row[f"{k}_ratio"] = row[f"measured_{k}_s"] / twin[k]
            out.append(row)
    return pd.DataFrame(out)


def pooled_ratios(table: pd.DataFrame) -> dict:
    """{post, rest}: the median over a fit table's configurations of each ratio."""
    return {k: float(np.median(table[f"{k}_ratio"])) for k in ("post", "rest")}


def fit_folders(run: Path) -> list[Path]:
    """The marks_host folders of a delivered run (<gpu>x2/s23ephost_<stamp>/fit/<model>/marks_host)."""
    return [p for p in sorted(Path(run).glob("fit/*/marks_host")) if csv_exists(p / "ep_host_marks.csv")]


def holdout_rows(run: Path, gpu: str) -> tuple[list[dict], pd.DataFrame, pd.DataFrame]:
    """A delivered run's held-out EP2 steps (holdout/<model>/pipeline_step.csv, split holdout) as
    calibration.prereg.ep_case_rows lays a row out, their measured seconds (prereg.EP_KEY + measured_s)
    and the runs' routing records (pipeline_routing.csv of every held-out model)."""
    steps, routing = [], []
    for folder in sorted(Path(run).glob("holdout/*")):
        if csv_exists(folder / "pipeline_step.csv"):
            steps.append(read_csv(folder / "pipeline_step.csv"))
        if csv_exists(folder / "pipeline_routing.csv"):
            routing.append(read_csv(folder / "pipeline_routing.csv"))
    if not steps:
        return [], pd.DataFrame(), pd.DataFrame()
    df = pd.concat(steps, ignore_index=True)
    df = df[(df["split"] == "holdout") & (df["bench"] == "ep_step") & (df["time_s"] > 0)]
    keys = ["bench", "model", "schedule", "pp", "ep", "dp", "num_gpus", "num_microbatches", "micro_batch_seqs",
            "seq_len", "precision", "num_layers"]
    rows = [{"gpu": gpu, **{k: r[k] for k in keys}} for _, r in df.iterrows()]
    measured = df.assign(gpu=gpu)[prereg.EP_KEY + ["time_s"]].rename(columns={"time_s": "measured_s"})
    return rows, measured, pd.concat(routing, ignore_index=True) if routing else pd.DataFrame()


def holdout_live(run: Path, gpu: str, routed: bool = True) -> pd.DataFrame:
    """The held-out EP2 steps of a delivered run predicted as s20epnew's are (prereg.predict_ep: the
    committed `<gpu>x2` folder's host rates and EP terms, each MoE layer at its most loaded EP rank's rows
    from the run's routing with `routed`), under the switches as they are: prereg.EP_KEY, measured_s,
    predicted_s, rel_error."""
    rows, measured, routing = holdout_rows(run, gpu)
    if not rows:
        return pd.DataFrame()
    pred = prereg.predict_ep(rows, routing=routing if routed else None)
    out = pred[prereg.EP_KEY + ["predicted_s"]].merge(measured, on=prereg.EP_KEY)
    return out.assign(rel_error=out["predicted_s"] / out["measured_s"] - 1.0)


# real/campaigns/s23ephost2.sh MODELS (restated; a test keeps them equal): fresh EP2 steps (two sequences of
# 2,048 a micro-batch) beside PP2 forwards timed in the same run (docs/notes/s23ephost2_rule.md)
OWN_RATE_MODELS = (("bench-small", 4), ("qwen2moe-mla-slice", 4), ("v2-lite-slice", 4))
OWN_RATE_PREFIX = "s23ephost2_"


def own_rate_live(folder: Path, gpu: str) -> pd.DataFrame:
    """The held-out EP2 steps of a records folder (an s23ephost2 run's model folder: PP2 1f1b fit rows
    and EP2 holdout rows) priced two ways, each at the run's routing: `committed` as s20epnew's are
    (prereg.two_gpu_inputs: the committed `<gpu>x2` folder's forward rate and EP terms) and `own` at the
    folder's own PP2 forwards' rate (measured_host_s of the folder, its EP terms carried from `<gpu>x2`,
    the profile's collectives and AccumulateGrad rates from there: pipeline.host_inputs' inputs_from).
    prereg.EP_KEY, measured_s, predicted_s_committed, predicted_s_own, rel_error_committed, rel_error_own."""
    folder, x2 = Path(folder), rec.MEASUREMENTS_DIR / f"{gpu}x2"
    steps = read_csv(folder / "pipeline_step.csv")
    steps = steps[(steps["split"] == "holdout") & (steps["bench"] == "ep_step") & (steps["time_s"] > 0)]
    keys = ["bench", "model", "schedule", "pp", "ep", "dp", "num_gpus", "num_microbatches", "micro_batch_seqs",
            "seq_len", "precision", "num_layers"]
    rows = [{"gpu": gpu, **{k: r[k] for k in keys}} for _, r in steps.iterrows()]
    routing = read_csv(folder / "pipeline_routing.csv") if csv_exists(folder / "pipeline_routing.csv") else None
    base, _ = load_fitted_profile(gpu, rec.load_records(gpu), PROFILES_DIR)
    profile, accumulate, gap_s = pipe.host_inputs(folder, gpu, base, x2)
    own = {gpu: (profile, accumulate, pipe.measured_host_s(folder, gpu, profile, accumulate, gap_s), 0.0)}
    out = steps.assign(gpu=gpu)[prereg.EP_KEY + ["micro_batch_seqs", "seq_len", "time_s"]].rename(
        columns={"time_s": "measured_s"})
    for label, inputs in (("committed", None), ("own", own)):
        pred = prereg.predict_ep(rows, routing=routing, inputs=inputs)
        out[f"predicted_s_{label}"] = pred["predicted_s"].to_numpy()
        out[f"rel_error_{label}"] = out[f"predicted_s_{label}"] / out["measured_s"] - 1.0
    return out.reset_index(drop=True)


def runs(root: Path | str | None = None) -> list[tuple[str, Path]]:
    """(gpu, folder) of each committed delivery (<gpu>x2/s23ephost_<stamp>/)."""
    root = rec.records_root() if root is None else root
    return [(host.name[:-2], folder) for host in sorted(Path(root).glob("*x2"))
            for folder in sorted(host.glob(RUN_PREFIX + "*")) if folder.is_dir()]


def error_line(name: str, err: np.ndarray) -> str:
    """One printed line of relative errors: count, median and P90 |error|, the largest over-prediction, each row."""
    if len(err) == 0:
        return f"  {name}: no rows"
    a = np.abs(err)
    return (f"  {name}: n={len(err)} median {np.median(a):.2%} P90 {np.percentile(a, 90):.2%} max over "
            f"{err.max():+.2%} | " + " ".join(f"{e:+.1%}" for e in err))


def ep_guard_lines() -> list[str]:
    """The committed EP figures an EP host change is guarded by, at the switches as set: s20epnew's 2xH100 and 2xH200
    EP2 steps at their routing, and the s21pp4 / s21pp4b pp2ep2 rows with their idle within-counts and misordered
    schedule pairs (benchmarks/ep_postsync_figures.py, benchmarks/ep_bwd_host_figures.py)."""
    out = [error_line(f"s20epnew {gpu}x2", ep_fresh.s20epnew_live(True, gpu, routed=True)["rel_error"].to_numpy())
           for gpu in ("h100", "h200")]
    inputs: dict = {}
    for sub in (prereg_pp4.RECORDS_SUBDIR, prereg_pp4.SECOND_SUBDIR):
        sec = prereg_pp4.live_section(sub, True, inputs=inputs)
        err = np.array([r["rel_error"] for r in sec["rows"]])
        resolved = [p for p in sec["ranking"] if p["resolved"]]
        out.append(error_line(f"{sub} pp2ep2", err) + f" | idle within {sum(i['within'] for i in sec['idle'])} of "
                   f"{len(sec['idle'])}, misordered {sum(not p['ordered'] for p in resolved)} of {len(resolved)}")
    return out


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.ep_postsync", __doc__)
    ap.add_argument("run", type=entry.records_folder, metavar="RUN_FOLDER")
    ap.add_argument("gpu", type=entry.gpu_name, metavar="GPU")
    args = ap.parse_args(argv)
    with entry.user_inputs("RUN_FOLDER", args.run, "a run folder of real.pipeline part folders"):
        df = fit_table(args.run, args.gpu)
        pooled = pooled_ratios(df)
    pd.set_option("display.width", 200)
    print(df.to_string(index=False))
    print("pooled (median over configurations):", {k: round(v, 3) for k, v in pooled.items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""s21ep2 (issue 13, docs/notes/s21ep2_rule.md): the EP2 MoE layer rows of real/campaigns/s21ep2.sh,
shapes no earlier record holds, predicted as `twin validate` predicts the host folder's ep.csv rows.

    python -m calibration.ep_fresh FOLDER [HOST_FOLDER GPU]      (HOST_FOLDER: h200x2, GPU: h200)

Each row of FOLDER/ep.csv is predicted by calibration.whole_step.predict_ep_row with the inputs
calibration.validate.predict_multi_gpu gives the committed host folder of the same host kind
(HOST_FOLDER: its measured NCCL collectives and, with ADOPT_EP_LAYER_HOST_TERMS, its EP host terms),
under both settings of ADOPT_EP_LOCAL_EXPERTS_ONLY (A). Nothing is fitted to these rows; the rows of
split `holdout` are the judged ones, the `fit` row (s14epl's shape) is this run's check against
s14epl's host. The folder is a subfolder of the host folder: multi_gpu_dirs does not read it.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pandas as pd

import calibration.pipeline as pipe
import calibration.whole_step as ws
from calibration import entry
from calibration import prereg
from calibration import records as rec
from calibration.fit import PROFILES_DIR
from calibration.predict import gpu_spec
from calibration.records_io import csv_exists, glob_csv, read_csv
from calibration.validate import _ep_name, kind_of, load_fitted_profile

# real/bench/ep_fresh.py FRESH_CASES (restated: calibration does not import real/; a test keeps them
# equal): (tokens a rank, routed experts, skew, split) of v3-slice-1l on two ranks
FRESH_CASES = ((12288, 32, 0.0, "holdout"), (24576, 32, 0.0, "holdout"), (6144, 32, 0.0, "holdout"),
               (8192, 64, 0.0, "holdout"), (8192, 16, 0.0, "holdout"), (12288, 32, 1.0, "holdout"),
               (16384, 64, 0.5, "holdout"), (4096, 16, 1.0, "holdout"), (2048, 64, 0.5, "holdout"),
               (8192, 32, 0.0, "fit"))
HOST_FOLDER = rec.MEASUREMENTS_DIR / "h200x2"
SETTINGS = {"A off": False, "A on": True}
RUN_PREFIX = "s21ep2_"   # calibration/measurements/<gpu>x2/s21ep2_<stamp>/ep.csv: one delivery of the campaign


@contextlib.contextmanager
def local_experts_only(on: bool):
    """calibration.whole_step.ADOPT_EP_LOCAL_EXPERTS_ONLY set to `on` inside the block."""
    before = ws.ADOPT_EP_LOCAL_EXPERTS_ONLY
    ws.ADOPT_EP_LOCAL_EXPERTS_ONLY = on
    try:
        yield
    finally:
        ws.ADOPT_EP_LOCAL_EXPERTS_ONLY = before


def host_inputs(host_folder: Path = HOST_FOLDER, gpu: str = "h200") -> tuple:
    """(GPUSpec, profile with the host folder's collectives, the folder's EP host terms or None):
    what validate.predict_multi_gpu predicts the host folder's ep.csv rows with."""
    profile, _ = load_fitted_profile(gpu, rec.load_records(gpu), PROFILES_DIR)
    profile = ws.with_measured_collectives(profile, host_folder)
    terms = pipe.folder_ep_terms(Path(host_folder), gpu, profile) if ws.ADOPT_EP_LAYER_HOST_TERMS else None
    return gpu_spec(gpu), profile, terms


def predict_rows(ep: pd.DataFrame, inputs: tuple) -> pd.DataFrame:
    """One row per predictable ep.csv row: name, bench, kind, split, measured_s, and per setting of A
    the predicted seconds and rel_error (predicted / measured - 1)."""
    spec, profile, terms = inputs
    out = []
    for _, r in ep.iterrows():
        if r["bench"] == "all_to_all" or not r["time_s"] > 0:
            continue
        row = {"name": f"{_ep_name(r)} {str(r['split'])}", "bench": r["bench"], "kind": kind_of(r["bench"]),
               "split": str(r["split"]), "tokens_per_rank": int(r["tokens_per_rank"]),
               "num_experts": int(r["num_experts"]), "skew": float(r["skew"]), "precision": r["precision"],
               "max_rank_rows": int(r["max_rank_rows"]), "measured_s": float(r["time_s"])}
        for label, on in SETTINGS.items():
            with local_experts_only(on):
                pred = ws.predict_ep_row(r, spec, profile, terms)
            row[f"predicted_s {label}"] = pred
            row[f"rel_error {label}"] = pred / float(r["time_s"]) - 1.0
        out.append(row)
    return pd.DataFrame(out)


def summary(rows: pd.DataFrame, kind: str, split: str = "holdout") -> dict:
    """{setting: {n, median, p90 (of |rel_error|), signed_median}} of one kind's rows of one split."""
    sub = rows[(rows["kind"] == kind) & (rows["split"] == split)]
    out = {}
    for label in SETTINGS:
        err = sub[f"rel_error {label}"].to_numpy(float)
        out[label] = ({"n": int(len(err)), "median": float(np.median(np.abs(err))),
                       "p90": float(np.percentile(np.abs(err), 90)), "signed_median": float(np.median(err))}
                      if len(err) else {"n": 0})
    return out


def s20epnew_routing(gpu: str, root: Path | str | None = None) -> pd.DataFrame:
    """Every model's pipeline_routing rows of `gpu`'s s20epnew folder (<gpu>x2/s20epnew/<model>/), concatenated."""
    root = rec.records_root() if root is None else root
    parts = [read_csv(p) for p in glob_csv(Path(root) / f"{gpu}x2" / prereg.EP_RECORDS_SUBDIR, "*/pipeline_routing.csv")]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def s20epnew_live(on: bool, gpu: str = "h200", routed: bool = False) -> pd.DataFrame:
    """The pre-registered EP2 steps of s20epnew (calibration.prereg.EP_CASES) that `gpu`'s two-GPU host
    measured, re-predicted live with A set to `on` (prereg.predict_ep: the path their pre-registered
    predictions took); the pre-registered file itself is never rewritten. `routed` (s22epq, R): each MoE
    layer at its most loaded EP rank's rows per local expert from the run's own routing records
    (prereg.predict_ep's `routing`). Columns: prereg.EP_KEY, measured_s, predicted_s, rel_error."""
    meas = prereg.measured_ep()
    meas = meas[meas["gpu"] == gpu].groupby(prereg.EP_KEY, as_index=False)["time_s"].median()
    rows = [r for r in prereg.ep_case_rows() if r["gpu"] == gpu]
    with local_experts_only(on):
        pred = prereg.predict_ep(rows, routing=s20epnew_routing(gpu) if routed else None)
    out = pred[prereg.EP_KEY + ["predicted_s"]].merge(meas.rename(columns={"time_s": "measured_s"}), on=prereg.EP_KEY)
    return out.assign(rel_error=out["predicted_s"] / out["measured_s"] - 1.0)


def runs(root: Path | str | None = None) -> list[tuple[str, Path]]:
    """(gpu, folder) of each committed delivery of the campaign (<gpu>x2/s21ep2_<stamp>/ with an ep.csv)."""
    root = rec.records_root() if root is None else root
    out = []
    for host in sorted(Path(root).glob("*x2")):
        for folder in sorted(host.glob(RUN_PREFIX + "*")):
            if csv_exists(folder / "ep.csv"):
                out.append((host.name[:-2], folder))
    return out


def live_setting() -> str:
    return "A on" if ws.ADOPT_EP_LOCAL_EXPERTS_ONLY else "A off"


def section(root: Path | str | None = None) -> dict:
    """The `twin validate` part: per delivery, the moe_layer and ep_comm held-out summaries under each
    setting of A (the committed one named `live`) and every row."""
    root = rec.records_root() if root is None else root
    out = {"live": live_setting(), "runs": []}
    for gpu, folder in runs(root):
        rows = predict_rows(read_csv(folder / "ep.csv"), host_inputs(Path(root) / f"{gpu}x2", gpu))
        out["runs"].append({"gpu": gpu, "folder": folder.name,
                            "summary": {k: summary(rows, k) for k in ("moe_layer", "ep_comm")},
                            "rows": rows.to_dict("records")})
    return out


def format_table(sec: dict) -> str:
    """One line per delivery and kind (issue 13's layer target, median <= 5% and P90 <= 10%, on the live
    setting; the other setting beside it), then one per held-out layer row."""
    head = "EP2 layers at shapes no earlier record held (s21ep2; docs/notes/s21ep2_rule.md)"
    if not sec["runs"]:
        return head + ": no records yet"
    lines = [head + f", live setting {sec['live']}:"]
    for run in sec["runs"]:
        for kind, by_setting in run["summary"].items():
            s, other = by_setting[sec["live"]], by_setting["A on" if sec["live"] == "A off" else "A off"]
            if not s["n"]:
                continue
            met = "met" if s["median"] <= 0.05 and s["p90"] <= 0.10 else "MISSED"
            lines.append(f"  fresh-ep {run['gpu']}x2 {run['folder']} {kind}: {s['n']} held out, median {s['median']:.1%}, "
                         f"P90 {s['p90']:.1%} (signed {s['signed_median']:+.1%}; target 5% / 10%: {met}); "
                         f"other setting {other['median']:.1%} / {other['p90']:.1%}")
        for r in run["rows"]:
            if r["split"] == "holdout" and r["kind"] == "moe_layer":
                lines.append(f"    {r['name']}: measured {r['measured_s'] * 1e3:.2f} ms, "
                             f"{r['rel_error A off']:+.1%} (A off) / {r['rel_error A on']:+.1%} (A on)")
    return "\n".join(lines)


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.ep_fresh", __doc__)
    ap.add_argument("folder", type=entry.records_folder, metavar="FOLDER", help="a folder with ep.csv")
    ap.add_argument("host", type=entry.records_folder, nargs="?", default=HOST_FOLDER, metavar="HOST_FOLDER",
                    help="the host folder whose terms price the rows (default h200x2)")
    ap.add_argument("gpu", type=entry.gpu_name, nargs="?", default="h200", metavar="GPU", help="default h200")
    args = ap.parse_args(argv)
    with entry.user_inputs("FOLDER / HOST_FOLDER", f"{args.folder} / {args.host}", "EP records folders (ep.csv)"):
        rows = predict_rows(read_csv(args.folder / "ep.csv"), host_inputs(args.host, args.gpu))
    pd.set_option("display.width", 200)
    cols = ["name", "measured_s", *[f"rel_error {s}" for s in SETTINGS]]
    print(rows[cols].assign(measured_s=rows["measured_s"] * 1e3).rename(columns={"measured_s": "measured_ms"})
          .round(4).to_string(index=False))
    for kind in ("moe_layer", "ep_comm"):
        for split in ("holdout", "fit"):
            for label, s in summary(rows, kind, split).items():
                if s["n"]:
                    print(f"{kind:9s} {split:7s} {label}: n={s['n']} median {s['median']:.2%} P90 {s['p90']:.2%} "
                          f"(signed {s['signed_median']:+.2%})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

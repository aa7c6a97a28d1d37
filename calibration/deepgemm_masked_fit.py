"""Fit of DeepGEMM's masked grouped GEMM model (twin/costs/masked_gemm.py) on the s22dg records, and its
held-out check (docs/notes/s22dg_rule.md, part A).

Records: calibration/measurements/<gpu>/deepgemm_masked.csv (real/bench/deepgemm_masked.py). Split, fixed
by the rule before the rows were read: fitting = equal-layout rows at FIT_EXPECTED_ROWS (the even-indexed
entries of the campaign's EXPECTED_ROWS); held out = the other equal rows and every scattered row.
Five parameters per GPU and timing, scipy least_squares on log time (soft_l1, f_scale 0.1, as
calibration/fit.py), in log space so they stay positive. Writes twin/data/deepgemm_masked.json.

Run: python -m calibration.deepgemm_masked_fit [--write]
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from scipy.optimize import least_squares

from calibration import entry
from calibration import records as rec
from calibration.records_io import csv_exists, csv_sha256, read_csv
from twin.core import atomic
from twin.core.specs import get_gpu
from twin.costs import compute
from twin.costs.masked_gemm import PARAM_NAMES, MaskedGemmParams, masked_gemm_time_s
from twin.costs.profile import load_profile

TABLE = Path(__file__).resolve().parents[1] / "twin" / "data" / "deepgemm_masked.json"
RECORDS = "deepgemm_masked.csv"
GPUS = ("h100", "h200")
TIMINGS = ("l2_flush", "graph")
KERNEL = "deepgemm_masked"
# the rule's fitting rows (docs/notes/s22dg_rule.md): the even-indexed entries of EXPECTED_ROWS
FIT_EXPECTED_ROWS = (8, 24, 40, 56, 72, 96, 120, 136, 160, 192, 208, 240, 256, 272, 320, 448)
INITIAL = {"fixed_s": 10e-6, "wave_s": 1e-6, "bw_bytes_per_s": 2.8e12, "mma_eff": 0.6, "overlap_p": 2.0}


def is_fit_row(row) -> bool:
    return row["layout"] == "equal" and int(row["expected_rows"]) in FIT_EXPECTED_ROWS


def kernel_rows(gpu: str, timing: str):
    """The DeepGEMM rows of one GPU and timing that measured a time, as dicts."""
    path = rec.records_root() / gpu / RECORDS
    if not csv_exists(path):
        return []
    df = read_csv(path, keep_default_na=False)
    df = df[(df["kernel"] == KERNEL) & (df["error"] == "") & (df["timing"].isin([timing, "eager_b2b"] if timing == "graph"
                                                                                  else [timing]))]
    return [r for r in df.to_dict("records") if r["time_s"] not in ("", None) and float(r["time_s"]) > 0]


def predict_s(row, gpu_spec, params: MaskedGemmParams) -> float:
    return masked_gemm_time_s(json.loads(row["masked_rows_json"]), int(row["n"]), int(row["k"]), gpu_spec, params,
                              expected_rows=float(row["expected_rows"]))


def _params(x) -> MaskedGemmParams:
    """Fitted in log space (all positive; overlap_p as log(p - 1), so p > 1)."""
    v = dict(zip(PARAM_NAMES, np.exp(x)))
    v["overlap_p"] = 1.0 + v["overlap_p"]
    return MaskedGemmParams(**v)


def fit(rows, gpu_spec) -> MaskedGemmParams:
    meas = np.log([float(r["time_s"]) for r in rows])

    def resid(x):
        p = _params(x)
        return np.log([predict_s(r, gpu_spec, p) for r in rows]) - meas

    x0 = np.log([INITIAL[n] - (1.0 if n == "overlap_p" else 0.0) for n in PARAM_NAMES])
    return _params(least_squares(resid, x0, loss="soft_l1", f_scale=0.1).x)


def errors(rows, gpu_spec, params) -> list[float]:
    return [predict_s(r, gpu_spec, params) / float(r["time_s"]) - 1.0 for r in rows]


def summary(errs: list[float]) -> dict:
    a = np.abs(np.asarray(errs))
    if not len(a):
        return {"rows": 0}
    return {"rows": int(len(a)), "median_abs_error": float(np.median(a)), "p90_abs_error": float(np.percentile(a, 90)),
            "within_5pct": int((a <= 0.05).sum()), "within_10pct": int((a <= 0.10).sum())}


def fit_all() -> dict:
    """{gpu: {timing: {params, fit summary, held-out summary}}} over the GPUs with records."""
    out = {}
    for gpu in GPUS:
        spec = get_gpu(gpu)
        for timing in TIMINGS:
            rows = kernel_rows(gpu, timing)
            fit_rows = [r for r in rows if is_fit_row(r)]
            held = [r for r in rows if not is_fit_row(r)]
            if len(fit_rows) < len(PARAM_NAMES) * 2:
                continue
            p = fit(fit_rows, spec)
            out.setdefault(gpu, {})[timing] = {
                "params": {n: getattr(p, n) for n in PARAM_NAMES},
                "fit": summary(errors(fit_rows, spec, p)), "held_out": summary(errors(held, spec, p)),
                "records": f"calibration/measurements/{gpu}/{RECORDS}",
                "records_sha256": csv_sha256(rec.records_root() / gpu / RECORDS)}
    return out


def torch_beside(gpu: str, timing: str = "graph") -> list[dict]:
    """Diagnostic (not a criterion): the twin's torch grouped FP8 cost (compute.grouped_gemm_time_s, the
    profile's 'fp8' grouped curve and row tile) against the torch._scaled_grouped_mm rows measured beside
    the masked kernel, and the masked kernel's measured time at the same groups and rows."""
    path = rec.records_root() / gpu / RECORDS
    if not csv_exists(path):
        return []
    df = read_csv(path, keep_default_na=False)
    df = df[(df["error"] == "") & (df["timing"] == timing) & (df["layout"] == "equal")]
    spec, prof = get_gpu(gpu), load_profile(gpu)
    key = ["shape", "groups", "expected_rows"]
    dg = {tuple(r[c] for c in key): float(r["time_s"]) for r in df[df["kernel"] == KERNEL].to_dict("records")}
    out = []
    for r in df[df["kernel"] == "torch_scaled_grouped_mm_fp8"].to_dict("records"):
        rows = json.loads(r["masked_rows_json"])
        twin_s = compute.grouped_gemm_time_s(rows, int(r["n"]), int(r["k"]), "fp8", spec, prof)
        out.append({"shape": r["shape"], "groups": int(r["groups"]), "rows": int(r["expected_rows"]),
                    "torch_measured_s": float(r["time_s"]), "torch_twin_s": twin_s,
                    "deepgemm_measured_s": dg.get(tuple(r[c] for c in key), float("nan"))})
    return out


@entry.script
def main(argv=None) -> None:
    ap = entry.JudgeParser(prog="python -m calibration.deepgemm_masked_fit", description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"write {TABLE.name}")
    ap.add_argument("--torch", action="store_true", help="print the torch rows beside the twin's torch cost")
    a = ap.parse_args(argv)
    if a.torch:
        for gpu in GPUS:
            for r in torch_beside(gpu):
                print(gpu, {k: (f"{1e6 * v:.1f}us" if k.endswith("_s") else v) for k, v in r.items()})
    fits = fit_all()
    for gpu, by_timing in fits.items():
        for timing, f in by_timing.items():
            pr = ", ".join(f"{n} {v:.4g}" for n, v in f["params"].items())
            print(f"{gpu} {timing}: {pr}\n  fit {f['fit']}\n  held out {f['held_out']}")
    if a.write:
        table = {"source": "calibration/deepgemm_masked_fit.py (docs/notes/s22dg_rule.md): DeepGEMM 6c5da03 "
                           "m_grouped_gemm_fp8_fp8_bf16_nt_masked, records of real/campaigns/s22dg.sh",
                 "fits": fits}
        atomic.write_text(TABLE, json.dumps(table, indent=1, sort_keys=True) + "\n")
        print(f"wrote {TABLE}")


if __name__ == "__main__":
    main()

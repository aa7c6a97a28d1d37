"""The batched GEMMs and small-m projections of real/'s eager decode step (issue 13, session s8dec).

Records: calibration/measurements/<gpu>/decode_gemm.csv (real/bench/decode_gemm.py, section
decode_gemm): the five einsums of MLA._attend_absorbed (cuBLAS batched GEMMs) at the decode rows'
batches and cache lengths and around them, and the decode step's F.linear projections at m = batch
rows, each timed alone in a CUDA graph, with the profiler's kernels of one call.

Terms of the profile from the FITTING split's rows (calibration/split.py: batches 16 and 192 and
cache lengths 1,041 and 4,097 are held out):
  batched_gemm    one BatchedCurve (a GemmCurve and a fixed time per call) per alignment class ("bf16/align<a>": the largest of 8, 4, 2, 1
                  elements dividing the GEMM's leading dimensions), fitted by least squares on the
                  log of the rows' GEMM-kernel time (the CUDA-graph time per call, times the GEMM
                  kernels' share of the profiled kernel time: an einsum's operand copies, which
                  the decode op list costs apart, left out) under compute.batched_gemm_time_s,
                  with or without the tile-wave model (whichever fits the class better);
  cublas_kernels  the kernels a call launches beyond its one GEMM kernel (cuBLAS's split-K
                  reduction `cublasLt::splitKreduce_kernel`, its workspace memsets), per weight shape and m for the
                  projections ("linear": {"<n>x<k>": {"<m>": extra, ...}}) and per einsum, heads and
                  alignment for the batched GEMMs ("bmm": {"<op>/h<H>/align<a>": {"<batch>": extra}});
                  a lookup takes the nearest measured m (log scale) (Profile.eager_decode);
  elementwise_eff the attention's elementwise kernels over the scores (decode_elementwise rows):
                  op -> the median over fitting rows of streaming time (bytes at memory_eff) over
                  measured time less a launch (Profile.eager_decode).
`held_out_errors` predicts the held-out rows with those terms (the report of
`python -m calibration.decode_gemm`); `--update` writes the terms into the committed profiles.

decode_drift.csv (section decode_drift, diagnostic, never fitted): real/'s V3-slice decode steps in
rounds under three GPU conditions with the GPU's clocks, power and P-state and the host's CPU
clock per step; `drift_rounds` reduces them to one line per round as model.csv's decode rows
would have timed it (the median of the steps after 3 warm-ups).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration.predict import gpu_spec
from calibration.split import split
from calibration.records_io import csv_exists, read_csv
from twin.costs import compute
from twin.costs.profile import PROFILES, BatchedCurve, Profile, profile_from_json

FAMILY = "decode_gemm.csv"
GEMM_FIELDS = ("e_max", "m_half", "n_half", "k_half")
E_MAX_BOUNDS, HALF_BOUNDS = (0.02, 1.0), (0.0, 1e5)   # calibration.fit's bounds of a GemmCurve
WAVE_TILES = (0, 128)
FIXED_US_BOUNDS = (0.0, 100.0)   # a batched GEMM call's fixed time, microseconds
MIN_ROWS = 8           # 2 fitting rows per parameter (calibration.fit MIN_POINTS_PER_PARAM)


def load(gpu: str, root: Path | str | None = None) -> pd.DataFrame | None:
    """A GPU's decode_gemm.csv with `held_out` (calibration/split.py) and `gemm_time_s` (the GEMM
    kernels' time per call), or None where not measured."""
    root = rec.records_root() if root is None else root
    path = Path(root) / gpu / FAMILY
    if not csv_exists(path):
        return None
    df = read_csv(path)
    df = df[df["time_s"].notna() & (df["time_s"] > 0)].reset_index(drop=True)
    if df.empty:
        return None
    df["held_out"] = split(df).values
    share = (df["gemm_kernel_s"] / df["kernel_s"]).where(df["kernel_s"] > 0).fillna(1.0).clip(0.0, 1.0)
    df["gemm_time_s"] = df["time_s"] * share
    return df


def _bmm(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["bench"] == "decode_bmm"]


def curve_key(precision: str, align: int, op: str) -> str:
    """Profile.batched_gemm key of one einsum of MLA._attend_absorbed at an alignment."""
    return f"{precision}/{op}/align{int(align)}"


def predict_bmm_s(row, profile: Profile, gpu) -> float:
    return compute.batched_gemm_time_s(int(row["batch_count"]), int(row["m"]), int(row["n"]), int(row["k"]),
                                       int(row["align_elems"]), row["op"], gpu, profile)


def _fit_curve(rows: pd.DataFrame, profile: Profile, gpu, key: str) -> tuple[BatchedCurve, float]:
    """(curve, soft-l1 cost) of one alignment class, the better of each wave-tile candidate."""
    from scipy.optimize import least_squares   # lazy: scipy.optimize is heavy and only a fit needs it

    meas = rows["gemm_time_s"].to_numpy(float)
    best = None
    for tile in WAVE_TILES:
        def residuals(x):
            curve = BatchedCurve(*x[:4], wave_tile=tile, fixed_s=x[4] * 1e-6)
            prof = _with_curves(profile, {key: curve})
            pred = np.array([predict_bmm_s(r, prof, gpu) for _, r in rows.iterrows()])
            return np.log(pred / meas)

        x0 = (0.3, 1.0, 16.0, 16.0, 2.0)               # fixed time in microseconds (scaled for the solver)
        lo = (E_MAX_BOUNDS[0],) + (HALF_BOUNDS[0],) * 3 + (FIXED_US_BOUNDS[0],)
        hi = (E_MAX_BOUNDS[1],) + (HALF_BOUNDS[1],) * 3 + (FIXED_US_BOUNDS[1],)
        sol = least_squares(residuals, x0, bounds=(lo, hi), loss="soft_l1", f_scale=0.1, max_nfev=400)
        cost = float(sol.cost)
        if best is None or cost < best[1]:
            x = [float(v) for v in sol.x]
            best = (BatchedCurve(*x[:4], wave_tile=tile, fixed_s=x[4] * 1e-6), cost)
    return best


def _with_curves(profile: Profile, curves: dict) -> Profile:
    return dataclasses.replace(profile, batched_gemm={**profile.batched_gemm, **curves})


def fit_batched_curves(df: pd.DataFrame, profile: Profile, gpu_name: str, precision: str = "bf16") -> dict:
    """"<precision>/<op>/align<a>" -> BatchedCurve from the fitting rows of each einsum and
    alignment with at least MIN_ROWS rows."""
    gpu = gpu_spec(gpu_name)
    fit = _bmm(df)[~_bmm(df)["held_out"]]
    keys = fit.apply(lambda r: curve_key(precision, r["align_elems"], r["op"]), axis=1)
    curves = {}
    for key, rows in sorted(fit.groupby(keys)):
        if len(rows) < MIN_ROWS:
            continue
        curves[key], _ = _fit_curve(rows, profile, gpu, key)
    return curves


def extra_per_call(row) -> int:
    """Kernels a profiled call launched beyond its one GEMM kernel: cuBLAS's split-K reduction
    (a second GEMM-class kernel) and its workspace memsets (`Memset (Device)`); an einsum's
    operand copies are not cuBLAS's (the decode op list names them)."""
    memsets = str(row.get("kernel_names", "")).count("Memset")
    return max(0, int(row["gemm_kernels"]) - 1) + memsets


def _table(rows: pd.DataFrame, key_of, x_col: str) -> dict:
    """key -> {"<x>": extra kernels} (the median over rows of one key and x, rounded), x ascending."""
    out: dict = {}
    rows = rows.assign(_extra=rows.apply(extra_per_call, axis=1))
    for (key, x), g in rows.groupby([rows.apply(key_of, axis=1), x_col]):
        out.setdefault(key, {})[int(x)] = max(0, int(round(float(np.median(g["_extra"])))))
    return {k: {str(x): e for x, e in sorted(v.items())} for k, v in sorted(out.items())}


def linear_key(n: int, k: int) -> str:
    return f"{int(n)}x{int(k)}"


def bmm_key(op: str, heads: int, align: int) -> str:
    return f"{op}/h{int(heads)}/align{int(align)}"


def cublas_kernel_tables(df: pd.DataFrame) -> dict:
    """{"linear": ..., "bmm": ...} extra kernels per call from the fitting rows that were profiled."""
    fit = df[~df["held_out"] & df["gemm_kernels"].notna()]
    lin, bmm = fit[fit["bench"] == "decode_linear"], fit[fit["bench"] == "decode_bmm"]
    out = {}
    if not lin.empty:
        out["linear"] = _table(lin, lambda r: linear_key(r["n"], r["k"]), "m")
    if not bmm.empty:
        out["bmm"] = _table(bmm, lambda r: bmm_key(r["op"], r["num_heads"], r["align_elems"]), "batch")
    return out


def extra_kernels(points: dict | None, x: float) -> int:
    """The extra kernels of the measured point nearest x in log scale (ties: the smaller x); 0
    where nothing was measured. E.g. {"1": 2, "8": 1, "256": 0} at 4 -> 1 (log2: 2 from 1 and
    1 from 8), at 100 -> 0."""
    if not points:
        return 0
    lx = math.log2(max(x, 1))
    nearest = min((int(k) for k in points), key=lambda m: (abs(math.log2(max(m, 1)) - lx), m))
    return int(points[str(nearest)])


SOFTMAX_WARP_MAX = 2048   # PyTorch's softmax_warp_forward takes rows of at most 2^11 elements


def elementwise_key(op: str, cache_len: float) -> str:
    """The elementwise term of an op over L cached positions: softmax rows longer than 2,048
    elements run another kernel (a block per row) than the warp-per-row one ("softmax_long")."""
    return "softmax_long" if op == "softmax" and cache_len > SOFTMAX_WARP_MAX else str(op)


def elementwise_eff(df: pd.DataFrame, profile: Profile, gpu_name: str) -> dict:
    """op -> fraction of the streaming rate of the attention's elementwise kernels (fitting rows)."""
    rows = df[(df["bench"] == "decode_elementwise") & ~df["held_out"]]
    hbm = gpu_spec(gpu_name).hbm_bytes_per_s
    out = {}
    for op, g in rows.groupby(rows.apply(lambda r: elementwise_key(r["op"], r["cache_len"]), axis=1)):
        stream_s = g["bytes"] / (hbm * profile.memory_eff)
        out[str(op)] = float(np.median(stream_s / (g["time_s"] - profile.launch_s).clip(lower=1e-9)))
    return out


def decode_terms(gpu: str, profile: Profile, root: Path | str | None = None) -> dict:
    """{"batched_gemm": curves, "eager_decode": {"cublas_kernels", "elementwise_eff", "source"}} of a
    GPU ({} without decode_gemm.csv)."""
    root = rec.records_root() if root is None else root
    df = load(gpu, root)
    if df is None:
        return {}
    curves = fit_batched_curves(df, _with_curves(profile, {}), gpu)
    tables, effs = cublas_kernel_tables(df), elementwise_eff(df, profile, gpu)
    eager = {**({"cublas_kernels": tables} if tables else {}), **({"elementwise_eff": effs} if effs else {})}
    if eager:
        eager["source"] = (f"calibration.decode_gemm from {gpu}/{FAMILY} (fitting split): extra kernels = the "
                           "profiler's GEMM kernels per call - 1; elementwise = streaming time / measured time")
    return {"batched_gemm": curves, "eager_decode": eager}


def with_decode_terms(profile: Profile, terms: dict) -> Profile:
    if not terms:
        return profile
    return dataclasses.replace(profile, batched_gemm=dict(terms["batched_gemm"]),
                               eager_decode=dict(terms["eager_decode"]))


def held_out_errors(gpu: str, profile: Profile, root: Path | str | None = None) -> dict | None:
    """Predicted against measured GEMM-kernel time of the batched GEMM rows, held out and fitted:
    {"held_out": {"num_cases", "median_abs_rel_error", "p90_abs_rel_error"}, "fit": {...}, "cases": [...]}."""
    root = rec.records_root() if root is None else root
    df = load(gpu, root)
    if df is None or not profile.batched_gemm:
        return None
    g = gpu_spec(gpu)
    cases = []
    for _, r in _bmm(df).iterrows():
        pred = predict_bmm_s(r, profile, g)
        cases.append({"op": r["op"], "model": r["model"], "batch": int(r["batch"]),
                      "cache_len": None if pd.isna(r["cache_len"]) else int(r["cache_len"]),
                      "align_elems": int(r["align_elems"]), "measured_s": float(r["gemm_time_s"]),
                      "predicted_s": pred, "rel_error": pred / float(r["gemm_time_s"]) - 1.0,
                      "held_out": bool(r["held_out"])})

    def summary(sel):
        e = np.abs([c["rel_error"] for c in sel])
        return {"num_cases": len(sel), "median_abs_rel_error": float(np.median(e)) if len(e) else None,
                "p90_abs_rel_error": float(np.percentile(e, 90)) if len(e) else None}
    return {"held_out": summary([c for c in cases if c["held_out"]]),
            "fit": summary([c for c in cases if not c["held_out"]]), "cases": cases}


DRIFT = "decode_drift.csv"
DRIFT_WARMUP = 3


def drift_rounds(gpu: str, root: Path | str | None = None) -> list[dict]:
    """Per (batch, round) of decode_drift.csv: the condition, the median step time of the steps a
    model.csv decode row times (after DRIFT_WARMUP), the median host dispatch seconds, SM clock,
    power and CPU clock over those steps, and the P-states seen ([] where not measured)."""
    root = rec.records_root() if root is None else root
    path = Path(root) / gpu / DRIFT
    if not csv_exists(path):
        return []
    df = read_csv(path)
    out = []
    for (batch, rnd), g in df.groupby(["batch", "round"], sort=True):
        timed = g[g["step"] >= DRIFT_WARMUP]
        out.append({"batch": int(batch), "round": int(rnd), "condition": str(g["condition"].iloc[0]),
                    "time_s": float(timed["time_s"].median()), "host_s": float(timed["host_s"].median()),
                    "host_cpu_s": float(timed["host_cpu_s"].median()) if "host_cpu_s" in timed else float("nan"),
                    "sm_clock_mhz": float(timed["sm_clock_mhz"].median()),
                    "power_w": float(timed["power_now_w"].median()),
                    "cpu_clock_mhz": float(timed["cpu_clock_mhz"].median()),
                    "pstates": sorted({int(p) for p in timed["pstate"].dropna()})})
    return out


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.decode_gemm", description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="append", help="GPU folder(s) (default: all with decode_gemm.csv)")
    ap.add_argument("--update", action="store_true",
                    help="write the batched GEMM curves and cuBLAS kernel tables into the committed profiles")
    args = ap.parse_args(argv)
    profiles_dir = Path(str(PROFILES))
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    gpus = args.gpu or [g for g in rec.gpu_dirs() if csv_exists(root / g / FAMILY)]
    for gpu in gpus:
        path = profiles_dir / f"{gpu}.json"
        data = json.loads(path.read_text())
        prof = profile_from_json(data)
        terms = decode_terms(gpu, prof, root)
        new = with_decode_terms(prof, terms)
        print(f"{gpu} eager_decode: {json.dumps(terms['eager_decode'].get('elementwise_eff', {}))}")
        for key, c in terms["batched_gemm"].items():
            print(f"{gpu} {key}: e_max {c.e_max:.3f} m_half {c.m_half:.1f} n_half {c.n_half:.1f} "
                  f"k_half {c.k_half:.1f} wave_tile {c.wave_tile}")
        errs = held_out_errors(gpu, new, root)
        if errs:
            for part in ("fit", "held_out"):
                s = errs[part]
                print(f"{gpu} {part}: n={s['num_cases']} median {s['median_abs_rel_error']:.1%} "
                      f"P90 {s['p90_abs_rel_error']:.1%}")
        for r in drift_rounds(gpu, root):
            print(f"{gpu} drift B={r['batch']:3d} round {r['round']:2d} {r['condition']:12} "
                  f"{r['time_s'] * 1e3:6.3f} ms (host {r['host_s'] * 1e3:6.3f} ms, CPU {r['host_cpu_s'] * 1e3:6.3f} ms) SM {r['sm_clock_mhz']:5.0f} MHz "
                  f"{r['power_w']:4.0f} W CPU {r['cpu_clock_mhz']:5.0f} MHz P{r['pstates']}")
        if args.update:
            rec.write_profile_terms(path, data, {
                "batched_gemm": {k: vars(c) for k, c in terms["batched_gemm"].items()},
                "eager_decode": terms["eager_decode"]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

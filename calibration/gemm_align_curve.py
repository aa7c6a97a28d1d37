"""The alignment term's third form (session s24align3; rule, form and criteria:
docs/notes/s24align3_rule.md, committed before its held-out records existed): each cutlass kernel
family's own rate curve (twin.costs.gemm_alignment.curve_rate_flops_per_s), fitted on every
s23align and s23align2 record, replacing a misaligned GEMM's compute term.

Fit, per kernel family (align1: cutlass sm75; align2: cutlass sm80), least squares on the log of the
achieved rate flops / (time - the profile's launch time) of every misaligned BF16 row:
    log rate = log quant + c[family/pass/mask] + fill_exp log(fill) + k_exp log(k / (k + K0))
               + mn_exp log(m n / MN_REF)
quant: the real share of the tiles' padded output (exponent 1, not fitted); fill: the last wave's occupancy of the family's tile for the pass (the tile the profiler named most
often in the family's fitting rows of that pass) over the GPU's SMs. Bounds: each feature's range over
the family's fitting rows, quant's too (the twin clamps to them). Scored by leave-one-layer-out on the fitting rows
and (where they exist) on the s24align3 held-out rows: each GEMM alone (the twin's gemm_time_s) and
each linear layer's training triple (the sum of its three GEMMs' gemm_time_s), with the switch off,
with the second form (s23align2's pattern factors) and with this one.
Writes the "curve_fits" key of twin/data/gemm_alignment.json.

    python -m calibration.gemm_align_curve [--write] [--judge]
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import gemm_align_fit as gf
from twin.core import atomic
from twin.costs import compute
from twin.costs import gemm_alignment
from twin.costs.gemm_alignment import curve_features, curve_key, kernel_family, operand_alignments
from twin.costs.profile import load_profile
from twin.core.specs import get_gpu

FIT_RECORDS = (Path("s23align") / "gemm_align.csv", Path("s23align2") / "gemm_align.csv")
HELD_RECORDS = Path("s24align3") / "gemm_align.csv"
GEMM_PASSES = ("fwd", "dgrad", "wgrad")
LAYER_PASS = "layer"   # real.bench.gemm_align.LAYER_PASS: a linear layer's three GEMMs back to back
K0 = 256.0             # the contraction length at which the prologue/epilogue share halves the rate
MN_REF = 1.0e7         # the output-size feature's reference (numerics only)
FEATURES = ("fill", "k", "mn", "quant")   # each clamped by the twin to the fitting rows' range


def kernel_tile(kernels: str) -> tuple[int, int] | None:
    """The output tile (rows, columns) of the cutlass GEMM a row's kernel names hold, None where none."""
    m = re.search(r"s\d+gemm_bf16_(\d+)x(\d+)_", kernels)
    return (int(m.group(1)), int(m.group(2))) if m else None


def load(gpu: str, relpath: Path) -> pd.DataFrame:
    """A campaign's timed BF16 rows with their operand alignments' family and curve key (GEMM rows)."""
    df = gf.records(gpu, relpath, {})
    if df.empty:
        return df
    gemm = df["pass"].isin(GEMM_PASSES)
    aligns = [operand_alignments(o, i, p) if g else (8, 8, 8)
              for o, i, p, g in zip(df["outputs"], df["inputs"], df["pass"], gemm)]
    df["family"] = [kernel_family(a) if g else "" for a, g in zip(aligns, gemm)]
    df["key"] = [curve_key(a, p) if g else "" for a, p, g in zip(aligns, df["pass"], gemm)]
    return df


def fitting_rows(gpu: str) -> pd.DataFrame:
    parts = [load(gpu, p) for p in FIT_RECORDS]
    parts = [p for p in parts if not p.empty]
    if not parts:
        return pd.DataFrame()
    df = pd.concat(parts, ignore_index=True)
    return df[df["family"].isin(["align1", "align2"])].reset_index(drop=True)


def family_tiles(rows: pd.DataFrame) -> dict:
    """pass -> the tile the profiler named most often in these rows of that pass."""
    out = {}
    for pass_, g in rows.groupby("pass"):
        tiles = Counter(t for t in (kernel_tile(k) for k in g["kernels"]) if t)
        out[pass_] = list(tiles.most_common(1)[0][0])
    return out


def feature_row(r, tiles: dict, num_sms: int) -> dict:
    return curve_features(int(r["m"]), int(r["n"]), int(r["k"]), tuple(tiles[r["pass"]]), num_sms)


def design(rows: pd.DataFrame, keys: list[str], tiles: dict, num_sms: int) -> np.ndarray:
    """Indicator columns of the keys, then log fill, log k / (k + K0), log m n / MN_REF."""
    out = []
    for _, r in rows.iterrows():
        f = feature_row(r, tiles, num_sms)
        out.append([1.0 if r["key"] == k else 0.0 for k in keys]
                   + [math.log(f["fill"]), math.log(f["k"] / (f["k"] + K0)), math.log(f["mn"] / MN_REF)])
    return np.array(out)


def fit_curves(rows: pd.DataFrame, launch_s: float, num_sms: int) -> dict:
    """The curve table (twin.costs.gemm_alignment.curve_rate_flops_per_s's "curve_fits" entry)."""
    constants, families = {}, {}
    for family, g in rows.groupby("family"):
        keys = sorted(g["key"].unique())
        tiles = family_tiles(g)
        x = design(g, keys, tiles, num_sms)
        quant = np.array([feature_row(r, tiles, num_sms)["quant"] for _, r in g.iterrows()])
        y = np.log(g["flops"].to_numpy() / (g["time_s"].to_numpy() - launch_s) / quant)
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        constants.update({k: float(c) for k, c in zip(keys, coef)})
        feats = pd.DataFrame([feature_row(r, tiles, num_sms) for _, r in g.iterrows()])[list(FEATURES)]
        families[family] = {"tiles": tiles, "fill_exp": float(coef[-3]), "k_exp": float(coef[-2]),
                            "mn_exp": float(coef[-1]), "rows": int(len(g)),
                            "bounds_low": {f: float(feats[f].min()) for f in FEATURES},
                            "bounds_high": {f: float(feats[f].max()) for f in FEATURES}}
    return {"constants": constants, "families": families, "k0": K0, "mn_ref": MN_REF}


@contextmanager
def curve_table(gpu: str, fit: dict | None):
    """gemm_alignment's table with `fit` as the profile's curve fit (None: the table as written)."""
    if fit is None:
        yield
        return
    table = {**gemm_alignment._table(), "curve_fits": {gpu: fit}}
    saved = gemm_alignment._table
    gemm_alignment._table = lambda: table
    try:
        yield
    finally:
        gemm_alignment._table = saved


@contextmanager
def switches(curve: bool = False, pattern: bool = False):
    """The twin with the curve and pattern switches as given and the class-factor switch (ADOPT_GEMM_ALIGNMENT) off,
    so each form is scored alone; every switch restored after."""
    saved = compute.ADOPT_GEMM_ALIGNMENT_CURVE, compute.ADOPT_GEMM_ALIGNMENT_PATTERN, compute.ADOPT_GEMM_ALIGNMENT
    compute.ADOPT_GEMM_ALIGNMENT_CURVE, compute.ADOPT_GEMM_ALIGNMENT_PATTERN = curve, pattern
    compute.ADOPT_GEMM_ALIGNMENT = False
    try:
        yield
    finally:
        compute.ADOPT_GEMM_ALIGNMENT_CURVE, compute.ADOPT_GEMM_ALIGNMENT_PATTERN, compute.ADOPT_GEMM_ALIGNMENT = saved


def gemm_s(gpu: str, m: int, n: int, k: int, pass_: str, outputs: int, inputs: int) -> float:
    return compute.gemm_time_s(m, n, k, "bf16", get_gpu(gpu), load_profile(gpu), pass_=pass_, widths=(outputs, inputs))


def twin_time_s(r, gpu: str) -> float:
    """The twin's time of a record's row under the switches as set: a GEMM's gemm_time_s, a layer
    row's three GEMMs' sum (real.bench.gemm_align.gemm_dims's m, n, k of each pass)."""
    t, o, i = int(r["tokens"]), int(r["outputs"]), int(r["inputs"])
    dims = {"fwd": (t, o, i), "dgrad": (t, i, o), "wgrad": (o, i, t)}
    passes = GEMM_PASSES if r["pass"] == LAYER_PASS else (r["pass"],)
    return sum(gemm_s(gpu, *dims[p], p, o, i) for p in passes)


def errors(rows: pd.DataFrame, gpu: str, **switch) -> np.ndarray:
    with switches(**switch):
        pred = np.array([twin_time_s(r, gpu) for _, r in rows.iterrows()])
    return pred / rows["time_s"].to_numpy() - 1.0


def leave_one_layer_out(rows: pd.DataFrame, gpu: str) -> dict:
    """Each misaligned fitting layer's rows under the curves fitted on the other layers."""
    prof, spec = load_profile(gpu), get_gpu(gpu)
    errs = []
    for layer in sorted(rows["layer"].unique()):
        fit = fit_curves(rows[rows["layer"] != layer], prof.launch_s, spec.num_sms)
        with curve_table(gpu, fit):
            errs.append(errors(rows[rows["layer"] == layer], gpu, curve=True))
    return gf.summary(np.concatenate(errs) if errs else np.array([]))


def misaligned_layer(outputs: int, inputs: int) -> bool:
    return min(gemm_alignment.align_elements(outputs), gemm_alignment.align_elements(inputs)) < 8


def judge(gpu: str) -> dict:
    """The rule's criteria 1-2 figures on the s24align3 rows (the table as written)."""
    held = load(gpu, HELD_RECORDS)
    if held.empty:
        return {}
    mis = np.array([misaligned_layer(o, i) for o, i in zip(held["outputs"], held["inputs"])])
    layer = (held["pass"] == LAYER_PASS).to_numpy()
    out = {"gpu_name": str(held["gpu_name"].iloc[0])}
    for name, sel in (("gemm_misaligned", mis & ~layer), ("layer_misaligned", mis & layer),
                      ("gemm_aligned", ~mis & ~layer), ("layer_aligned", ~mis & layer)):
        rows = held[sel]
        errs = {form: errors(rows, gpu, **sw) for form, sw in
                (("off", {}), ("pattern", {"pattern": True}), ("curve", {"curve": True}))}
        out[name] = {form: gf.summary(e) for form, e in errs.items()}
        if name.endswith("_aligned") and len(rows):   # criterion 3: today's time, untouched by the switch
            out[name]["curve_max_rel_change"] = float(np.max(np.abs((1 + errs["curve"]) / (1 + errs["off"]) - 1)))
    return out


def row_errors(gpu: str) -> pd.DataFrame:
    """Each misaligned s24align3 row's measured time and the twin's error under each form (the outcome's
    per-layer figures)."""
    held = load(gpu, HELD_RECORDS)
    if held.empty:
        return held
    held = held[[misaligned_layer(o, i) for o, i in zip(held["outputs"], held["inputs"])]].copy()
    for form, sw in (("off", {}), ("pattern", {"pattern": True}), ("curve", {"curve": True})):
        held[f"error_{form}"] = errors(held, gpu, **sw)
    return held[["layer", "pass", "tokens", "m", "n", "k", "time_s", "kernels", "error_off", "error_pattern",
                 "error_curve"]]


def fit_gpu(gpu: str) -> dict | None:
    rows = fitting_rows(gpu)
    if rows.empty:
        return None
    prof, spec = load_profile(gpu), get_gpu(gpu)
    fit = fit_curves(rows, prof.launch_s, spec.num_sms)
    fit.update(fit_rows=int(len(rows)), gpu_name=str(rows["gpu_name"].iloc[0]), num_sms=int(spec.num_sms),
               launch_s=float(prof.launch_s))
    with curve_table(gpu, fit):
        fit["fit_error"] = gf.summary(errors(rows, gpu, curve=True))
    fit["fit_leave_one_layer_out"] = leave_one_layer_out(rows, gpu)
    return fit


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.gemm_align_curve", description=__doc__.splitlines()[0])
    ap.add_argument("--write", action="store_true", help=f"write {gf.TABLE.name}'s curve_fits")
    ap.add_argument("--judge", action="store_true", help="score the s24align3 held-out rows (table as written)")
    args = ap.parse_args(argv)
    fits = {g: f for g in gf.GPUS if (f := fit_gpu(g)) is not None}
    print(json.dumps(fits, indent=1))
    if args.write:
        table = json.loads(gf.TABLE.read_text())
        table["curve_fits"] = fits
        atomic.write_text(gf.TABLE, json.dumps(table, indent=1, sort_keys=True) + "\n")
        gemm_alignment._table.cache_clear()
    if args.judge:
        print(json.dumps({g: judge(g) for g in fits}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""SMs reserved for communication: the twin's model against measurements (sm_reserve.csv).

The twin slows a compute kernel that shares the GPU with communication by the share of SMs the
communication holds, plus the tile waves the remaining SMs run (`twin.costs.compute.gemm_time_s`
with `sm_frac`): DeepSeek tells its GEMMs how many SMs they may use (V3 §3.2.2 reserves 20 of
132 for communication). `real/bench.py` section `sm_reserve` measures the same GEMMs (the V3
projections at 4,096 tokens) three ways per reserved SM count:

  spin      beside a kernel holding the SMs without memory traffic; the GEMM is not told;
  copy      beside a kernel holding them and streaming HBM -> HBM (a comm kernel's SM work);
  carveout  alone, with cuBLAS told to leave the SMs free (cuBLAS honours it for FP8 only).

A told kernel (carveout) and an untold one beside a holder (spin) bracket what DeepGEMM, told
its SM count, does; the twin should lie between them. The holder's own span beside the GEMMs
against alone is the other direction: how much slower an SM-bound data mover on the reserved SMs
runs while GEMMs share the GPU (its clock drops to the power limit's). Never a fitting input.
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from calibration import records as rec
from calibration.predict import profile_for_label, twin_precision
from calibration.records_io import csv_exists, read_csv
from twin.costs import compute
from twin.costs.profile import Profile, load_profile
from twin.core.specs import get_gpu

MODES = ("carveout", "spin", "copy")
V3_RESERVED_SMS = 20


def load(gpu: str, root: Path | str | None = None) -> pd.DataFrame:
    """Usable rows of a GPU's sm_reserve.csv (empty if none): holder rows whose GEMMs ran inside
    and across the holder's whole span, and every carveout row."""
    root = rec.records_root() if root is None else root
    path = Path(root) / gpu / "sm_reserve.csv"
    if not csv_exists(path):
        return pd.DataFrame()
    df = read_csv(path)
    covered = df["holder_covered"].astype(str).str.lower() == "true"
    keep = (df["mode"] == "carveout") | (covered & (df["replays_inside"] > 0))
    return df[keep & (df["time_s"] > 0) & (df["time_solo_s"] > 0)].reset_index(drop=True)


def with_slowdowns(df: pd.DataFrame) -> pd.DataFrame:
    """`load` rows plus `measured` (GEMM time with SMs held / its paired time alone) and `holder`
    (the holder's span beside the GEMMs / alone; NaN for carveout rows)."""
    return df.assign(measured=df["time_s"] / df["time_solo_s"], holder=df["holder_s"] / df["holder_solo_s"])


def twin_slowdown(m: int, n: int, k: int, precision: str, reserved_sms: int, gpu_name: str, profile: Profile) -> float:
    """The twin's GEMM time with `reserved_sms` SMs held over its time with all SMs."""
    gpu = get_gpu(gpu_name)
    prof, prec = profile_for_label(profile, precision), twin_precision(precision)
    frac = compute.sm_fraction(gpu, reserved_sms)
    return compute.gemm_time_s(m, n, k, prec, gpu, prof, sm_frac=frac) / compute.gemm_time_s(m, n, k, prec, gpu, prof)


def compare(gpu: str, profile: Profile | None = None, root: Path | str | None = None) -> list[dict]:
    """Per (mode, precision, reserved SMs): the measured GEMM slowdown (median over shapes and
    trials of time beside / paired solo time), the twin's, and the holder's own slowdown."""
    root = rec.records_root() if root is None else root
    df = load(gpu, root)
    if df.empty:
        return []
    profile = profile or load_profile(gpu)
    df = with_slowdowns(df).assign(
        twin=[twin_slowdown(int(r.m), int(r.n), int(r.k), r.precision, int(r.reserved_sms), gpu, profile)
              for r in df.itertuples()])
    rows = []
    for (mode, prec, sms), g in df.groupby(["mode", "precision", "reserved_sms"]):
        measured, twin = float(g["measured"].median()), float(g["twin"].median())
        holder = float(g["holder"].median()) if mode != "carveout" else None
        rows.append({"gpu": gpu, "mode": mode, "precision": prec, "reserved_sms": int(sms), "cases": len(g),
                     "measured_slowdown": measured, "twin_slowdown": twin, "rel_error": twin / measured - 1.0,
                     "holder_slowdown_beside_gemms": holder,
                     "sm_clock_mhz_median": float(g["sm_clock_mhz"].median())})
    return sorted(rows, key=lambda r: (MODES.index(r["mode"]), r["precision"], r["reserved_sms"]))


def bracket(rows: list[dict], precision: str = "fp8-blockwise", reserved_sms: int = V3_RESERVED_SMS) -> dict:
    """Told (carveout) and untold (spin) measured slowdowns at one SM count, and the twin's."""
    pick = {r["mode"]: r for r in rows if r["precision"] == precision and r["reserved_sms"] == reserved_sms}
    return {"told": pick["carveout"]["measured_slowdown"], "untold": pick["spin"]["measured_slowdown"],
            "twin": pick["spin"]["twin_slowdown"]}


def format_table(rows: list[dict]) -> str:
    if not rows:
        return "SMs reserved for communication: no sm_reserve.csv records"
    lines = [f"SMs reserved for communication ({rows[0]['gpu']}): GEMM time with SMs held / alone; holder beside GEMMs / alone",
             f"{'mode':9} {'precision':14} {'SMs':>4} {'measured':>9} {'twin':>7} {'error':>8} {'holder':>7}"]
    for r in rows:
        holder = "" if r["holder_slowdown_beside_gemms"] is None else f"{r['holder_slowdown_beside_gemms']:.2f}x"
        lines.append(f"{r['mode']:9} {r['precision']:14} {r['reserved_sms']:>4} {r['measured_slowdown']:>8.2f}x "
                     f"{r['twin_slowdown']:>6.2f}x {r['rel_error']:>+8.1%} {holder:>7}")
    b = bracket(rows) if any(r["precision"] == "fp8-blockwise" for r in rows) else None
    if b:
        verdict = "inside" if min(b["told"], b["untold"]) <= b["twin"] <= max(b["told"], b["untold"]) else "OUTSIDE"
        lines.append(f"at V3's {V3_RESERVED_SMS} SMs, FP8 blockwise: told {b['told']:.2f}x, untold {b['untold']:.2f}x, "
                     f"twin {b['twin']:.2f}x ({verdict} the bracket)")
    return "\n".join(lines)


def slowdown_png(rows_by_gpu: dict[str, list[dict]]) -> bytes:
    """Slowdown against reserved SMs: measured per mode and the twin, per GPU and precision."""
    import matplotlib  # lazy: heavy to import (~0.5 s) and only this plot needs it
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # lazy: as above, and after the Agg backend is chosen

    gpus = [g for g, rows in rows_by_gpu.items() if rows]
    precs = sorted({r["precision"] for g in gpus for r in rows_by_gpu[g]})
    fig, axes = plt.subplots(len(gpus), len(precs), figsize=(4.2 * len(precs), 3.4 * len(gpus)), squeeze=False)
    for i, g in enumerate(gpus):
        for j, p in enumerate(precs):
            ax = axes[i][j]
            rows = [r for r in rows_by_gpu[g] if r["precision"] == p]
            for mode, style in (("carveout", "s--"), ("spin", "o-"), ("copy", "^-")):
                pts = sorted((r["reserved_sms"], r["measured_slowdown"]) for r in rows if r["mode"] == mode)
                if pts:
                    ax.plot(*zip(*pts), style, label=f"measured: {mode}")
            twin = sorted((r["reserved_sms"], r["twin_slowdown"]) for r in rows if r["mode"] == "spin")
            if twin:
                ax.plot(*zip(*twin), "k-", lw=2, label="twin")
            ax.axvline(V3_RESERVED_SMS, color="grey", lw=0.8, ls=":")
            ax.set_title(f"{g.upper()} {p}", fontsize=9)
            ax.set_xlabel("SMs held by communication")
            ax.set_ylabel("GEMM time / alone")
            ax.grid(alpha=0.3)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


"""The SM clock of a GPU run below the power limit it was measured at, from our own measurements.

Published runs sometimes cap their GPUs lower than we measured them: torchtitan's Llama 3.1
benchmarks ran H100s at "the default 500W power limit" (benchmarks/llama3_h100_202412_torchtitan.md,
Hardware), our H100 records were taken at 700 W. Under sustained load a GEMM holds the GPU at its
power limit (calibration/measurements/h100/sustained.csv: 713 W at a median 1,350 MHz in the
second half of 30 s of BF16 GEMMs), so a lower limit lowers the clock, and compute-bound kernels
slow in proportion to it.

The model (an assumption, stated once here): the GPU draws a static part, taken as the measured
idle power (power.csv, row `idle`), plus a dynamic part that follows the CMOS law P = C V^2 f with
the voltage rising in proportion to the clock over the DVFS range, so dynamic power grows as f^3:

    f_cap / f_measured = ((P_cap - P_idle) / (P_measured - P_idle)) ** (1 / 3)

capped at the maximum clock. A kernel drawing less than the cap at the maximum clock (the HBM copy:
477 W at 1,980 MHz) is not slowed. With exponent 2 instead of 3 (voltage rising more slowly than
the clock) the GEMM factor would be 0.80 instead of 0.86: the spread this assumption carries.

Measured in part (s14tt, docs/notes/s14tt_rule.md; h100/duty_sweep.csv, a duty sweep at our 700 W
limit): at the maximum clock the board draws the idle power plus the kernel's share (the static part
holds); the law over the lower clocks could not be fitted from the sweep (the cap acts within its
periods), so the measured law (`power_law(adopt=True)`) is not adopted and the assumption stands.

`twin/data/hardware.toml` carries the result for the 500 W H100 as `clock_frac`; a test keeps the
catalog figure equal to this derivation (tests/calibration/test_published_runs.py), so it moves
only when the measurements do. Never fitted to a published throughput.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import least_squares

from calibration import entry
from calibration import power_activity
from calibration import records as rec
from calibration.records_io import csv_exists, read_csv
from twin.core.specs import get_gpu
from twin.costs.profile import PROFILES

DYNAMIC_POWER_EXPONENT = 3.0   # P_dynamic ~ f^3 (V ~ f): see the module docstring
MAX_SM_CLOCK_MHZ = 1980.0      # H100/H200 SXM maximum SM clock (env.json max_sm_clock_mhz)

# The law measured (s14tt, docs/notes/s14tt_rule.md): the static part and the exponent from a duty sweep
# at our own limit (campaign s14tt, real/bench/duty_sweep.py: a kernel run a fraction d of the time
# holds the board at the limit with a clock f_d that rises as d falls). Fitted on the BF16 GEMM's
# settled windows: P = P_s + d D (f / MAX_SM_CLOCK_MHZ)^k, P_s taken constant over the clock range (an
# upper bound at the lower clocks: leakage falls with the voltage; the idle power is the lower bound).
# Adopted only by the rule's criteria on the records themselves (adoption_criteria); off, the law is
# the assumption above (idle power, DYNAMIC_POWER_EXPONENT).
# Outcome (docs/notes/s14tt_rule.md): criteria 2 and 3 fail on the committed records (h100/duty_sweep.csv:
# k 1.20, rms 26.7 W; FA2 held out median 7.5%, max 17.2%): the cap acts on a window shorter than the
# sweep's periods, so the limited windows do not follow the averaged law. Not adopted.
ADOPT_MEASURED_POWER_LAW = False
# The law's exponent measured below a kernel's own clock at our limit (s15tt, docs/notes/s15tt_rule.md part C;
# calibration.copy_load): the BF16 GEMM beside copy-engine traffic, the static part the idle power. Adopted
# only by that rule's criteria (records M1-M6, rows R1-R5); off, the assumed exponent stands.
ADOPT_COPY_LOAD_LAW = False
# The law's local exponent below the BF16 GEMM's own capped clock (s22tt, docs/notes/s22tt_rule.md;
# calibration.power_activity): the same GEMM on data of different activity, and FP8, each held at our
# limit, give points of the chip's dynamic-power curve h(f); the static part stays the idle power.
# Adopted only by that rule's criteria (records M1-M3, held-out H1, rows R1); off, the assumed exponent.
ADOPT_ACTIVITY_POWER_LAW = False
DUTY_RECORDS = "duty_sweep.csv"
DUTY_SETTLED_WINDOW = 3        # a 5 s point's windows from the 3rd second on (the clock has settled)
POWER_CAP_REASON = 0x4         # nvmlClocksEventReasonSwPowerCap
LAW_KERNEL, CHECK_KERNEL = "gemm m=8192", "attention flash"   # fitted on the GEMM, checked on FA2


@dataclass(frozen=True)
class PowerLaw:
    """P = static_w + d x D (f / MAX_SM_CLOCK_MHZ)^exponent: the board power of a kernel run a fraction d
    of the time at SM clock f (D: the kernel's dynamic power at the maximum clock, `dynamic_w`)."""
    static_w: float
    exponent: float
    dynamic_w: float = math.nan
    rms_w: float = math.nan
    source: str = "assumed"


def settled_duty_windows(df: pd.DataFrame, kernel: str) -> pd.DataFrame:
    """A duty_sweep.csv's settled windows of the kernels whose name starts with `kernel`."""
    rows = df[df["kernel"].astype(str).str.startswith(kernel) & (df["window"] >= DUTY_SETTLED_WINDOW)]
    return rows.dropna(subset=["duty_frac", "sm_clock_mhz", "power_w"])


def is_power_capped(reasons) -> np.ndarray:
    """NVML's clock-event reasons (floats, NaN where unread) -> whether the software power cap is set."""
    r = np.nan_to_num(np.asarray(reasons, dtype=float), nan=0.0).astype(np.int64)
    return (r & POWER_CAP_REASON) != 0


def fit_power_law(df: pd.DataFrame, kernel: str = LAW_KERNEL) -> PowerLaw:
    """Least squares of the settled windows' board power on (duty, clock): P_s, D and k."""
    w = settled_duty_windows(df, kernel)
    if len(w) < 4:
        raise ValueError(f"duty sweep: {len(w)} settled windows of {kernel!r}, need 4")
    d, f, p = (w[c].to_numpy(float) for c in ("duty_frac", "sm_clock_mhz", "power_w"))
    x = f / MAX_SM_CLOCK_MHZ

    def resid(v):
        return v[0] + d * v[1] * x ** v[2] - p
    fit = least_squares(resid, x0=[150.0, 1000.0, 3.0], bounds=([0.0, 1.0, 0.3], [700.0, 5000.0, 8.0]))
    rms = float(np.sqrt(np.mean(fit.fun ** 2)))
    return PowerLaw(float(fit.x[0]), float(fit.x[2]), float(fit.x[1]), rms, f"duty sweep of {kernel!r}")


def free_regime_line(df: pd.DataFrame, kernel: str, max_duty: float = 0.5) -> tuple[float, float, float]:
    """(P_s, D, rms W) of the line P = P_s + d D through a kernel's settled windows at the maximum clock
    without the power-cap reason and at duty <= max_duty: the regime the cap's time constant does not
    touch (s14tt's records: at duty 0.5-0.6 the GEMM is capped at a 539-619 W average, so the cap acts
    on a window shorter than the sweep's ~10-20 ms periods; the line's points are free of it)."""
    w = settled_duty_windows(df, kernel)
    free = w[~is_power_capped(w["clock_event_reasons"]) & (w["sm_clock_mhz"] >= MAX_SM_CLOCK_MHZ - 5)
             & (w["duty_target"] <= max_duty)]
    if len(free) < 2:
        raise ValueError(f"duty sweep: {len(free)} free windows of {kernel!r}")
    a = np.vstack([np.ones(len(free)), free["duty_frac"].to_numpy(float)]).T
    p = free["power_w"].to_numpy(float)
    coef, *_ = np.linalg.lstsq(a, p, rcond=None)
    return float(coef[0]), float(coef[1]), float(np.sqrt(np.mean((a @ coef - p) ** 2)))


def kernel_dynamic_w(df: pd.DataFrame, law: PowerLaw, kernel: str = CHECK_KERNEL) -> float:
    """A kernel's dynamic power at the maximum clock under `law`: the median over its free settled windows
    (no power-cap reason) of (P - P_s) / (d (f / f_max)^k)."""
    w = settled_duty_windows(df, kernel)
    free = w[~is_power_capped(w["clock_event_reasons"])]
    if free.empty:
        raise ValueError(f"duty sweep: no free windows of {kernel!r}")
    x = free["sm_clock_mhz"].to_numpy(float) / MAX_SM_CLOCK_MHZ
    dyn = (free["power_w"].to_numpy(float) - law.static_w) / (free["duty_frac"].to_numpy(float) * x ** law.exponent)
    return float(np.median(dyn))


def predicted_clock_mhz(law: PowerLaw, dynamic_w: float, duty: float, power_w: float) -> float:
    """The clock at which a kernel of dynamic power `dynamic_w` (at the maximum clock) run a fraction
    `duty` of the time draws `power_w` under `law`, at most the maximum clock."""
    x = ((power_w - law.static_w) / (duty * dynamic_w)) ** (1.0 / law.exponent)
    return min(MAX_SM_CLOCK_MHZ, MAX_SM_CLOCK_MHZ * x)


def law_check(df: pd.DataFrame, law: PowerLaw, kernel: str = CHECK_KERNEL) -> list[dict]:
    """The held-out kernel's power-limited settled windows: measured clock against the law's (its own
    dynamic power from its free windows, the law's static part and exponent)."""
    dyn = kernel_dynamic_w(df, law, kernel)
    w = settled_duty_windows(df, kernel)
    capped = w[is_power_capped(w["clock_event_reasons"])]
    out = []
    for r in capped.itertuples():
        pred = predicted_clock_mhz(law, dyn, r.duty_frac, r.power_w)
        out.append({"duty": r.duty_frac, "power_w": r.power_w, "clock_mhz": r.sm_clock_mhz,
                    "predicted_mhz": pred, "error": pred / r.sm_clock_mhz - 1.0})
    return out


def adoption_criteria(df: pd.DataFrame, power_limit_w: float) -> dict:
    """docs/notes/s14tt_rule.md's three criteria on a duty sweep: {name: (holds, figures)}."""
    law = fit_power_law(df)
    gemm = settled_duty_windows(df, LAW_KERNEL)
    capped = is_power_capped(gemm["clock_event_reasons"])
    by_point = gemm.assign(capped=capped).groupby("duty_target")
    limited = [t for t, g in by_point if g["capped"].all() and (g["sm_clock_mhz"] < 1900).all()]
    free = [t for t, g in by_point if not g["capped"].any()]
    full = gemm[gemm["duty_target"] >= 1.0]
    c1 = (abs(power_limit_w - 700.0) < 1.0 and len(full) > 0 and bool(is_power_capped(full["clock_event_reasons"]).all())
          and len(limited) >= 3 and len(free) >= 2)
    c2 = 1.0 <= law.exponent <= 4.0 and law.rms_w <= 15.0
    check = law_check(df, law)
    errs = [abs(r["error"]) for r in check]
    c3 = bool(errs) and float(np.median(errs)) <= 0.03 and max(errs) <= 0.06
    return {"1 limit, capped and free points": (c1, {"limit_w": power_limit_w, "limited_points": limited,
                                                      "free_points": free}),
            "2 fit": (c2, {"static_w": law.static_w, "exponent": law.exponent, "dynamic_w": law.dynamic_w,
                           "rms_w": law.rms_w}),
            "3 held-out FA2 clocks": (c3, {"median_abs_error": float(np.median(errs)) if errs else math.nan,
                                          "max_abs_error": max(errs) if errs else math.nan, "windows": len(errs)})}


def power_law(gpu: str = "h100", root: Path | str | None = None, adopt: bool | None = None,
              copy_load: bool | None = None, activity: bool | None = None) -> PowerLaw:
    """The law the derivations use: the duty sweep's (gpu/duty_sweep.csv) where adopted; else the idle
    power as the static part with the exponent measured beside copy traffic (gpu/copy_load.csv) where
    that is adopted, or from the activity sweep (gpu/power_activity.csv) where that is, else
    DYNAMIC_POWER_EXPONENT (assumed)."""
    root = rec.records_root() if root is None else root
    if ADOPT_MEASURED_POWER_LAW if adopt is None else adopt:
        return fit_power_law(read_csv(Path(root) / gpu / DUTY_RECORDS))
    if ADOPT_COPY_LOAD_LAW if copy_load is None else copy_load:
        from calibration.copy_load import COPY_LOAD_RECORDS, measured_exponent   # lazy: it reads only when adopted
        idle = idle_power_w(gpu, root)
        return PowerLaw(idle, measured_exponent(Path(root) / gpu / COPY_LOAD_RECORDS, idle), source="copy load")
    if ADOPT_ACTIVITY_POWER_LAW if activity is None else activity:
        records = read_csv(Path(root) / gpu / power_activity.ACTIVITY_RECORDS)
        return PowerLaw(idle_power_w(gpu, root), power_activity.law_exponent(records), source="activity sweep")
    return PowerLaw(idle_power_w(gpu, root), DYNAMIC_POWER_EXPONENT)


def idle_power_w(gpu: str, root: Path | str | None = None) -> float:
    """The measured idle power (power.csv, config `idle`)."""
    root = rec.records_root() if root is None else root
    p = read_csv(Path(root) / gpu / "power.csv")
    return float(p.loc[p["config"] == "idle", "power_w"].median())


def sustained_point(gpu: str, kernel: str = "gemm m=8192", precision: str = "bf16",
                    root: Path | str | None = None, file: str = "sustained.csv") -> tuple[float, float]:
    """(power W, SM clock MHz) of a kernel under sustained load: medians over the second half of
    the 30 s windows of sustained.csv (or `file`), as calibration.fit.sustained_ratios reads them."""
    root = rec.records_root() if root is None else root
    s = read_csv(Path(root) / gpu / file)
    rows = s[(s["phase"] == "sustained") & s["config"].str.startswith(kernel) & (s["precision"] == precision)]
    if rows.empty:
        raise ValueError(f"no sustained rows for {kernel!r} {precision} in {gpu}/sustained.csv")
    late = rows[rows["window"] >= rows["window"].max() / 2]
    return float(late["power_w"].median()), float(late["sm_clock_mhz"].median())


def clock_frac_at(power_limit_w: float, gpu: str = "h100", kernel: str = "gemm m=8192", precision: str = "bf16",
                  root: Path | str | None = None, law: PowerLaw | None = None,
                  file: str = "sustained.csv") -> float:
    """Sustained SM clock under `power_limit_w` over the clock measured at our limit, for one kernel,
    by `law` (default: power_law(gpu, root), the measured law where adopted, else the assumed one)."""
    root = rec.records_root() if root is None else root
    law = law or power_law(gpu, root)
    power_w, clock_mhz = sustained_point(gpu, kernel, precision, root, file)
    if power_limit_w >= power_w:
        return 1.0
    frac = ((power_limit_w - law.static_w) / (power_w - law.static_w)) ** (1.0 / law.exponent)
    return min(frac, MAX_SM_CLOCK_MHZ / clock_mhz)


# FlashAttention-2 at a torchtitan 8B CP rank's calls held at our limit (campaign s11cp8b,
# real/bench/cp_sustained.py): kept apart from sustained.csv, whose attention class median the
# profile's sustained ratio is fitted from
ATTENTION_RECORDS = "sustained_cp_attention.csv"
ATTENTION_KERNEL = "attention flash"


def attention_clock_frac_at(power_limit_w: float, gpu: str = "h100", root: Path | str | None = None,
                            law: PowerLaw | None = None, file: str = ATTENTION_RECORDS) -> float:
    """clock_frac_at for the attention kernel torchtitan's rows run (flash SDPA): the mean over
    the measured call shapes (a CP rank's causal 32K, 16K x 32K and 32K x 16K calls) of each one's
    sustained clock under `power_limit_w` over its sustained clock at our limit."""
    root = rec.records_root() if root is None else root
    s = read_csv(Path(root) / gpu / file)
    configs = sorted({c for c in s["config"] if str(c).startswith(ATTENTION_KERNEL)})
    if not configs:
        raise ValueError(f"no {ATTENTION_KERNEL!r} rows in {gpu}/{file}")
    law = law or power_law(gpu, root)
    fracs = [clock_frac_at(power_limit_w, gpu, c, "bf16", root, law, file) for c in configs]
    return sum(fracs) / len(fracs)


# FlashAttention-2 per pass and call length held at our limit (campaign s11fa2, real/bench/cp_sustained.py
# section fa2_sustained): the attention kernel of every torchtitan row, the only rows on a capped card.
#
# The rule (stated before the records were taken, s11fa2): for each pass p (fwd, bwd) and causal call
# length L, FA2's factor under a limit W against its burst speed is kernel_power_table's `factor`:
# F(p, L) = min(1, burst / steady time) x the f^3 law's clock fraction from FA2's own steady draw (the
# law clock_frac uses, the GEMM's draw replaced by FA2's). The twin's attention curves already carry
# the profile's sustained attention ratio (Profile.sustained["attention"], from another attention
# kernel), so the card's catalog carries F / that ratio: the attention kernels' speed under the limit
# over their speed in the sustained-load curves. If F spreads by at most FA2_LENGTH_SPREAD over all
# passes and lengths, one figure (attention_clock_frac, the mean); otherwise one per pass and length
# (attention_clock_fracs, interpolated in log length, held beyond the measured lengths).
FA2_RECORDS = "sustained_fa2_lengths.csv"
FA2_LENGTH_SPREAD = 0.02   # ~ the window-to-window spread of a held kernel's power in the law (+-25 W -> +-1.5%)


def _fa2_pass_length(config: str) -> tuple[str, int] | None:
    """(pass, call length) of an fa2_sustained config ('attention flash h=.. d=.. b=.. q=L kv=L causal fwd')."""
    words = config.split()
    if not config.startswith(ATTENTION_KERNEL) or words[-1] not in ("fwd", "bwd"):
        return None
    q = next(w for w in words if w.startswith("q="))
    return words[-1], int(q[2:])


def fa2_factors(power_limit_w: float, gpu: str = "h100", root: Path | str | None = None,
                law: PowerLaw | None = None, file: str = FA2_RECORDS) -> dict[tuple[str, int], float]:
    """(pass, call length) -> F, FA2's speed under `power_limit_w` over its burst speed (the rule above)."""
    root = rec.records_root() if root is None else root
    law = law or power_law(gpu, root)
    out = fa2_factors_of(kernel_power_table(Path(root) / gpu / file, power_limit_w, law.static_w, law.exponent))
    if not out:
        raise ValueError(f"no FA2 pass rows in {gpu}/{file}")
    return out


def fa2_factors_of(table: list[dict]) -> dict[tuple[str, int], float]:
    """The FA2 pass rows of a kernel_power_table: (pass, call length) -> min(1, burst/steady) x clock_frac."""
    return {key: min(1.0, r["sustained_ratio"]) * r["clock_frac"] for r in table
            if (key := _fa2_pass_length(r["config"])) is not None and not math.isnan(r["clock_frac"])}


def catalog_entry_of(factors: dict[tuple[str, int], float], ratio: float) -> dict:
    """The rule's hardware.toml fields from FA2's factors and the profile's attention ratio."""
    if max(factors.values()) - min(factors.values()) <= FA2_LENGTH_SPREAD:
        return {"attention_clock_frac": round(sum(factors.values()) / len(factors) / ratio, 3)}
    return {"attention_clock_fracs": [[p, n, round(f / ratio, 3)] for (p, n), f in sorted(factors.items())]}


def profile_attention_ratio(profile: str = "h100") -> float:
    """The profile's sustained attention ratio (burst / sustained time, at most 1) the twin's curves carry."""
    with PROFILES.joinpath(f"{profile}.json").open() as fh:
        return min(1.0, float(json.load(fh).get("sustained", {}).get("attention", 1.0)))


def fa2_catalog_entry(power_limit_w: float, gpu: str = "h100", root: Path | str | None = None,
                      profile: str = "h100", file: str = FA2_RECORDS, law: PowerLaw | None = None) -> dict:
    """The hardware.toml fields the rule gives a card at `power_limit_w` calibrated as `profile`:
    {"attention_clock_frac": a} where FA2's factor does not depend on pass or length, else
    {"attention_clock_fracs": [[pass, length, a], ...]} (a = F / the profile's attention ratio)."""
    root = rec.records_root() if root is None else root
    return catalog_entry_of(fa2_factors(power_limit_w, gpu, root, law=law, file=file), profile_attention_ratio(profile))


def kernel_power_table(path: Path | str, power_limit_w: float, idle_w: float,
                       exponent: float = DYNAMIC_POWER_EXPONENT) -> list[dict]:
    """Per kernel of a sustained.csv-style file (real/bench/power.py bench_sustained,
    real/bench/cp_sustained.py): its burst time, its steady time (mean of the second half of the
    held windows), burst / steady (`sustained_ratio`, as calibration.fit.sustained_ratios), the
    steady board power and SM clock, and under `power_limit_w` the clock fraction this module's
    law gives it (`clock_frac`) and the time factor against its burst speed
    (`factor` = sustained_ratio x clock_frac). Kernels without a power reading get NaN there."""
    df = read_csv(path)
    out = []
    for (config, prec), g in df.groupby(["config", "precision"], sort=False):
        burst, windows = g[g.phase == "burst"], g[g.phase == "sustained"]
        steady = windows[windows.window > windows.window.max() / 2]
        if burst.empty or steady.empty:
            continue
        burst_s, steady_s = float(burst.time_s.iloc[0]), float(steady.time_s.mean())
        power_w, clock = float(steady.power_w.median()), float(steady.sm_clock_mhz.median())
        if math.isnan(power_w) or math.isnan(clock):
            frac = math.nan
        elif power_limit_w >= power_w:
            frac = 1.0
        else:
            frac = min(((power_limit_w - idle_w) / (power_w - idle_w)) ** (1.0 / exponent), MAX_SM_CLOCK_MHZ / clock)
        out.append({"config": config, "precision": prec, "burst_s": burst_s, "steady_s": steady_s,
                    "sustained_ratio": burst_s / steady_s, "power_w": power_w, "sm_clock_mhz": clock,
                    "burst_sm_clock_mhz": float(burst.sm_clock_mhz.iloc[0]), "clock_frac": frac,
                    "factor": burst_s / steady_s * frac})
    return out


def twin_attention_factor(gpu_name: str = "h100-hbm2e-500w", direction: str = "fwd", seq_len: int = 32768) -> float:
    """The factor the twin applies to an attention kernel's burst speed on `gpu_name` (a call of
    `seq_len` keys, pass `direction`): the profile's sustained attention ratio
    (Profile.sustained['attention']) times the card's attention factor (GPUSpec.attention_flops_per_s
    over the nominal peak: attention_clock_frac(s) where set, else clock_frac)."""
    gpu = get_gpu(gpu_name)
    frac = gpu.attention_flops_per_s(direction, seq_len) / gpu.peak_bf16_flops_per_s
    return profile_attention_ratio(gpu.calibrated_as) * frac


def print_duty_sweep(path: Path, limit_w: float) -> int:
    """The duty sweep's points, the law fitted on the GEMM, the held-out FA2 check, the rule's
    criteria, and the 500 W card's figures under the law against the assumed one."""
    if not csv_exists(path):
        print(f"records: no duty_sweep.csv at {path}", file=sys.stderr)
        return 2
    df = read_csv(path)
    env_file = Path(path).parent / "env.json"
    env = json.loads(env_file.read_text()) if env_file.is_file() else {}
    limit = float(env.get("power_limit_w", math.nan))
    print(f"{path}: {env.get('gpu_name', '?')}, power limit {limit:.0f} W; idle rows: "
          + ", ".join(f"{p:.0f} W" for p in df.loc[df['kernel'] == 'idle', 'power_w']))
    pts = df[df["kernel"] != "idle"].groupby(["kernel", "duty_target"], sort=False)
    print(f"{'kernel':44s} {'target':>6s} {'duty':>6s} {'W':>5s} {'MHz':>5s} {'capped':>6s} {'ms/call':>8s} {'C':>4s}")
    for (kernel, target), g in pts:
        g = g[g["window"] >= DUTY_SETTLED_WINDOW]
        if g.empty:
            continue
        print(f"{kernel[:44]:44s} {target:6.2f} {g.duty_frac.median():6.3f} {g.power_w.median():5.0f} "
              f"{g.sm_clock_mhz.median():5.0f} {int(is_power_capped(g.clock_event_reasons).sum()):3d}/{len(g):<2d} "
              f"{g.time_s.median() * 1e3:8.3f} {g.temperature_c.median():4.0f}")
    crit = adoption_criteria(df, limit)
    for name, (ok, figs) in crit.items():
        print(f"criterion {name}: {'holds' if ok else 'FAILS'} {figs}")
    for kernel in (LAW_KERNEL, CHECK_KERNEL):
        p_s, dyn, rms = free_regime_line(df, kernel)
        print(f"free regime (max clock, no cap, duty <= 0.5) of {kernel!r}: P = {p_s:.0f} W + d x {dyn:.0f} W (rms {rms:.0f} W)")
    law = fit_power_law(df)
    for r in law_check(df, law):
        print(f"  FA2 held out: duty {r['duty']:.3f} {r['power_w']:.0f} W, {r['clock_mhz']:.0f} MHz, "
              f"law {r['predicted_mhz']:.0f} MHz ({r['error']:+.1%})")
    assumed = power_law(adopt=False)
    for name, lw in (("assumed", assumed), ("measured", law)):
        entry = fa2_catalog_entry(limit_w, law=lw)
        print(f"{name} law (P_s {lw.static_w:.0f} W, k {lw.exponent:.2f}): clock_frac at {limit_w:.0f} W "
              f"{clock_frac_at(limit_w, law=lw):.3f}; {entry}")
    return 0


def print_activity(path: Path, limit_w: float) -> int:
    """The activity sweep (s22tt): each kernel's capped point, free line and h, the local fit with the
    held-out GEMM left out, the rule's criteria, and the card's figures at `limit_w` under the fitted
    exponent against the assumed one."""
    if not csv_exists(path):
        print(f"records: no power_activity records at {path}", file=sys.stderr)
        return 2
    df = read_csv(path)
    points = power_activity.kernel_points(df)
    fit = power_activity.fit_local_exponent(points)
    print(f"{path}: {sorted(set(df['gpu_name'].astype(str)))}; idle {power_activity.idle_w(df):.0f} W")
    print(f"{'kernel':42s} {'prec':10s} {'W':>5s} {'MHz':>5s} {'cap':>5s} {'ms':>7s} {'D W':>6s} {'rms':>4s} "
          f"{'P0 W':>5s} {'h':>6s}")
    for p in points:
        print(f"{p['kernel'][:42]:42s} {p['precision']:10s} {p['power_w']:5.0f} {p['clock_mhz']:5.0f} "
              f"{p['capped_windows']:2d}/{p['full_windows']:<2d} {p['time_s'] * 1e3:7.3f} {p['dynamic_w']:6.0f} "
              f"{p['free_rms_w']:4.0f} {p['free_intercept_w']:5.0f} {p['h']:6.3f}" + ("  held out" if p["held_out"] else ""))
    print(f"local fit (capped, <= {power_activity.FIT_MAX_CLOCK_MHZ:.0f} MHz, held-out left out): k {fit['k']:.3f}, "
          f"n {fit['n']}, span {fit['span_mhz']:.0f} MHz, rms {fit['rms']:.3f}")
    for name, (ok, figs) in power_activity.criteria(df, points, fit).items():
        print(f"criterion {name}: {'holds' if ok else 'FAILS'} {figs}")
    if not math.isnan(fit["k"]) and fit["k"] > 0:
        for name, lw in (("assumed", power_law(adopt=False, copy_load=False, activity=False)),
                         ("activity", PowerLaw(idle_power_w("h100"), fit["k"], source="activity sweep"))):
            print(f"{name} law (P_s {lw.static_w:.0f} W, k {lw.exponent:.2f}): clock_frac at {limit_w:.0f} W "
                  f"{clock_frac_at(limit_w, law=lw):.3f}; {fa2_catalog_entry(limit_w, law=lw)}")
    return 0


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.power_cap",
                           description="kernels' sustained power and clock, and their speed under a lower power limit")
    ap.add_argument("records", type=Path, nargs="?", help="a sustained.csv file, or a folder holding one")
    ap.add_argument("--duty", type=Path, help="a duty_sweep.csv (campaign s14tt): fit the law, check it, the rule's criteria")
    ap.add_argument("--limit-w", type=float, default=500.0, help="the power limit to derive (torchtitan's 500 W)")
    ap.add_argument("--gpu", default="h100", help="the measurements folder whose idle power is taken")
    ap.add_argument("--activity", type=Path, help="a power_activity records file (campaign s22tt): the law's local exponent")
    args = ap.parse_args(argv)
    with entry.user_inputs("RECORDS / --duty / --activity", " ".join(str(p) for p in (args.records, args.duty, args.activity) if p) or None, "records files as the campaigns write them (sustained.csv, duty_sweep.csv, power_activity.csv)"):
        if args.duty is not None:
            return print_duty_sweep(args.duty, args.limit_w)
        if args.activity is not None:
            return print_activity(args.activity, args.limit_w)
        if args.records is None:
            ap.error("a sustained.csv (or folder) or --duty FILE")
        path = args.records / "sustained.csv" if args.records.is_dir() else args.records
        if not csv_exists(path):
            print(f"records: no sustained.csv at {path}", file=sys.stderr)
            return 2
        idle = idle_power_w(args.gpu)
        rows = kernel_power_table(path, args.limit_w, idle)
        print(f"{path}: idle {idle:.0f} W ({args.gpu}/power.csv); at a {args.limit_w:.0f} W limit, P_dyn ~ f^{DYNAMIC_POWER_EXPONENT:g}")
        print(f"{'kernel':70s} {'prec':11s} {'burst ms':>9s} {'steady ms':>9s} {'ratio':>6s} {'W':>5s} "
              f"{'MHz':>5s} {'clock':>6s} {'factor':>6s}")
        for r in rows:
            print(f"{r['config'][:70]:70s} {r['precision']:11s} {r['burst_s'] * 1e3:9.2f} {r['steady_s'] * 1e3:9.2f} "
                  f"{r['sustained_ratio']:6.3f} {r['power_w']:5.0f} {r['sm_clock_mhz']:5.0f} {r['clock_frac']:6.3f} "
                  f"{r['factor']:6.3f}")
        factors = fa2_factors_of(rows)
        if factors:
            ratio = profile_attention_ratio(get_gpu("h100-hbm2e-500w").calibrated_as)
            spread = max(factors.values()) - min(factors.values())
            print(f"FA2 per pass and length at {args.limit_w:.0f} W (min(1, burst/steady) x clock): "
                  + ", ".join(f"{p} {n} {f:.3f}" for (p, n), f in sorted(factors.items()))
                  + f"; spread {spread:.3f} ({'<=' if spread <= FA2_LENGTH_SPREAD else '>'} {FA2_LENGTH_SPREAD})")
            print(f"the rule's hardware.toml entry (over the profile's attention ratio {ratio:.3f}): "
                  f"{catalog_entry_of(factors, ratio)}")
        print(f"the twin's attention factor on h100-hbm2e-500w, 32K forward (profile attention ratio x the card's attention factor): "
              f"{twin_attention_factor():.3f}")
        return 0


if __name__ == "__main__":
    sys.exit(main())

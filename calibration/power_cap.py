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

`twin/data/hardware.toml` carries the result for the 500 W H100 as `clock_frac`; a test keeps the
catalog figure equal to this derivation (tests/calibration/test_published_runs.py), so it moves
only when the measurements do. Never fitted to a published throughput.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


from calibration import records as rec
from calibration.records_io import csv_exists, read_csv
from twin.core.specs import get_gpu
from twin.costs.profile import PROFILES

DYNAMIC_POWER_EXPONENT = 3.0   # P_dynamic ~ f^3 (V ~ f): see the module docstring
MAX_SM_CLOCK_MHZ = 1980.0      # H100/H200 SXM maximum SM clock (env.json max_sm_clock_mhz)


def idle_power_w(gpu: str, root: Path | str = rec.MEASUREMENTS_DIR) -> float:
    """The measured idle power (power.csv, config `idle`)."""
    p = read_csv(Path(root) / gpu / "power.csv")
    return float(p.loc[p["config"] == "idle", "power_w"].median())


def sustained_point(gpu: str, kernel: str = "gemm m=8192", precision: str = "bf16",
                    root: Path | str = rec.MEASUREMENTS_DIR, file: str = "sustained.csv") -> tuple[float, float]:
    """(power W, SM clock MHz) of a kernel under sustained load: medians over the second half of
    the 30 s windows of sustained.csv (or `file`), as calibration.fit.sustained_ratios reads them."""
    s = read_csv(Path(root) / gpu / file)
    rows = s[(s["phase"] == "sustained") & s["config"].str.startswith(kernel) & (s["precision"] == precision)]
    if rows.empty:
        raise ValueError(f"no sustained rows for {kernel!r} {precision} in {gpu}/sustained.csv")
    late = rows[rows["window"] >= rows["window"].max() / 2]
    return float(late["power_w"].median()), float(late["sm_clock_mhz"].median())


def clock_frac_at(power_limit_w: float, gpu: str = "h100", kernel: str = "gemm m=8192", precision: str = "bf16",
                  root: Path | str = rec.MEASUREMENTS_DIR, exponent: float = DYNAMIC_POWER_EXPONENT,
                  file: str = "sustained.csv") -> float:
    """Sustained SM clock under `power_limit_w` over the clock measured at our limit, for one kernel."""
    idle_w = idle_power_w(gpu, root)
    power_w, clock_mhz = sustained_point(gpu, kernel, precision, root, file)
    if power_limit_w >= power_w:
        return 1.0
    frac = ((power_limit_w - idle_w) / (power_w - idle_w)) ** (1.0 / exponent)
    return min(frac, MAX_SM_CLOCK_MHZ / clock_mhz)


# FlashAttention-2 at a torchtitan 8B CP rank's calls held at our limit (campaign s11cp8b,
# real/bench/cp_sustained.py): kept apart from sustained.csv, whose attention class median the
# profile's sustained ratio is fitted from
ATTENTION_RECORDS = "sustained_cp_attention.csv"
ATTENTION_KERNEL = "attention flash"


def attention_clock_frac_at(power_limit_w: float, gpu: str = "h100", root: Path | str = rec.MEASUREMENTS_DIR,
                            exponent: float = DYNAMIC_POWER_EXPONENT, file: str = ATTENTION_RECORDS) -> float:
    """clock_frac_at for the attention kernel torchtitan's rows run (flash SDPA): the mean over
    the measured call shapes (a CP rank's causal 32K, 16K x 32K and 32K x 16K calls) of each one's
    sustained clock under `power_limit_w` over its sustained clock at our limit."""
    s = read_csv(Path(root) / gpu / file)
    configs = sorted({c for c in s["config"] if str(c).startswith(ATTENTION_KERNEL)})
    if not configs:
        raise ValueError(f"no {ATTENTION_KERNEL!r} rows in {gpu}/{file}")
    fracs = [clock_frac_at(power_limit_w, gpu, c, "bf16", root, exponent, file) for c in configs]
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


def fa2_factors(power_limit_w: float, gpu: str = "h100", root: Path | str = rec.MEASUREMENTS_DIR,
                exponent: float = DYNAMIC_POWER_EXPONENT, file: str = FA2_RECORDS) -> dict[tuple[str, int], float]:
    """(pass, call length) -> F, FA2's speed under `power_limit_w` over its burst speed (the rule above)."""
    out = fa2_factors_of(kernel_power_table(Path(root) / gpu / file, power_limit_w, idle_power_w(gpu, root), exponent))
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


def fa2_catalog_entry(power_limit_w: float, gpu: str = "h100", root: Path | str = rec.MEASUREMENTS_DIR,
                      profile: str = "h100", file: str = FA2_RECORDS) -> dict:
    """The hardware.toml fields the rule gives a card at `power_limit_w` calibrated as `profile`:
    {"attention_clock_frac": a} where FA2's factor does not depend on pass or length, else
    {"attention_clock_fracs": [[pass, length, a], ...]} (a = F / the profile's attention ratio)."""
    return catalog_entry_of(fa2_factors(power_limit_w, gpu, root, file=file), profile_attention_ratio(profile))


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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m calibration.power_cap",
                                 description="kernels' sustained power and clock, and their speed under a lower power limit")
    ap.add_argument("records", type=Path, help="a sustained.csv file, or a folder holding one")
    ap.add_argument("--limit-w", type=float, default=500.0, help="the power limit to derive (torchtitan's 500 W)")
    ap.add_argument("--gpu", default="h100", help="the measurements folder whose idle power is taken")
    args = ap.parse_args(argv)
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

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

from pathlib import Path

import pandas as pd

from calibration import records as rec

DYNAMIC_POWER_EXPONENT = 3.0   # P_dynamic ~ f^3 (V ~ f): see the module docstring
MAX_SM_CLOCK_MHZ = 1980.0      # H100/H200 SXM maximum SM clock (env.json max_sm_clock_mhz)


def idle_power_w(gpu: str, root: Path | str = rec.MEASUREMENTS_DIR) -> float:
    """The measured idle power (power.csv, config `idle`)."""
    p = pd.read_csv(Path(root) / gpu / "power.csv")
    return float(p.loc[p["config"] == "idle", "power_w"].median())


def sustained_point(gpu: str, kernel: str = "gemm m=8192", precision: str = "bf16",
                    root: Path | str = rec.MEASUREMENTS_DIR) -> tuple[float, float]:
    """(power W, SM clock MHz) of a kernel under sustained load: medians over the second half of
    the 30 s windows of sustained.csv, as calibration.fit.sustained_ratios reads them."""
    s = pd.read_csv(Path(root) / gpu / "sustained.csv")
    rows = s[(s["phase"] == "sustained") & s["config"].str.startswith(kernel) & (s["precision"] == precision)]
    if rows.empty:
        raise ValueError(f"no sustained rows for {kernel!r} {precision} in {gpu}/sustained.csv")
    late = rows[rows["window"] >= rows["window"].max() / 2]
    return float(late["power_w"].median()), float(late["sm_clock_mhz"].median())


def clock_frac_at(power_limit_w: float, gpu: str = "h100", kernel: str = "gemm m=8192", precision: str = "bf16",
                  root: Path | str = rec.MEASUREMENTS_DIR, exponent: float = DYNAMIC_POWER_EXPONENT) -> float:
    """Sustained SM clock under `power_limit_w` over the clock measured at our limit, for one kernel."""
    idle_w = idle_power_w(gpu, root)
    power_w, clock_mhz = sustained_point(gpu, kernel, precision, root)
    if power_limit_w >= power_w:
        return 1.0
    frac = ((power_limit_w - idle_w) / (power_w - idle_w)) ** (1.0 / exponent)
    return min(frac, MAX_SM_CLOCK_MHZ / clock_mhz)

"""Grouped GEMMs inside layers at the in-layer SM clock (s16gg2, docs/notes/s16gg2_rule.md).

The grouped-GEMM curves are fitted on gemm.csv's alone records: CUDA-graph loops of one kernel back
to back that hold the GPU at its power limit, their large shapes at 1,400-1,520 MHz (the NVML SM
clock each row carries). Inside a MoE layer the same kernels run between memory-bound kernels at
a higher clock (the BF16 moe_layer records read 1,700-1,980 MHz). A compute-bound kernel's time
goes as 1 / SM clock, so inside a layer a grouped GEMM's compute time is the curve's times
f_alone_fit / f_in_layer, where
- f_in_layer (one per GPU): the time-weighted median SM clock of the fitting split's one-GPU BF16
  moe_layer records (fwd and bwd; their time is mostly grouped GEMMs; the FP8 layers' reading is
  set by their eager quantization kernels, s14gemm);
- f_alone_fit (one per grouped curve): the time-weighted median SM clock of the fitting split's
  grouped_gemm / grouped_gemm_wgrad records timed with that curve.
Time-weighted medians: a curve's error costs a layer in proportion to its time, and one NVML
reading per row is noisy (s14gemm); the class statistic averages it out. A curve fitted at or
above the in-layer clock keeps factor 1 (small shapes are not throttled alone).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import records as rec
from calibration.bwd_grouped import gpu_folder
from calibration.records_io import csv_exists, read_csv
from calibration.split import is_held_out

GROUPED_BENCHES = ("grouped_gemm", "grouped_gemm_wgrad")
LAYER_BENCHES = ("moe_layer_fwd", "moe_layer_bwd")


def time_weighted_median(values, weights) -> float:
    """The value below and above which half the weight lies (the lower one on a tie)."""
    order = np.argsort(np.asarray(values, float))
    v, w = np.asarray(values, float)[order], np.asarray(weights, float)[order]
    cum = np.cumsum(w)
    return float(v[np.searchsorted(cum, cum[-1] / 2)])


def fitting_rows(df: pd.DataFrame, benches) -> pd.DataFrame:
    """Rows of `benches` in the fitting split that carry an SM clock reading."""
    if df.empty or "sm_clock_mhz" not in df.columns:
        return df.iloc[0:0]
    rows = df[df["bench"].isin(benches) & (pd.to_numeric(df["sm_clock_mhz"], errors="coerce") > 0)]
    return rows[[not is_held_out(r) for r in rows.to_dict("records")]]


def in_layer_clock_mhz(layers: pd.DataFrame) -> float | None:
    """f_in_layer: the time-weighted median SM clock of the fitting BF16 moe_layer rows; None without."""
    rows = fitting_rows(layers, LAYER_BENCHES)
    if rows.empty:   # a records root without moe_layer.csv
        return None
    rows = rows[rows["precision"] == "bf16"]
    return time_weighted_median(rows["sm_clock_mhz"], rows["time_s"]) if len(rows) else None


def alone_clocks_mhz(gemms: pd.DataFrame, curve_of_row) -> dict:
    """{curve: f_alone_fit}: per grouped curve, the time-weighted median SM clock of the fitting
    grouped records timed with it (`curve_of_row`: calibration.predict.row_kernel)."""
    rows = fitting_rows(gemms, GROUPED_BENCHES).to_dict("records")
    by_curve: dict = {}
    for r in rows:
        by_curve.setdefault(curve_of_row(r), []).append((r["sm_clock_mhz"], r["time_s"]))
    return {c: time_weighted_median(*zip(*pairs)) for c, pairs in sorted(by_curve.items())}


def clock_factors(in_layer_mhz: float | None, alone_mhz: dict) -> dict:
    """{curve: min(1, f_alone_fit / f_in_layer)}: the in-layer factor on a curve's compute time."""
    if not in_layer_mhz:
        return {}
    return {c: min(1.0, a / in_layer_mhz) for c, a in alone_mhz.items()}


def _records(folder: Path, stem: str) -> pd.DataFrame:
    path = folder / f"{stem}.csv"
    return read_csv(path) if csv_exists(path) else pd.DataFrame()


def folder_clocks(folder: str, curve_of_row) -> tuple[float | None, dict]:
    """(f_in_layer, {curve: f_alone_fit}) of a records folder (h100, h200) under the records root in use
    (calibration.records.records_root)."""
    return _folder_clocks(rec.records_root() / folder, curve_of_row)


@functools.cache
def _folder_clocks(folder: Path, curve_of_row) -> tuple[float | None, dict]:
    return in_layer_clock_mhz(_records(folder, "moe_layer")), alone_clocks_mhz(_records(folder, "gemm"), curve_of_row)


def gpu_clock_factors(gpu_name: str, curve_of_row) -> dict:
    """{curve: factor} of a catalog GPU; {} where it has no records folder (the H800: factor 1)."""
    folder = gpu_folder(gpu_name)
    return clock_factors(*folder_clocks(folder, curve_of_row)) if folder else {}


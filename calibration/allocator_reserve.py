"""The caching allocator's reserve beyond its live tensors at the peak of torchtitan's FSDP2 step, from
real.fsdp_memory's records (campaign s27mlm2, rule docs/notes/s27mlm2_rule.md): per part the median of
(peak reserved - peak allocated) / peak allocated over steady steps and ranks, per allocator setting the
fraction f (the 32-block part's, the 16-block part's where that one did not finish) and the rule's B1 (the
16- and 32-block fractions agree; a setting failing it gives its rows f = 0). calibration.published_runs
reads `reserve_fraction`; calibration.fsdp_reserve judges the rule.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import records as rec
from calibration.records_io import csv_exists, glob_csv, read_csv

# the committed record (all parts, both ranks): the campaign's card decides the folder
RECORDS = tuple(Path(gpu) / "s27mlm2" / "fsdp_memory.csv" for gpu in ("h200x2", "h100x2"))   # under the records root
GIB = 2 ** 30
STEADY_FIRST_STEP = 2     # step 1 allocates the optimizer's state
SETTINGS = {"expandable": "expandable_segments:True", "default": "expandable_segments:False"}
B1_ABS, B1_REL = 0.02, 0.25


RECORD_OVERRIDE: Path | None = None   # a record judged in place of the committed one (calibration.fsdp_reserve.judge)


def committed_record() -> Path | None:
    """The first of RECORDS under the records root in use (calibration.records.records_root: calibration/measurements,
    or --records DIR)."""
    return next((p for p in (rec.records_root() / r for r in RECORDS) if csv_exists(p)), None)


def steady_rows(path: Path | str | None = None):
    path = committed_record() if path is None else path
    if path is None:
        return None
    df = read_csv(path)
    return df[(df["step"] >= STEADY_FIRST_STEP) & (df["status"] == "ok")]


def part_fractions(df) -> dict:
    """Per part (config): layers, allocator setting, steady steps seen, the median reserve fraction, the
    largest allocated and reserved peaks over ranks and steps, the median start bytes a rank."""
    out = {}
    for config, g in df.groupby("config"):
        frac = (g["peak_reserved_bytes"] - g["peak_allocated_bytes"]) / g["peak_allocated_bytes"]
        out[str(config)] = {"layers": int(g["layers"].iloc[0]), "alloc_conf": str(g["alloc_conf"].iloc[0]),
                            "steady_rows": int(len(g)), "reserve_frac": float(np.median(frac)),
                            "peak_allocated_bytes": float(g["peak_allocated_bytes"].max()),
                            "peak_reserved_bytes": float(g["peak_reserved_bytes"].max()),
                            "peak_active_bytes": float(g["peak_active_bytes"].max()),
                            "start_allocated_bytes": float(np.median(g["start_allocated_bytes"])),
                            "num_alloc_retries": int(g["num_alloc_retries"].max())}
    return out


def setting_fractions(parts: dict) -> dict:
    """Per allocator setting: f (the 32-block part's, else the 16-block part's), B1, and the f the rows take
    (0 where B1 fails)."""
    out = {}
    for name, conf in SETTINGS.items():
        by_layers = {p["layers"]: p["reserve_frac"] for p in parts.values() if p["alloc_conf"] == conf}
        f32, f16 = by_layers.get(32), by_layers.get(16)
        f = f32 if f32 is not None else f16
        b1 = f32 is not None and f16 is not None and abs(f16 - f32) <= max(B1_ABS, B1_REL * f32)
        out[name] = {"alloc_conf": conf, "f16": f16, "f32": f32, "f": f, "B1": bool(b1),
                     "f_taken": float(f) if (b1 and f is not None) else 0.0}
    return out


def reserve_fraction(setting: str | None, path: Path | str | None = None) -> float:
    """The fraction a published reserved peak is compared with (candidate B): 0 for a row without a setting,
    without the committed record, or where B1 fails."""
    if setting is None:
        return 0.0
    path = (RECORD_OVERRIDE or committed_record()) if path is None else path
    return 0.0 if path is None else _taken(str(path))[setting]


@functools.lru_cache(maxsize=4)
def _taken(path: str) -> dict:
    df = steady_rows(path)
    if df is None or df.empty:
        return {name: 0.0 for name in SETTINGS}
    return {name: s["f_taken"] for name, s in setting_fractions(part_fractions(df)).items()}


# ---------------------------------------------------------------------------------------------
# s32mem (rule docs/notes/s32mem_rule.md): the fraction pooled over every uncapped part of real.fsdp_memory's
# records, per allocator setting (calibration.published_runs.ADOPT_RESERVED_PEAK_POOLED; judge calibration.reserve_pool)
# ---------------------------------------------------------------------------------------------

# (folder under the records root, file pattern): every campaign of real.fsdp_memory with steady steps; s30tt_cap is
# left out (its parts are capped below their natural reserve: the feasibility question, not the fraction's)
POOL = (("h200x2/s27mlm2", "fsdp_memory.csv"), ("h100x2/s27mlm2", "fsdp_memory.csv"),
        ("h200x2/s30tt_step", "*/fsdp_memory_r*.csv"), ("h200/s31pub", "*/fsdp_memory_r*.csv"),
        ("h200/s32mem", "*/fsdp_memory_r*.csv"), ("h100/s32mem", "*/fsdp_memory_r*.csv"))
FRESH = "s32mem"   # the campaign the rule judges: its parts are fitting records too
SETTING_OF_CONF = {conf: name for name, conf in SETTINGS.items()}


def pool_rows(fresh: bool = True):
    """Every row of the pooled records (all steps, capped parts included) with its `record` (the folder under the
    records root) and `setting` ('expandable' / 'default'); `fresh` False leaves campaign s32mem out."""
    root = rec.records_root()
    frames = []
    for folder, pattern in POOL:
        if not fresh and folder.endswith(FRESH):
            continue
        for path in glob_csv(root / folder, pattern):
            df = read_csv(path)
            frames.append(df.assign(record=folder, setting=df["alloc_conf"].map(SETTING_OF_CONF)))
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True)
    if "memory_fraction" not in df:
        df["memory_fraction"] = np.nan
    df["memory_fraction"] = pd.to_numeric(df["memory_fraction"], errors="coerce")
    return df


def pooled_parts(df) -> dict:
    """Per part (record/config): its setting, recomputation, whether capped, the steady steps' median reserve fraction
    (steps >= STEADY_FIRST_STEP, status ok, every rank), its largest live and reserved peaks, retries and OOMs."""
    out = {}
    for (record, config), g in df.groupby(["record", "config"], sort=True):
        steady = g[(g["step"] >= STEADY_FIRST_STEP) & (g["status"] == "ok")]
        frac = (steady["peak_reserved_bytes"] - steady["peak_allocated_bytes"]) / steady["peak_allocated_bytes"]
        cap = g["memory_fraction"].dropna()
        out[f"{record}/{config}"] = {
            "record": record, "config": str(config), "setting": g["setting"].iloc[0],
            "ac": str(g["ac"].iloc[0]) if "ac" in g and g["ac"].notna().all() else "op",   # s27mlm2: op only "layers": int(g["layers"].iloc[0]),
            "capped": bool(len(cap)), "memory_fraction": float(cap.iloc[0]) if len(cap) else None,
            "steps": int(len(g)), "steady_rows": int(len(steady)), "statuses": sorted(set(g["status"].astype(str))),
            "reserve_frac": float(np.median(frac)) if len(steady) else None,
            "peak_allocated_bytes": float(steady["peak_allocated_bytes"].max()) if len(steady) else None,
            "peak_reserved_bytes": float(steady["peak_reserved_bytes"].max()) if len(steady) else None,
            "num_alloc_retries": int(g["num_alloc_retries"].max()), "num_ooms": int(g["num_ooms"].max())}
    return out


def pooled_fractions(parts: dict) -> dict:
    """Per setting: the median reserve fraction over the uncapped parts that finished steady steps, and which."""
    out = {}
    for name in SETTINGS:
        mine = {k: p["reserve_frac"] for k, p in parts.items()
                if p["setting"] == name and not p["capped"] and p["reserve_frac"] is not None}
        out[name] = {"f": float(np.median(list(mine.values()))) if mine else None, "parts": mine}
    return out


def pooled_reserve_fraction(setting: str | None) -> float:
    """The fraction candidate s32mem compares a published reserved peak with (0 for a row without a setting or
    where no record of its setting exists)."""
    if setting is None:
        return 0.0
    return _pooled(str(rec.records_root())).get(setting) or 0.0


@functools.lru_cache(maxsize=4)
def _pooled(root: str) -> dict:
    df = pool_rows()
    if df is None:
        return {}
    return {name: s["f"] for name, s in pooled_fractions(pooled_parts(df)).items()}

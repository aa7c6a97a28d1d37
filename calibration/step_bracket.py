"""A step's host speed from the probes on both sides of it (issue 13, session s25host2; the rule:
docs/notes/s25host2_rule.md, committed before the fresh run it is judged on).

The adopted step-input twin (calibration.step_host) prices a probed step at the run's fitting ratio x the 3 ms launch
probe taken right before it; the ratio is the median over the fitting repetitions of host seconds / net kernels / the
probe right before each. A host flips between a fast and a slow state within seconds (docs/notes/s24probe_rule.md), so
a probe before a step can read a state the step did not run in. Under REAL_BENCH_STEP_AFTER_PROBE (real/bench/
host_steps.py) every timed step and fitting repetition also has the same probe right after it (table step_after).

ADOPT_BRACKET_PROBE (default off): where a record folder carries step_after rows, each step's and each fitting
repetition's probe becomes the geometric mean of its probes before and after (bracketed_steps); the ratio, the per-step
host time and the record's prediction are then computed exactly as the committed twin computes them
(step_host.fit_step_ratio, step_host.record_prediction). Folders without step_after rows are read as before, so no
committed validation figure moves.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from calibration.records_io import csv_exists, read_csv

ADOPT_BRACKET_PROBE = False
STEP_KEY = ["bench", "model", "batch", "prompt_len", "gen_len", "config", "phase", "precision", "step", "block"]


def _key_frame(df: pd.DataFrame) -> pd.DataFrame:
    """STEP_KEY columns as strings ('' for blanks), so serve_steps and step_after rows of one step match."""
    out = pd.DataFrame(index=df.index)
    for c in STEP_KEY:
        col = df[c] if c in df.columns else pd.Series("", index=df.index)
        num = pd.to_numeric(col, errors="coerce")
        text = col.astype(object).where(col.notna(), "").astype(str)
        out[c] = np.where(num.notna(), num.map(lambda v: f"{v:g}" if pd.notna(v) else ""), text)
    return out


def with_after(steps: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """serve_steps rows with `host_probe_after_s` (NaN where the step has no step_after row)."""
    a = _key_frame(after).assign(host_probe_after_s=after["host_probe_after_s"].astype(float).to_numpy())
    a = a.drop_duplicates(subset=STEP_KEY, keep="first")
    merged = _key_frame(steps).reset_index().merge(a, on=STEP_KEY, how="left").set_index("index")
    return steps.assign(host_probe_after_s=merged["host_probe_after_s"].reindex(steps.index).to_numpy())


def bracket_probe(before: pd.Series, after: pd.Series) -> pd.Series:
    """The geometric mean of the probes before and after a step; the probe before where the one after is missing
    (NaN where the step has no probe before: a control step stays unprobed)."""
    b, a = before.astype(float), after.astype(float)
    both = (b > 0) & (a > 0)
    return pd.Series(np.where(both, np.sqrt(b.where(both, 1.0) * a.where(both, 1.0)), b), index=before.index)


def bracketed_steps(steps: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """serve_steps with each probed step's `host_probe_launch_s` replaced by its bracket (bracket_probe); the probe
    before kept as `host_probe_before_s` and the one after as `host_probe_after_s`."""
    s = with_after(steps, after)
    return s.assign(host_probe_before_s=s["host_probe_launch_s"],
                    host_probe_launch_s=bracket_probe(s["host_probe_launch_s"], s["host_probe_after_s"]))


def folder_steps(folder: Path, steps: pd.DataFrame) -> pd.DataFrame:
    """The steps the step-input twin reads for a record folder: bracketed under ADOPT_BRACKET_PROBE where the folder
    has step_after rows, else unchanged."""
    if ADOPT_BRACKET_PROBE and csv_exists(Path(folder) / "step_after.csv"):
        return bracketed_steps(steps, read_csv(Path(folder) / "step_after.csv"))
    return steps

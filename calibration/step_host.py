"""The host's speed per step as an input of the one-GPU prefill and decode predictions (issue 13,
session s21host2; the rule: docs/notes/s21host2_rule.md, committed before any record under it).

s21host (calibration/host_input.py) read one 40 ms launch probe taken before each ~0.1 s record: it
carried the host's level but not its moment. Here every timed step of a record and every timed
repetition of a fitting row has its own short probe right before it (real/bench/host_steps.py: 3 ms,
serve_steps.csv; the record's steps alternate control / probed, and model.csv's time_s is the median
of its probed steps):
  probe_ratio   the fitting repetitions' host time per kernel over their own probe: the median over
                every repetition (serve_steps rows bench host_dispatch) of the run's fitting
                host_dispatch `infer` rows (split fit) of rep host_s / the row's net kernels (counted as
                the profile counts them: layer_gaps.net_kernels less the radix-sort kernels) / the
                rep's probe (fit_step_ratio). No held-out row enters it.
  a step's host time per kernel   probe_ratio x its own probe (twin.costs.host.infer_host_s_per_kernel)
  a step's prediction   the record's op lists timed with every dispatched op at that host time
                (host_input.predict_at_host_s; read from the pre-registered grid, clamped to its ends)
  a record's prediction   the median over its probed steps of their predictions, compared with the
                median of the same steps' measured times (model.csv time_s).
The prediction is monotone in the host time, so the median of the step predictions is the prediction at
the median step host time (exactly for an odd count of steps): ADOPT_STEP_HOST_INPUT (calibration.
whole_step) prices a row carrying `step_infer_host_s_per_kernel` (ratio x the median of its probed steps'
probes, step_host_s_of_record) at it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from calibration import records as rec
from calibration.layer_gaps import net_kernels, radix_kernels_of_rows, radix_sort_kernels
from calibration.whole_step import decode_ops
from twin.core.specs import GPUSpec, get_model
from twin.costs.host import infer_host_s_per_kernel

# host seconds per kernel at which each pre-registered row is predicted: 5-100 us every 0.5 us (s21host's
# runs read 21-43 us a kernel from 40 ms probes; a 3 ms probe reads a shorter, noisier window)
STEP_HOST_GRID_S = tuple(np.round(np.arange(5e-6, 100e-6 + 1e-9, 0.5e-6), 10))
LAYER_KEY = ["config", "phase", "precision"]
RECORD_KEY = ["bench", "model", "batch", "prompt_len", "gen_len", "precision"]


def fit_step_ratio(host_dispatch: pd.DataFrame, steps: pd.DataFrame, gpu: str, radix: dict | None = None) -> float:
    """The median over the fitting repetitions of (rep host_s / the row's net kernels / the rep's own probe);
    NaN without such repetitions. `radix` as host_input.fit_probe_ratio."""
    radix = radix_sort_kernels(gpu, rec.records_root()) if radix is None else radix   # the records root in use
    hd = host_dispatch.assign(net=net_kernels(host_dispatch)
                              - (radix_kernels_of_rows(host_dispatch, radix) if radix else 0.0))
    hd = hd[(hd["split"] == "fit") & (hd["phase"] == "infer") & (hd["net"] > 0)][LAYER_KEY + ["net"]]
    reps = steps[(steps["bench"] == "host_dispatch") & (steps["block"] == "probed")][
        LAYER_KEY + ["host_s", "host_probe_launch_s"]]
    rows = reps.merge(hd, on=LAYER_KEY, how="inner")
    rows = rows[(rows["host_probe_launch_s"] > 0) & (rows["host_s"] > 0)]
    if rows.empty:
        return float("nan")
    return float((rows["host_s"] / rows["net"] / rows["host_probe_launch_s"]).median())


def record_steps(steps: pd.DataFrame, row, block: str = "probed") -> pd.DataFrame:
    """The serve_steps rows of one model.csv record (its bench, model, batch, lengths, precision), of `block`.
    (s32ci) One mask over the frame, one take: the rows, order and index of filtering column by column."""
    keep = (equal_mask(steps["bench"], row["bench"]) & equal_mask(steps["block"], block)
            & equal_mask(steps["model"], row["model"]) & equal_mask(steps["precision"], row["precision"]))
    for c in ("batch", "prompt_len", "gen_len"):
        keep &= pd.to_numeric(steps[c], errors="coerce").to_numpy() == int(row[c])
    return steps[keep]


def equal_mask(column: pd.Series, value) -> np.ndarray:
    """column == value as a numpy mask (record_steps, s29dec's case grids); a text column compared as Python objects (pandas' Arrow string comparison
    boxes the value on every call: ~10x slower on these frames), the same truth for every element (a missing one:
    False)."""
    if isinstance(value, str) and (column.dtype == object or isinstance(column.dtype, pd.StringDtype)):
        return column.to_numpy(dtype=object, na_value=None) == value
    return (column == value).to_numpy(dtype=bool)


def step_host_s(probes, ratio: float) -> np.ndarray:
    """Each step's host time per kernel: ratio x its own probe (NaN where none)."""
    return np.array([infer_host_s_per_kernel(float(p), ratio) for p in probes])


def step_host_s_of_record(steps: pd.DataFrame, row, ratio: float) -> float:
    """The record's host time per kernel for ADOPT_STEP_HOST_INPUT: ratio x the median of its probed steps'
    probes (NaN without probed steps)."""
    p = record_steps(steps, row)["host_probe_launch_s"].astype(float)
    p = p[p > 0]
    return infer_host_s_per_kernel(float(p.median()), ratio) if len(p) else float("nan")


def grid_at(grid: pd.DataFrame, hosts_s: np.ndarray) -> np.ndarray:
    """A record's predictions at each host time from its grid rows: linear between grid points, clamped to
    the grid's ends (a step probed outside 5-100 us a kernel), NaN for NaN host times."""
    g = grid.sort_values("host_s_per_kernel")
    x, y = g["host_s_per_kernel"].to_numpy(), g["predicted_s"].to_numpy()
    h = np.asarray(hosts_s, dtype=float)
    out = np.interp(np.clip(h, x[0], x[-1]), x, y) if x.size else np.full(h.shape, np.nan)
    return np.where(np.isnan(h), np.nan, out)


def record_prediction(grid: pd.DataFrame, steps: pd.DataFrame, row, ratio: float) -> float:
    """The median over the record's probed steps of each step's prediction at its own host time."""
    preds = grid_at(grid, step_host_s(record_steps(steps, row)["host_probe_launch_s"], ratio))
    preds = preds[~np.isnan(preds)]
    return float(np.median(preds)) if preds.size else float("nan")


def probe_effect(steps: pd.DataFrame, row) -> float:
    """The record's probed-step median over its control-step median, less 1 (NaN without both)."""
    probed, control = (record_steps(steps, row, b)["step_s"].astype(float) for b in ("probed", "control"))
    return float(probed.median() / control.median() - 1.0) if len(probed) and len(control) else float("nan")


def probe_step_correlation(steps: pd.DataFrame, row) -> float:
    """Spearman rank correlation of the record's probed steps' probe and step time (diagnostic: does the
    probe carry the step's moment?); NaN under 4 steps."""
    s = record_steps(steps, row)[["host_probe_launch_s", "step_s"]].astype(float).dropna()
    if len(s) < 4:
        return float("nan")
    return float(s["host_probe_launch_s"].rank().corr(s["step_s"].rank()))


def twin_decode_ops(row, gpu: GPUSpec, profile) -> int:
    """The ops (kernels) of the twin's decode step for a record (whole_step.decode_ops at the record's
    serve_kernels cache length), to set beside the kernels the GPU profiler counted in one such step."""
    return len(decode_ops(get_model(row["model"]), int(row["batch"]), int(row["cache_len"]), gpu, profile).ops)


def kernel_counts(kernels: pd.DataFrame, gpu: GPUSpec, profile) -> pd.DataFrame:
    """serve_kernels.csv's decode rows with the twin's op count beside the profiler's kernels
    (`twin_ops`, `kernels_over_twin`): the GQA decode op-list question (reported, not judged)."""
    k = kernels[kernels["bench"] == "decode"].copy()
    k["twin_ops"] = [twin_decode_ops(r, gpu, profile) for _, r in k.iterrows()]
    k["kernels_over_twin"] = k["kernels"].astype(float) / k["twin_ops"]
    return k

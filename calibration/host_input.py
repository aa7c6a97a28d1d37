"""The host's measured speed as an input of the one-GPU prefill and decode predictions (issue 13,
session s21host; the rule: docs/notes/s21host_rule.md, committed before any record under it).

The plain twin prices every op of a model.csv prefill or decode step (calibration.whole_step
prefill_ops / decode_ops) at the profile's no-grad host time per launched kernel
(Profile.eager host_s["infer"]: the median over the fitting split's host_dispatch `infer` rows of
host_s / kernels, measured on an earlier host). The host-input twin takes the host that runs the
record as an input (twin.costs.host):
  host time per kernel = probe_ratio x probe_launch_s,
  probe_launch_s  the launch probe real/bench/whole_model.py probe_row takes right before the record,
                  in the same process (real/serve/hostspeed.py launch_probe; host_probe.csv);
  probe_ratio     fitted on FITTING-split rows only: the median over the run's fitting host_dispatch
                  `infer` layer rows (split fit; real/bench/host_input.py takes each right after a
                  probe) of (host_s / its net kernels, as calibration.layer_gaps.host_rates_of counts
                  them) / that row's probe (fit_probe_ratio). The s9mla precedent (calibration.host_probe)
                  related MLA layer records to probe blocks the same way.
A record's prediction is then the same op list timed with every dispatched op at that host time
(whole_step.predict_model_row under twin.costs.host.with_infer_host_s; `rehosted` below does it on
built op lists, tested equal).

Pre-registration: the host time per kernel is known only once the run has probed, so the predictions
file of registration s21host (calibration/prereg.py) holds, beside each row's plain prediction, its
prediction at a grid of host times per kernel (HOST_GRID_S; host_grid_predictions); the comparison
interpolates the grid at the run's own host time (grid_prediction).

ADOPT_HOST_INPUT (calibration.whole_step) decides whether a model.csv row carrying a host time per
kernel (`infer_host_s_per_kernel`) is predicted at it; no committed row outside the s21host
subfolders carries one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from calibration import records as rec
from calibration.layer_gaps import net_kernels, radix_kernels_of_rows, radix_sort_kernels
from calibration.predict import FixedHost, PerOpHost
from calibration.whole_step import decode_cache_lens, decode_ops, prefill_ops, serve_window_s
from twin.core.specs import GPUSpec, get_model
from twin.costs.host import infer_host_s_per_kernel

# host seconds per kernel at which each pre-registered row is predicted: 5-60 us every 0.25 us (the
# profiles' rates 18.8-19.6 us; s20new2's cold H100 ~26-30 us; the launch probe itself reads 8-24 us in the
# serve load records, 7-58 us in s21host's; this comment corrected after the run, the grid unchanged)
HOST_GRID_S = tuple(np.round(np.arange(5e-6, 60e-6 + 1e-9, 0.25e-6), 10))
# a host_probe row names its record by these (a serve row) or by config, phase, precision (a host_dispatch row)
SERVE_PROBE_KEY = ["bench", "model", "batch", "prompt_len", "gen_len", "precision"]
LAYER_PROBE_KEY = ["config", "phase", "precision"]


def fit_probe_ratio(host_dispatch: pd.DataFrame, probes: pd.DataFrame, gpu: str, radix: dict | None = None) -> float:
    """The fitting rows' host time per kernel over the probe taken right before each (median over the
    host_dispatch rows of split `fit`, phase `infer`, with a probe and kernels); NaN without such rows.
    `radix`: the radix-sort kernels a MoE layer launches from one dispatch (layer_gaps.radix_sort_kernels
    of the GPU's committed records, as the profile's infer rate counts them)."""
    radix = radix_sort_kernels(gpu, rec.records_root()) if radix is None else radix   # the records root in use
    hd = host_dispatch.assign(net=net_kernels(host_dispatch)
                              - (radix_kernels_of_rows(host_dispatch, radix) if radix else 0.0))
    hd = hd[(hd["split"] == "fit") & (hd["phase"] == "infer") & (hd["net"] > 0) & (hd["host_s"] > 0)]
    layer_probes = probes[probes["bench"] == "host_dispatch"][LAYER_PROBE_KEY + ["host_probe_launch_s"]]
    rows = hd.merge(layer_probes, on=LAYER_PROBE_KEY, how="inner")
    rows = rows[rows["host_probe_launch_s"] > 0]
    if rows.empty:
        return float("nan")
    return float((rows["host_s"] / rows["net"] / rows["host_probe_launch_s"]).median())


def row_probes(probes: pd.DataFrame) -> pd.DataFrame:
    """The serve rows' probes (bench prefill / decode) with their key columns as a model.csv row has them."""
    p = probes[probes["bench"].isin(["prefill", "decode"])].copy()
    for c in ("batch", "prompt_len", "gen_len"):
        p[c] = p[c].astype(int)
    return p[SERVE_PROBE_KEY + ["host_probe_launch_s"]]


def host_s_of_rows(rows: pd.DataFrame, probes: pd.DataFrame, ratio: float) -> pd.Series:
    """Each serve row's host time per kernel: ratio x the probe taken right before it (NaN where none)."""
    p = rows[SERVE_PROBE_KEY].astype({"batch": int, "prompt_len": int, "gen_len": int}).merge(
        row_probes(probes), on=SERVE_PROBE_KEY, how="left")
    return pd.Series([infer_host_s_per_kernel(x, ratio) for x in p["host_probe_launch_s"]], index=rows.index)


def rehosted(ops: list, host_s: float) -> list:
    """`ops` with every dispatched op at `host_s` host seconds, as Eager.use_eager_host gives a step's
    ops the profile's rate (kept: synchronisations, kernels launched inside another op's dispatch
    (host 0.0), ops with their own measured host time)."""
    return [op if not op[0] or isinstance(op, (FixedHost, PerOpHost)) else type(op)((float(host_s), op[1]))
            for op in ops]


def serve_op_lists(row, gpu: GPUSpec, profile) -> list[list]:
    """The op lists whose timed windows predict a prefill row (one) or a decode row (one per timed
    step's cache length; the row's prediction is their median), as whole_step.predict_model_row."""
    spec, B, P = get_model(row["model"]), int(row["batch"]), int(row["prompt_len"])
    if row["bench"] == "prefill":
        return [prefill_ops(spec, B, P, gpu, profile).ops]
    return [decode_ops(spec, B, L, gpu, profile).ops for L in decode_cache_lens(P, int(row["gen_len"]))]


def predict_at_host_s(row, gpu: GPUSpec, profile, hosts_s, synced: bool = False) -> np.ndarray:
    """The row's predicted seconds with every dispatched op at each host time per kernel of `hosts_s`; `synced`:
    each step started on an idle device (whole_step.serve_window_s; s22host), else back to back."""
    lists = serve_op_lists(row, gpu, profile)
    return np.array([float(np.median([serve_window_s(rehosted(ops, h), synced) for ops in lists])) for h in hosts_s])


def host_grid_predictions(row: dict, gpu: GPUSpec, profile, hosts_s=HOST_GRID_S, synced: bool = False) -> list[dict]:
    """One row per host time of the grid: the row's key, host_s_per_kernel, predicted_s."""
    return [{**row, "host_s_per_kernel": float(h), "predicted_s": float(t)}
            for h, t in zip(hosts_s, predict_at_host_s(row, gpu, profile, hosts_s, synced))]


def grid_prediction(grid: pd.DataFrame, host_s: float) -> float:
    """A row's prediction at `host_s` from its grid rows (linear between grid points; NaN outside the
    grid or for NaN host time)."""
    g = grid.sort_values("host_s_per_kernel")
    x, y = g["host_s_per_kernel"].to_numpy(), g["predicted_s"].to_numpy()
    if not (x.size and x[0] <= host_s <= x[-1]):
        return float("nan")
    return float(np.interp(host_s, x, y))

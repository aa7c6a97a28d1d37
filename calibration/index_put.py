"""The MoE backward's index_put_ kernels at their measured rate (s15bw, docs/notes/s15bw_rule.md).

Autograd's backward of `x[idx]` (real/model.py's and real/ep.py's row gathers) is a zeroed gradient
and torch's index_put_ with accumulate=True, which sorts the indices and runs
`indexing_backward_kernel`. That kernel is not HBM-bound the way the fitted gather_eff assumes
(H200 runs it ~1.13x faster than H100 against a 1.43x bandwidth ratio), so it is costed at its own
seconds per element (rows x width), measured here from the fitting split's profiled kernels: the
s14epl EP2 layer backward records (real/campaigns/s14epl.sh, ep_kernels.csv, every row `fit`),
balanced routing (skew 0), where each of a layer's index_put_ calls moves tokens x top_k rows of
hidden_size elements. One figure per GPU: the median over tokens, precision and rank.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from calibration import records as rec
from calibration.records_io import csv_exists, read_csv

KERNEL = "indexing_backward_kernel"
# records folder (under the records root, calibration/measurements by default) of each GPU's s14epl EP2 layer kernels
SOURCES = {"h100": "h100x2/s14epl_20261127_0151", "h200": "h200x2/s14epl_20261127_0248"}


def gpu_key(gpu_name: str) -> str | None:
    """Catalog GPU name ("NVIDIA H100 SXM5 80GB") -> SOURCES key ("h100"); None if none matches."""
    low = gpu_name.lower()
    return next((k for k in SOURCES if k in low), None)


def rates_from_kernels(kernels) -> list[float]:
    """Seconds per element of each (tokens, precision, rank) backward call's index_put_ kernels:
    their profiled seconds over calls x tokens x top_k x hidden_size (skew-0 rows of the fitting
    split only)."""
    k = kernels[(kernels["bench"] == "moe_layer_ep_bwd") & (kernels["skew"] == 0)
                & (kernels["split"] == "fit") & kernels["kernel"].astype(str).str.contains(KERNEL)]
    elems = k["calls"] * k["tokens_per_rank"] * k["top_k"] * k["hidden_size"]
    return [float(x) for x in (k["time_s"] / elems)]


def index_put_s_per_elem(gpu_name: str) -> float | None:
    """The measured seconds per element of index_put_ (accumulate) on this GPU; None without records (under
    the records root in use, calibration.records.records_root)."""
    return _s_per_elem(gpu_name, rec.records_root())


@functools.cache
def _s_per_elem(gpu_name: str, root: Path) -> float | None:
    key = gpu_key(gpu_name)
    if key is None:
        return None
    path = root / SOURCES[key] / "ep_kernels.csv"
    if not csv_exists(path):
        return None
    rates = rates_from_kernels(read_csv(path))
    return float(np.median(rates)) if rates else None

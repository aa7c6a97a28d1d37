"""calibration/ep_uneven.py (s22epq): the EP2 layer's grouped GEMMs on uneven rows per expert, profiled
(s14epl's fitting records, 2xH200 and 2xH100) against the twin on the same rows. The routing is the
bench's own, replayed on the CPU (real/bench/moe_layer.skewed_routing in s14epl's generator order);
the replay is checked against the recorded max_rank_rows before any figure is read."""

import numpy as np
import pytest
import torch

from calibration import ep_uneven as eu
from real.bench.moe_layer import skewed_routing


@pytest.fixture(scope="module")
def counts():
    out = {}
    for rank in range(eu.S14EPL_WORLD):
        gen = torch.Generator().manual_seed(rank)
        for T, skew in eu.S14EPL_DRAWS:
            _, ids = skewed_routing(T, eu.S14EPL_EXPERTS, eu.S14EPL_TOP_K, skew, 1.0, "cpu", gen)
            out.setdefault((T, skew), {})[rank] = torch.bincount(ids.flatten(), minlength=eu.S14EPL_EXPERTS).numpy()
    return out


@pytest.fixture(scope="module", params=["h200", "h100"])
def rows(request, counts):
    return eu.layout_rows(request.param, counts)


def test_replayed_routing_is_the_recorded_one(rows):
    # the most loaded rank's replayed rows equal the bench's max_rank_rows in every case (skew 0: T K)
    for (T, skew), g in rows.groupby(["tokens", "skew"]):
        assert g["rows"].max() == g["max_rank_rows"].iloc[0]
        assert (g["rows_cv"] > 0.4).all() if skew else (g["rows_cv"] == 0).all()


def test_twin_does_not_overshoot_the_backward_on_uneven_rows(rows):
    ch = eu.uneven_change(rows)
    assert len(ch) == 2 * 2 * 3   # two token counts x two ranks x three layouts
    by = {L: ch[ch["layout"] == L]["twin_over_measured"].to_numpy() for L in eu.LAYOUTS}
    # the forward and the data gradient (rows padded to the row tile): within 3% of the kernels' change
    assert np.all(np.abs(by["fwd"] - 1) < 0.03) and np.all(np.abs(by["dgrad"] - 1) < 0.05)
    # the weight gradient (rows contracted, not padded): the twin's change is the SMALLER on every rank
    # (0.92-0.98): the twin under-prices the unevenness there, it never overshoots it
    assert np.all(by["wgrad"] < 1.0)

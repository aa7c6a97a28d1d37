"""s24stall (docs/notes/s24stall_rule.md (c)): the clustered host-pause model (ADOPT_CLUSTERED_HOST_PAUSES) and its
constants, computed from session 23's stalling sets only."""

import numpy as np
import pytest

from calibration import records as rec
from calibration import serve_clustered_pauses as scp
from calibration import serve_stall_causes as sc
from calibration.serve_load_validation import scenario_for
from tests.calibration.test_serve_host_stalls import _h200_run
from twin.serving import engine as serve_engine
from twin.serving.engine import CLUSTER_MEAN_PAUSES, CLUSTER_SPACING_S, ClusteredPauses, HostStalls, host_stalls


@pytest.fixture
def switches():
    saved = serve_engine.ADOPT_HOST_STALLS, serve_engine.ADOPT_CLUSTERED_HOST_PAUSES
    yield
    serve_engine.ADOPT_HOST_STALLS, serve_engine.ADOPT_CLUSTERED_HOST_PAUSES = saved


def test_the_constants_are_the_fitting_sets_cluster_shape():
    shape = sc.cluster_shape([rec.MEASUREMENTS_DIR / f for f in sc.CLUSTER_FIT_SETS])
    assert shape["clusters"] == 71 and shape["pauses"] == 401
    assert CLUSTER_MEAN_PAUSES == pytest.approx(shape["cluster_mean_pauses"], abs=0.005)
    assert CLUSTER_SPACING_S == pytest.approx(shape["cluster_spacing_s"], abs=5e-5)


def _pause_times(p: ClusteredPauses, total_s: float, step_s: float = 1e-4) -> list[float]:
    """The busy times of the pauses p lays down over total_s (sizes 1: each draw counts its pauses)."""
    times, t = [], 0.0
    while t < total_s:
        n = p.draw_s(step_s)
        times += [t] * int(round(n))
        t += step_s
    return times


def test_clustered_pauses_keep_the_rate_and_come_in_clusters():
    p = ClusteredPauses(8.0, [1.0], seed=5)
    times = np.array(_pause_times(p, 400.0))
    assert len(times) / 400.0 == pytest.approx(8.0, rel=0.1)                    # the probe's long-run rate
    gaps = np.diff(times)
    # clusters: most next-pause intervals are inside a cluster (mean spacing 12 ms), far below the mean interval
    assert np.mean(gaps < 0.1) == pytest.approx(1 - 1 / CLUSTER_MEAN_PAUSES, abs=0.05)
    assert np.median(gaps) < 0.05 < np.mean(gaps)
    a, b = ClusteredPauses(8.0, [0.004, 0.006], seed=5), ClusteredPauses(8.0, [0.004, 0.006], seed=5)
    assert [a.draw_s(0.01) for _ in range(300)] == [b.draw_s(0.01) for _ in range(300)]   # seeded
    # a draw is a sum of the measured sizes; splitting a busy interval does not change the pauses laid down
    c, d = ClusteredPauses(8.0, [0.004], seed=9), ClusteredPauses(8.0, [0.004], seed=9)
    whole = sum(c.draw_s(0.02) for _ in range(500))
    split = sum(d.draw_s(0.01) + d.draw_s(0.01) for _ in range(500))
    assert whole == pytest.approx(split) and whole > 0


@pytest.mark.parametrize("stalls, clustered, kind", [(False, False, None), (True, False, HostStalls),
                                                       (False, True, ClusteredPauses), (True, True, ClusteredPauses)])
def test_the_switches_pick_the_model(switches, stalls, clustered, kind):
    serve_engine.ADOPT_HOST_STALLS, serve_engine.ADOPT_CLUSTERED_HOST_PAUSES = stalls, clustered
    sc_ = scenario_for({**_h200_run(), "host_stall_rate_per_s": 6.0, "host_stall_sizes_s": "0.004;0.005"})
    got = host_stalls(sc_.serve, 0)
    assert (got is None) if kind is None else isinstance(got, kind)
    assert host_stalls(scenario_for(_h200_run()).serve, 0) is None      # no pause measured: none under any switch
    if kind is not None:
        assert got.every_iteration == (kind is ClusteredPauses)


@pytest.mark.parametrize("name", ["base", "clustered"])
def test_a_run_with_pauses_is_slower_only_under_the_clustered_switch(switches, name):
    r = {"gpu": "h100", "run_id": "n23-qwen2moe-poisson-r28-mid", "probe_s": 11e-6,
         "host_stall_rate_per_s": 8.0, "host_stall_sizes_s": "0.004;0.0045"}
    base = scp.predict({**r, "host_stall_rate_per_s": 0.0}, "base")
    got = scp.predict(r, name)
    before = serve_engine.ADOPT_HOST_STALLS, serve_engine.ADOPT_CLUSTERED_HOST_PAUSES
    if name == "base":
        assert got == base
    else:   # pauses on every iteration: later first tokens and slower decode
        assert got["ttft_p99_s"] > base["ttft_p99_s"] and got["tpot_p50_s"] > base["tpot_p50_s"]
    assert (serve_engine.ADOPT_HOST_STALLS, serve_engine.ADOPT_CLUSTERED_HOST_PAUSES) == before

"""Collective costs: nccl-tests' bus-bandwidth factors by hand, the catalog's links, measured rows."""

import math

import pytest

from twin.core.specs import get_gpu
from twin.costs.comm import bus_factor, collective_time_s, pipelined_exposed_s, ring_collective_time_s

H100 = get_gpu("h100")


@pytest.mark.parametrize("kind,n,factor", [
    ("all_reduce", 2, 1.0),         # 2(n-1)/n
    ("all_reduce", 8, 1.75),
    ("all_gather", 2, 0.5),         # (n-1)/n
    ("reduce_scatter", 4, 0.75),
    ("all_to_all", 8, 0.875),
    ("send_recv", 2, 1.0),
    ("all_gather", 1, 0.0),          # nothing to move on one rank
])
def test_bus_factor_by_hand(kind, n, factor):
    assert bus_factor(kind, n) == factor


def test_catalog_time_by_hand():
    # 1 GB all-gather over 4 NVLink ranks: 0.75 GB at 370 GB/s + 3 ring steps x 3.33 us
    t = collective_time_s("all_gather", 1e9, 4, H100, same_node=True)
    assert math.isclose(t, 0.75e9 / 370e9 + 3 * 3.33e-6, rel_tol=1e-12)
    # an all-reduce is a reduce-scatter then an all-gather: twice the bytes and the steps
    ar = collective_time_s("all_reduce", 1e9, 4, H100, same_node=True)
    assert math.isclose(ar, 2 * t, rel_tol=1e-12)
    # across nodes: the NIC's 46 GB/s and IB latency
    assert math.isclose(collective_time_s("reduce_scatter", 1e9, 4, H100, same_node=False),
                        0.75e9 / 46e9 + 3 * 3.7e-6, rel_tol=1e-12)
    # the DP tail's ring formula agrees
    assert math.isclose(ring_collective_time_s(1e9, 4, H100, True), t, rel_tol=1e-12)


def test_measured_rows_replace_the_catalog_inside_a_node_only():
    measured = {"all_reduce": {"latency_s": 20e-6, "bus_bytes_per_s": 300e9, "source": "test"}}
    t = collective_time_s("all_reduce", 1e9, 2, H100, same_node=True, measured=measured)
    assert math.isclose(t, 20e-6 + 1.0 * 1e9 / 300e9, rel_tol=1e-12)
    # across nodes the measurement (taken inside one) does not apply
    assert collective_time_s("all_reduce", 1e9, 2, H100, same_node=False, measured=measured) == \
        collective_time_s("all_reduce", 1e9, 2, H100, same_node=False)
    # ops it did not measure keep the catalog
    assert collective_time_s("all_gather", 1e9, 2, H100, True, measured) == collective_time_s("all_gather", 1e9, 2, H100, True)
    # slower links, longer collectives
    assert collective_time_s("all_gather", 1e9, 2, H100, True, link_bw_scale=0.5) > collective_time_s("all_gather", 1e9, 2, H100, True)


def test_unknown_collective_is_a_bug():
    with pytest.raises(ValueError, match="unknown collective"):
        bus_factor("broadcast", 2)


def test_pipelined_overlap_leaves_the_local_chunk_uncovered():
    # 8 ranks, a 1 ms all-gather beside a 1 ms GEMM: 7 of its 8 chunks cover the transfers,
    # 1 - 7/8 ms stays exposed; a GEMM twice as long hides it all
    assert pipelined_exposed_s("all_gather", 1e-3, 1e-3, 8) == pytest.approx(1e-3 / 8)
    assert pipelined_exposed_s("all_gather", 1e-3, 2e-3, 8) == 0.0
    # two ranks: the one transfer leaves after the remote chunk (0.5 ms) and must hide behind the
    # local chunk: 1 ms - 0.5 ms exposed
    assert pipelined_exposed_s("reduce_scatter", 1e-3, 1e-3, 2) == pytest.approx(0.5e-3)
    # never better than perfect overlap, nothing without TP
    for kind in ("all_gather", "reduce_scatter", "all_reduce"):
        assert pipelined_exposed_s(kind, 3e-3, 1e-3, 4) >= 2e-3
        assert pipelined_exposed_s(kind, 3e-3, 1e-3, 1) == 0.0

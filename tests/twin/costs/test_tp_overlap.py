"""TransformerEngine's userbuffers overlap timelines (twin/costs/tp_overlap.py), by hand."""

import pytest

from twin.costs import tp_overlap as ub


def test_a_gemm_beside_a_window_runs_slower_only_inside_it():
    # no window, a window after the GEMM or a slowdown of 1: the GEMM alone
    assert ub.gemm_beside_window_s(2.0, 0.0, 0.0, 1.5) == 2.0
    assert ub.gemm_beside_window_s(2.0, 3.0, 5.0, 1.5) == 2.0
    assert ub.gemm_beside_window_s(2.0, 0.0, 5.0, 1.0) == 2.0
    # the window outlasts the slowed GEMM: all of it at 1/1.5 of its rate
    assert ub.gemm_beside_window_s(2.0, 0.0, 5.0, 1.5) == pytest.approx(3.0)
    # a window of 1.5 s from 0.5 s: 0.5 s alone, 1.5 s beside (1 s of work), the last 0.5 s alone
    assert ub.gemm_beside_window_s(2.0, 0.5, 2.0, 1.5) == pytest.approx(2.5)
    with pytest.raises(ValueError):
        ub.gemm_beside_window_s(1.0, 0.0, 1.0, 0.9)


def test_the_pipelined_reduce_scatter_exposes_the_last_chunk_or_the_communication_beyond_the_gemms():
    g, f, n = 1.0, 1.25, 4
    # communication-bound (r > g f): every chunk after the first runs wholly beside a reduce-scatter,
    # the reduce-scatters run back to back after the first chunk
    gemm_end, end = ub.pipelined_reduce_scatter_s(g, 3.0, n, f)
    assert gemm_end == pytest.approx(g + (n - 1) * g * f) and end == pytest.approx(g + n * 3.0)
    # compute-bound (r < g): each reduce-scatter beside the start of the next chunk, the last one exposed
    r = 0.5
    gemm_end, end = ub.pipelined_reduce_scatter_s(g, r, n, f)
    assert gemm_end == pytest.approx(n * g + (n - 1) * r * (1 - 1 / f)) and end - gemm_end == pytest.approx(r)
    # no SM contention: TE's chunks cost nothing beyond themselves, comm/n stays exposed
    assert ub.pipelined_reduce_scatter_s(g, r, n, 1.0) == pytest.approx((n * g, n * g + r))
    assert ub.pipelined_reduce_scatter_s(g, r, 1, f) == pytest.approx((g, g + r))


def test_a_bulk_overlap_hides_the_collective_behind_the_slowed_gemm():
    # the collective outlasts the slowed GEMM: the GEMM at its slowed rate, the rest exposed
    assert ub.bulk_overlap_s(1.0, 2.0, 1.5) == pytest.approx((1.5, 0.5))
    # a short collective: the GEMM slowed while it runs, nothing exposed
    assert ub.bulk_overlap_s(1.0, 0.3, 1.5) == pytest.approx((1.0 + 0.3 * (1 - 1 / 1.5), 0.0))


def test_te_defaults_as_the_source_sets_them():
    # TE v1.8 initialize_ub: ring_exchange for the column-parallel fprop and the row-parallel dgrad,
    # pipeline for the row-parallel fprop, bulk for the column-parallel dgrad/wgrad; 16 SMs, 4 splits
    assert ub.TE_METHODS == {"in_fwd": "ring_exchange", "out_fwd": "pipeline", "out_bwd": "ring_exchange",
                             "in_bwd": "bulk"}
    assert (ub.TE_COMM_SMS, ub.TE_PIPELINE_SPLITS) == (16, 4)


def test_two_kernels_sharing_the_gpu_each_slowed_while_both_run():
    # (ADOPT_TP_TRAFFIC_MEASURED, docs/notes/s30mlm_rule.md) GEMM 1.0 s, comm 0.5 s, slowed 1.5x and 2x:
    # the comm ends first at 0.5 x 2 = 1.0 s, the GEMM has done 1.0 / 1.5 of its second, 1/3 s left alone
    assert ub.shared_gpu_s(1.0, 0.5, 1.5, 2.0) == pytest.approx((1.0 + 1 / 3, 1.0))
    # GEMM 0.4 s ends first at 0.6 s; the comm has done 0.3 of its 1.0 s, 0.7 s left alone
    assert ub.shared_gpu_s(0.4, 1.0, 1.5, 2.0) == pytest.approx((0.6, 1.3))
    # an unslowed comm: bulk_overlap_s's GEMM end and exposure
    for g, c in ((1.0, 0.5), (0.4, 1.0), (2.0, 2.0)):
        gemm_end, comm_end = ub.shared_gpu_s(g, c, 1.35, 1.0)
        assert (gemm_end, max(0.0, comm_end - gemm_end)) == pytest.approx(ub.bulk_overlap_s(g, c, 1.35))
    with pytest.raises(ValueError):
        ub.shared_gpu_s(1.0, 1.0, 1.2, 0.9)


def test_the_pipelined_reduce_scatter_with_both_slowed():
    # chunks 1.0 s, reduce-scatters 0.5 s, 2 splits, both slowed 2x: chunk 0 alone to 1.0; chunk 1 beside
    # reduce-scatter 0 (each at half rate) to 2.0, when the reduce-scatter ends; chunk 1's last 0.5 s alone
    # to 2.5; the last reduce-scatter alone to 3.0
    assert ub.pipelined_reduce_scatter_shared_s(1.0, 0.5, 2, 2.0, 2.0) == pytest.approx((2.5, 3.0))
    # an unslowed reduce-scatter: pipelined_reduce_scatter_s, communication- and compute-bound
    for r in (3.0, 0.5, 1.0):
        for n in (1, 2, 4):
            assert ub.pipelined_reduce_scatter_shared_s(1.0, r, n, 1.25, 1.0) == pytest.approx(
                ub.pipelined_reduce_scatter_s(1.0, r, n, 1.25))
    with pytest.raises(ValueError):
        ub.pipelined_reduce_scatter_shared_s(1.0, 1.0, 0, 1.2, 1.0)

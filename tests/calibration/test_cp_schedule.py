"""calibration/cp_schedule.py (docs/notes/s27cp_rule.md): a rank's trace read as its sequence of kernels,
collective issues and waits, and the lock-step replay of the ranks, on synthetic traces whose
arithmetic is worked out in the comments."""

import pytest

from calibration import cp_schedule

K = lambda ms, cls="attention": {"kind": "kernel", "cls": cls, "dur_s": ms * 1e-3}   # noqa: E731
ISSUE, WAIT = {"kind": "issue", "op": "all_gather_into_tensor"}, {"kind": "wait"}


def test_a_misplaced_gather_costs_one_call_once_not_every_block():
    """Rank 0 runs its 10 ms call before the gather, rank 1 after (the same work, placed apart by
    their own compiled graphs); the gather moves 1 ms. One block: the gather ends at 10 + 1 = 11,
    rank 1 then runs 10 + 5: 26 ms against the aligned 15 + 1 = 16. A chain of N blocks: after the
    first meeting the ranks run in step, 16 ms a block, so 16 N + 10 (the 10 ms paid once)."""
    r0 = [K(10), ISSUE, WAIT, K(5, "gemm")]
    r1 = [ISSUE, WAIT, K(10), K(5, "gemm")]
    t = {"all_gather_into_tensor": 1e-3}
    assert cp_schedule.replay([r0, r1], t, chain=1) == pytest.approx((26e-3, 16e-3))
    for n in (2, 3, 8):
        assert cp_schedule.replay([r0, r1], t, chain=n) == pytest.approx((16e-3 * n + 10e-3, 16e-3 * n))
    assert cp_schedule.excess_s([r0, r1], t, chain=8) == pytest.approx(10e-3 / 8)


def test_ranks_slow_in_different_intervals_cost_every_block():
    """Two meetings a block: rank 0 runs 5 ms before the first and 1 ms before the second, rank 1 the
    other way round (6 ms each). Every interval waits on the slower rank: 5 + 5 = 10 ms a block, so
    a chain of N blocks takes 10 N ms against the aligned 6 N (no transfer): 4 ms a block, every block."""
    r0 = [K(5), ISSUE, WAIT, K(1), ISSUE, WAIT]
    r1 = [K(1), ISSUE, WAIT, K(5), ISSUE, WAIT]
    for n in (1, 4):
        assert cp_schedule.replay([r0, r1], {}, chain=n) == pytest.approx((10e-3 * n, 6e-3 * n))
    assert cp_schedule.excess_s([r0, r1], {}, chain=4) == pytest.approx(4e-3)


def test_ranks_issuing_different_collectives_are_refused():
    with pytest.raises(ValueError, match="ranks issue different collectives"):
        cp_schedule.replay([[ISSUE, WAIT], [K(1)]], {})


def _trace():
    """Two repetitions of fwd (0-100 us, 200-300) and bwd (100-200, 300-400) host ranges; in the
    first fwd: a kernel launched at 10 (correlation 1, 20 us), an all-gather issued at 40 with a
    nested issue inside it (not counted), its wait at 50, a kernel launched at 60 (correlation 2,
    30 us); in the first bwd a memset launched at 120 (5 us); a kernel launched outside every range."""
    ev = [{"cat": "user_annotation", "ph": "X", "name": n, "ts": t, "dur": 100} for n, t in
          (("fwd", 0), ("bwd", 100), ("fwd", 200), ("bwd", 300))]
    ev += [{"cat": "cuda_runtime", "ts": t, "args": {"correlation": c}} for c, t in ((1, 10), (2, 60), (3, 120), (4, 450))]
    ev += [{"cat": "kernel", "ph": "X", "name": "flash_fwd_kernel", "ts": 15, "dur": 20, "args": {"correlation": 1}},
           {"cat": "kernel", "ph": "X", "name": "nvjet_gemm", "ts": 70, "dur": 30, "args": {"correlation": 2}},
           {"cat": "gpu_memset", "ph": "X", "name": "Memset", "ts": 125, "dur": 5, "args": {"correlation": 3}},
           {"cat": "kernel", "ph": "X", "name": "flash_bwd_kernel", "ts": 455, "dur": 9, "args": {"correlation": 4}}]
    ev += [{"cat": "cpu_op", "name": "_c10d_functional::all_gather_into_tensor", "ts": 40, "dur": 5, "tid": 1},
           {"cat": "cpu_op", "name": "_c10d_functional::all_gather_into_tensor_out", "ts": 41, "dur": 2, "tid": 1},
           {"cat": "cpu_op", "name": "_c10d_functional::wait_tensor", "ts": 50, "dur": 1, "tid": 1}]
    return {"traceEvents": ev}


def test_rank_sequence_orders_kernels_issues_and_waits_by_host_time():
    seq = cp_schedule.rank_sequence(_trace())
    fwd = seq[(0, "fwd")]
    assert [(i["kind"], i.get("cls", i.get("op"))) for i in fwd] == [
        ("kernel", "attention"), ("issue", "all_gather_into_tensor"), ("wait", None), ("kernel", "gemm")]
    assert [i["dur_s"] for i in fwd if i["kind"] == "kernel"] == pytest.approx([20e-6, 30e-6])
    assert [(i["cls"], i["dur_s"]) for i in seq[(0, "bwd")]] == [("other", pytest.approx(5e-6))]
    assert set(seq) == {(0, "fwd"), (0, "bwd")}   # nothing launched in the second repetition's ranges
    assert cp_schedule.kernel_class("flash_bwd_dq_dk_dv_loop_seqk_parallel_kernel") == "attention_bwd"

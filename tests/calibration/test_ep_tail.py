"""calibration/ep_tail.py (s12ep2): an op's GPU tail past its host split by kernel group, and its
NCCL kernels' wait for the peer rank, from pipeline_kernel_events.csv rows."""

import pandas as pd
import pytest

from calibration.ep_tail import kernel_group, nccl_table, tail_table

CFG = dict(model="m", schedule="1f1b", pp=1, ep=2, num_microbatches=1)


def _row(rank, event, name, start, end, t0_ns=0, op=0, kind="F", stream=7):
    return dict(CFG, rank=rank, op_index=op, kind=kind, microbatch=0, event=event, name=name, stream=stream,
                start_us=start, end_us=end, profiler_t0_ns=t0_ns)


def test_kernel_groups_by_name():
    assert kernel_group("ncclDevKernel_SendRecv(ncclDevKernelArgsStorage<4096ul>)") == "nccl"
    assert kernel_group("nvjet_tst_128x256_64x4_1x2_h_bz_coopA_NTT") == "gemm"
    assert kernel_group("void at::native::(anonymous namespace)::vectorized_gather_kernel<16, long>") == "gather"
    assert kernel_group("void at::native::vectorized_elementwise_kernel<4, at::native::CUDAFunctor_add>") == \
        "elementwise"
    assert kernel_group("something new") == "other"


def test_tail_is_the_gpu_time_past_the_host_end_by_group():
    """Host issues 0-100 us; a GEMM runs 60-150, a gather 150-160, idle 160-170, a loss kernel
    170-200: tail 100 us = gemm 50 + gather 10 + softmax_loss 30 + idle 10."""
    ev = pd.DataFrame([_row(0, "op_host", "pp_op/0", 0, 100),
                       _row(0, "kernel", "nvjet_gemm", 60, 150),
                       _row(0, "kernel", "vectorized_gather_kernel", 150, 160),
                       _row(0, "kernel", "cunn_SoftMaxForward", 170, 200),
                       _row(0, "kernel", "nvjet_gemm", 10, 40),                 # before the host's end
                       _row(0, "kernel", "nvjet_gemm", 500, 600, op=1, kind="BW")])   # another op
    t = tail_table(ev, "F")
    assert len(t) == 1
    r = t.iloc[0]
    assert r["host_end_ms"] == pytest.approx(0.1) and r["gpu_end_ms"] == pytest.approx(0.2)
    assert r["tail_ms"] == pytest.approx(0.1)
    assert (r["gemm_ms"], r["gather_ms"], r["softmax_loss_ms"], r["idle_ms"]) == \
        (pytest.approx(0.05), pytest.approx(0.01), pytest.approx(0.03), pytest.approx(0.01))
    assert r["tail_kernels"] == 3


def test_nccl_wait_is_the_later_ranks_start_on_the_shared_clock():
    """Rank 1's profiler axis starts 1,000 us later on the host clock; its all-to-all starts at
    abs 1,300 against rank 0's 1,000: rank 0 waits 300 us of its 400 us kernel, rank 1 none."""
    ev = pd.DataFrame([_row(0, "kernel", "ncclDevKernel_SendRecv", 1000, 1400, t0_ns=0),
                       _row(1, "kernel", "ncclDevKernel_SendRecv", 300, 400, t0_ns=1_000_000),
                       _row(0, "kernel", "nvjet_gemm", 0, 900)])
    n = nccl_table(ev, "F").set_index("rank")
    assert n.loc[0, "nccl_ms"] == pytest.approx(0.4) and n.loc[0, "wait_ms"] == pytest.approx(0.3)
    assert n.loc[0, "rest_ms"] == pytest.approx(0.1)
    assert n.loc[1, "wait_ms"] == pytest.approx(0.0) and n.loc[1, "calls"] == 1


def test_segments_split_the_op_at_device_to_host_copies():
    """Kernels 0-50, a DtoH copy 50-52 (the host's .tolist()), the host launches again at 80:
    segment 0 spans 0-52 (gemm 50, copy 2), segment 1 spans 52-100 with 28 us idle."""
    from calibration.ep_tail import segments_table
    ev = pd.DataFrame([_row(0, "op_host", "pp_op/0", 0, 90),
                       _row(0, "kernel", "nvjet_gemm", 0, 50),
                       _row(0, "memcpy", "Memcpy DtoH (Device -> Pageable)", 50, 52),
                       _row(0, "kernel", "vectorized_gather_kernel", 80, 100)])
    s = segments_table(ev, "F").set_index("segment")
    assert list(s.index) == [0, 1] and list(s["sync"]) == [1, 0]
    assert s.loc[0, "span_ms"] == pytest.approx(0.052) and s.loc[0, "gemm_ms"] == pytest.approx(0.05)
    assert s.loc[1, "span_ms"] == pytest.approx(0.048) and s.loc[1, "idle_ms"] == pytest.approx(0.028)
    assert s.loc[1, "gather_ms"] == pytest.approx(0.02)


def test_unlinked_activities_are_attributed_in_issue_order():
    """torch 2.11's profiler left every activity unlinked (op_index -1): the barrier's kernel that
    starts before op 0's host range stays -1, then op 0 takes its 2 calls, op 1 its 1."""
    from calibration.ep_tail import attribute_in_issue_order
    ev = pd.DataFrame([_row(0, "op_host", "pp_op/0", 100, 200, op=0, kind="F"),
                       _row(0, "op_host", "pp_op/1", 200, 300, op=1, kind="BW"),
                       _row(0, "kernel", "ncclDevKernel_AllReduce", 10, 90, op=-1, kind=""),
                       _row(0, "kernel", "a", 120, 130, op=-1, kind=""),
                       _row(0, "kernel", "nccl:all_to_all", 130, 140, op=-1, kind=""),    # GPU-side mirror
                       _row(0, "kernel", "b", 130, 140, op=-1, kind=""),
                       _row(0, "kernel", "c", 210, 260, op=-1, kind="")])
    calls = pd.DataFrame([dict(CFG, rank=0, op_index=0, calls=2), dict(CFG, rank=0, op_index=1, calls=1),
                          dict(CFG, rank=0, op_index=-1, calls=1)])
    got = attribute_in_issue_order(ev, calls).set_index("name")
    assert got.loc["ncclDevKernel_AllReduce", "op_index"] == -1
    assert (got.loc["a", "op_index"], got.loc["b", "op_index"], got.loc["c", "op_index"]) == (0, 0, 1)
    assert (got.loc["a", "kind"], got.loc["c", "kind"]) == ("F", "BW")

"""real/bench/deepep_ll.py and real/campaigns/s22dep.sh (issue 15: DeepEP's low-latency send and
receive kernels timed apart): the kernel trace split into send and receive phases, and the campaign's
CPU dry run where deep_ep is absent (one status row with the full column schema and its environment);
on a host without GPUs it stops cleanly."""

import csv
import math

import pytest

from real.bench import deepep_ll
from tests.campaigns import dry_run, without_gpus

DISPATCH = "void deep_ep::internode_ll::dispatch<true, false, 7168>(void*, float*, int*)"
COMBINE = "void deep_ep::internode_ll::combine<false, 7168, 9>(void*, void*, int*)"


def _kernel(name, ts, dur, grid=(132, 1, 1)):
    return {"ph": "X", "cat": "kernel", "name": name, "ts": ts, "dur": dur, "args": {"grid": list(grid)}}


def _trace(hook: bool) -> dict:
    """Two rounds; with the hook each op's kernel runs twice (send, then receive after a sleep)."""
    events = [{"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 0, "dur": 5},
              _kernel("void deep_ep::clean_low_latency_buffer<32>(int*)", 1, 2, (1, 1, 1))]
    t = 10.0
    for r in range(2):
        per_op = [(DISPATCH, 20 + r, 6 + r), (COMBINE, 30 + r, 8 + r)] if hook else [(DISPATCH, 40 + r, 0),
                                                                                    (COMBINE, 50 + r, 0)]
        for name, send, recv in per_op:
            events.append(_kernel(name, t, send))
            t += send + 300
            if hook:
                events.append(_kernel(name, t, recv))
                t += recv + 1
    events.append(_kernel("void at::native::elementwise_kernel<128, 4>(int)", t, 3))
    return {"traceEvents": events[::-1]}   # out of order: trace_kernels sorts by start


def test_kernel_kind_names_only_deepep_low_latency_kernels():
    assert deepep_ll.kernel_kind(DISPATCH) == "dispatch"
    assert deepep_ll.kernel_kind(COMBINE) == "combine"
    assert deepep_ll.kernel_kind("void deep_ep::intranode::dispatch<8, 768>(int*)") is None
    assert deepep_ll.kernel_kind("void deep_ep::internode_ll::dispatcher(int*)") is None


def test_hook_trace_splits_into_send_and_receive():
    kernels = deepep_ll.trace_kernels(_trace(hook=True))
    assert [k["kind"] for k in kernels] == ["dispatch", "dispatch", "combine", "combine"] * 2
    phases = deepep_ll.split_phases(kernels, "dispatch", hook=True)
    # sends 20, 21 us; receives 6, 7 us (in seconds)
    assert phases["send"] == pytest.approx([20e-6, 21e-6]) and phases["recv"] == pytest.approx([6e-6, 7e-6])
    cols = deepep_ll.kernel_columns(kernels, hook=True)
    assert cols["combine_send_s"] == pytest.approx(30.5e-6) and cols["combine_recv_s"] == pytest.approx(8.5e-6)
    assert cols["combine_recv_p10_s"] == pytest.approx(8.1e-6) and cols["combine_recv_p90_s"] == pytest.approx(8.9e-6)
    assert cols["dispatch_grid_blocks"] == 132


def test_no_hook_trace_books_the_one_kernel_as_send():
    cols = deepep_ll.kernel_columns(deepep_ll.trace_kernels(_trace(hook=False)), hook=False)
    assert cols["dispatch_send_s"] == pytest.approx(40.5e-6) and math.isnan(cols["dispatch_recv_s"])


def test_odd_kernel_count_with_hook_is_an_error():
    kernels = deepep_ll.trace_kernels(_trace(hook=True))[:-1]
    with pytest.raises(ValueError, match=r"combine: 3 kernels with the receive hook"):
        deepep_ll.split_phases(kernels, "combine", hook=True)


def test_s22dep_campaign_cpu_dry_run_without_deep_ep(tmp_path):
    d, log = dry_run("s22dep", tmp_path, 60, scale=1)
    assert "s22dep part ll rc=0" in log and "deep_ep not importable" in log, log[-2000:]
    with open(d / "x2" / "rank0" / "deepep_ll.csv", newline="") as f:
        reader = csv.DictReader(f)
        header, rows = reader.fieldnames, list(reader)
    assert header == deepep_ll.COLS
    assert len(rows) == 1 and rows[0]["status"] == "deep_ep_absent"
    r = rows[0]
    assert (r["hidden"], r["num_experts"], r["top_k"], r["max_tokens_per_rank"]) == ("7168", "256", "8", "128")
    assert r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] and r["num_gpus"] == "1"


def test_s22dep_campaign_without_gpus_runs_nothing(tmp_path):
    d, log = without_gpus("s22dep", tmp_path)
    assert "needs 2: nothing run" in log and not (d / "x2").exists()

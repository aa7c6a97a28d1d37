"""calibration.ep_phases (s23bwd, issue 13): an EP2 step's phases measured per rank (pipeline_ops.csv) beside
the twin's, the backward all-to-all nodes' host calls (real/ep.py's autograd-thread marks), and the twin side
priced as the held-out EP2 steps are (prereg.predict_ep)."""

import numpy as np
import pandas as pd
import pytest

from calibration import ep_phases as ph
from calibration import prereg
from calibration import records as rec
from calibration.records_io import read_csv

BENCH_SMALL = rec.MEASUREMENTS_DIR / "h100x2" / "s23ephost_20261128_0023" / "holdout" / "bench-small"


@pytest.fixture(scope="module")
def inputs():
    """The committed h100x2 folder's pricing inputs (prereg.two_gpu_inputs), computed once."""
    return prereg.two_gpu_inputs("h100")


def _ops(rank: int, bw_end_s: float, bw_host_end_s: float) -> list[dict]:
    """One rank's one-micro-batch EP2 step: F 0-10 ms (host 0-9), BW 10 ms to bw_end_s (host from 10 ms
    to bw_host_end_s), allreduce 1 ms after it."""
    base = {"pp": 1, "ep": 2, "num_microbatches": 1, "rep": 0, "rank": rank, "microbatch": 0}
    return [{**base, "op_index": 0, "kind": "F", "start_s": 0.0, "end_s": 0.010, "host_start_s": 0.0, "host_end_s": 0.009},
            {**base, "op_index": 1, "kind": "BW", "start_s": 0.010, "end_s": bw_end_s, "host_start_s": 0.010,
             "host_end_s": bw_host_end_s},
            {**base, "op_index": 2, "kind": "allreduce", "start_s": bw_end_s + 0.0005, "end_s": bw_end_s + 0.0015,
             "host_start_s": bw_end_s, "host_end_s": bw_end_s + 0.001}]


def test_measured_phases_sum_each_kind_and_name_the_rank_whose_backward_paces_the_step():
    ops = pd.DataFrame(_ops(0, 0.026, 0.0259) + _ops(1, 0.024, 0.021))
    m = ph.measured_phases(ops).set_index("rank")
    assert np.isclose(m.loc[0, "BW_gpu_s"], 0.016) and np.isclose(m.loc[1, "BW_gpu_s"], 0.014)
    assert np.isclose(m.loc[0, "BW_host_s"], 0.0159) and np.isclose(m.loc[0, "BW_lag_s"], 0.0001)
    assert np.isclose(m.loc[1, "BW_lag_s"], 0.003)          # rank 1's GPU ran 3 ms behind its host
    assert np.isclose(m.loc[0, "gaps_s"], 0.0005)           # the 0.5 ms before the reduction
    assert list(m["pacer"]) == [True, False]


def test_backward_a2a_calls_time_each_node_from_its_mark_to_its_end():
    base = {"model": "m", "num_microbatches": 1, "rep": 0, "rank": 0, "op_index": 1, "kind": "BW", "microbatch": 0}
    rows = []
    for layer, call_s in ((0, 200e-6), (1, 300e-6)):
        t = 0.01 * (layer + 1)
        rows += [{**base, "layer": layer, "mark": "bwd_combine_a2a", "host_s": t},
                 {**base, "layer": layer, "mark": "bwd_combine_a2a_end", "host_s": t + call_s},
                 {**base, "layer": layer, "mark": "bwd_dispatch_a2a", "host_s": t + 0.002},
                 {**base, "layer": layer, "mark": "bwd_dispatch_a2a_end", "host_s": t + 0.002 + call_s / 2}]
    rows.append({**base, "kind": "F", "layer": 0, "mark": "dispatch", "host_s": 0.0})   # forward marks ignored
    calls = ph.backward_a2a_calls(pd.DataFrame(rows)).set_index("mark")
    assert np.isclose(calls.loc["bwd_combine_a2a", "call_s"], 250e-6)
    assert np.isclose(calls.loc["bwd_dispatch_a2a", "call_s"], 125e-6)
    assert set(calls["calls"]) == {2}


def test_backward_launch_rate_takes_the_a2a_calls_out_first():
    table = pd.DataFrame({"BW_host_s": [0.0107], "BW_launches": [100], "BW_a2a_calls": [4]})
    assert np.isclose(ph.backward_launch_rate_s(table, 250e-6).iloc[0], (0.0107 - 0.001) / 96)


def test_twin_phases_price_the_step_as_the_held_out_rows_are(inputs):
    """The twin side is prereg.predict_ep's step for the same row and routing, and its per-micro-batch F, B,
    W windows and remainder add up to it; the backward's all-to-all nodes are counted two a MoE layer."""
    twin = ph.twin_phases(BENCH_SMALL, "h100", inputs)
    steps = read_csv(BENCH_SMALL / "pipeline_step.csv")
    rows = [{"gpu": "h100", **r} for r in steps.to_dict("records")]
    pred = prereg.predict_ep(rows, routing=read_csv(BENCH_SMALL / "pipeline_routing.csv"), inputs={"h100": inputs})
    assert np.allclose(twin["twin_s"].to_numpy(), pred["predicted_s"].to_numpy())
    n = twin["num_microbatches"]
    assert np.allclose(n * (twin["F_s"] + twin["B_s"] + twin["W_s"]) + twin["rest_s"], twin["twin_s"])
    assert set(twin["B_a2a_calls"]) == {6}                  # bench-small x4: three MoE layers after a dense one


def test_bench_small_backward_is_host_bound_and_the_control_gpu_bound(inputs):
    """What the residual table reads off the records: bench-small's pacing backward ends with its host (the
    GPU level with it), qwen3moe-slice's GPU runs tens of ms behind its host (the host's time hidden)."""
    small = ph.residual_table(BENCH_SMALL, "h100", inputs)
    control = ph.residual_table(BENCH_SMALL.parent / "qwen3moe-slice", "h100", inputs)
    assert (small["BW_lag_s"] < 0.5e-3).all() and (control["BW_lag_s"] > 10e-3).all()
    assert np.allclose(small["step_measured_s"], small["F_measured_s"] * small["num_microbatches"]
                       + small["BW_measured_s"] * small["num_microbatches"] + small["rest_measured_s"])


def test_op_kernels_split_a_profiled_backward_into_busy_idle_and_its_all_to_all_calls():
    base = {"model": "m", "num_microbatches": 1, "rank": 0, "op_index": 1, "kind": "BW", "stream": 7}
    rows = [{**base, "event": "op_host", "name": "pp_op/1", "start_us": 100.0, "end_us": 400.0, "launch_us": 100.0}]
    # three kernels launched 20 us apart, then the all-to-all 250 us after the last, then one more (on
    # the GPU inside the all-to-all's span: the union counts it once); each starts 10 us after its launch
    launches = [(110.0, "k0", 10), (130.0, "k1", 10), (150.0, "k2", 10), (400.0, "nccl:all_to_all", 30), (410.0, "k3", 10)]
    for launch, name, dur in launches:
        rows.append({**base, "event": "kernel", "name": name, "start_us": launch + 10, "end_us": launch + 10 + dur,
                     "launch_us": launch})
    k = ph.op_kernels(pd.DataFrame(rows)).iloc[0]
    assert k["launches"] == 5 and k["nccl_kernels"] == 1
    assert np.isclose(k["gpu_span_s"], 320e-6)                  # 120 to 440 us
    assert np.isclose(k["gpu_busy_s"], 60e-6) and np.isclose(k["gpu_idle_s"], 260e-6)
    assert np.isclose(k["nccl_host_gap_s"], 250e-6) and np.isclose(k["nccl_gpu_s"], 30e-6)
    assert np.isclose(k["host_per_launch_s"], (410 - 100) * 1e-6 / 5)


def test_the_s23bwd_profiled_backwards_bench_small_host_bound_the_control_gpu_bound():
    """The committed campaign's profiled steps (h100x2/s23bwd_20261128_0110, split fit): bench-small's backward
    GPU waits for its host most of its span on the pacing rank, qwen3moe-slice's hardly at all; each backward
    holds two all-to-all calls a MoE layer (three MoE layers, four)."""
    run = rec.MEASUREMENTS_DIR / "h100x2" / "s23bwd_20261128_0110"
    for model, moe_layers, idle_frac in (("bench-small", 3, (0.5, 1.0)), ("qwen3moe-slice", 4, (0.0, 0.1))):
        k = ph.op_kernels(read_csv(run / model / "pipeline_kernel_events.csv", low_memory=False), "BW")
        slower = k.loc[k.groupby(["num_microbatches", "op_index"])["host_s"].idxmax()]
        frac = slower["gpu_idle_s"] / slower["gpu_span_s"]
        assert frac.between(*idle_frac).all(), (model, frac.tolist())
        assert set(k["nccl_kernels"]) == {2 * moe_layers}

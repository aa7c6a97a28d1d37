"""calibration.cp_traces: a traced repetition split into attention, eager, host gaps, waits on NCCL
and latency (hand-made activity rows), and the twin's pieces of a CP2 row summing to its device
time."""

import dataclasses

import pandas as pd
import pytest

from calibration import cp_traces as ct
from calibration import parallel_blocks as blocks
from calibration.fit import collectives_terms
from calibration.predict import gpu_spec
from calibration.validate import load_fitted_profile


def _act(name, category, stream, start, end, launch, event="kernel"):
    return dict(event=event, name=name, category=category, stream=stream, start_us=start, end_us=end,
                launch_us=launch)


def test_rep_breakdown_tells_host_gaps_from_waits_on_nccl():
    acts = pd.DataFrame([
        _act("copy", "copy", 7, 10, 20, 5),           # 10 us from the rep's start: 5 host, 5 latency
        _act("fmha", "attention", 7, 20, 120, 8),     # back to back
        _act("nccl", "nccl", 21, 30, 150, 9),         # the exchange beside it, 30 us past compute
        _act("merge", "elementwise", 7, 155, 165, 60),  # launched early, waits for the exchange
        _act("cast", "elementwise", 7, 200, 210, 190),  # the host was 25 us late, then 10 us latency
        _act("cudaStreamWaitEvent", "wait_event", "", float("nan"), float("nan"), 50, event="wait_event"),
    ])
    b = {k: round(v * 1e6, 6) if k.endswith("_s") else v for k, v in ct.rep_breakdown(acts).items()}
    assert b["kernels"] == 4 and b["span_s"] == 210
    assert b["attention_s"] == 100 and b["eager_s"] == 30
    assert b["host_gap_s"] == 5 + 25 and b["comm_wait_s"] == 35 and b["latency_s"] == 5 + 10
    assert b["span_s"] == b["attention_s"] + b["eager_s"] + b["host_gap_s"] + b["comm_wait_s"] + b["latency_s"]
    assert b["nccl_s"] == 120 and b["nccl_exposed_s"] == 30


@pytest.fixture(scope="module")
def h200():
    prof, _ = load_fitted_profile("h200", None)
    return prof if prof.collectives else dataclasses.replace(prof, collectives=collectives_terms("h200")[0])


@pytest.mark.parametrize("kind", ["ring", "allgather"])
def test_twin_pieces_add_up_to_the_cp_parts_device_time(h200, kind):
    row = dict(bench="cp_block", block="attention", model="v2-lite-slice", tp=1, cp=2, cp_kind=kind,
               sequence_parallel=False, tokens=8192, seq_len=8192, batch=1, num_heads=16, qk_head_dim=192,
               v_head_dim=128, precision="bf16", split="fit")
    terms = {"offdiag_scale": 1.2, "merge_factor": 2.0, "host_per_op": {kind: 1e-5}}
    p = ct.twin_pieces(row, gpu_spec("h200"), h200, {}, terms)
    assert p["attention_s"] > 0 and p["eager_s"] > 0 and p["exposed_s"] >= 0
    assert p["device_s"] == pytest.approx(p["attention_s"] + p["eager_s"] + p["exposed_s"])
    assert p["predicted_s"] == pytest.approx(max(p["device_s"], p["host_s"]), rel=0.2)
    doubled = ct.twin_pieces(row, gpu_spec("h200"), h200, {}, dict(terms, merge_factor=4.0))
    assert doubled["eager_s"] == pytest.approx(2 * p["eager_s"])
    assert doubled["attention_s"] == p["attention_s"] and doubled["exposed_s"] == pytest.approx(p["exposed_s"])
    assert blocks.predict_cp_row(row, gpu_spec("h200"), h200, {}, terms) == p["predicted_s"]

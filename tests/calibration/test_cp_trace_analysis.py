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
    assert b["coll_s"] == 0 and b["span_s"] == b["attention_s"] + b["eager_s"] + b["host_gap_s"] + b["comm_wait_s"] + b["latency_s"]
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


def test_rep_sync_starts_each_two_gpu_repetition_with_the_host_at_the_gpu(h200, monkeypatch):
    """parallel_blocks.ADOPT_CP_REP_SYNC (s13cp's candidate B; docs/notes/s17tp_rule.md's S_CP):
    where on, a W-rank row's repetition starts synchronised, so the GPU waits for the host's first
    ops and the host's lead never carries over; the one-GPU reference rows never change."""
    monkeypatch.setattr(blocks, "ADOPT_CP_REP_SYNC", False)
    spec = gpu_spec("h200")
    terms = {"offdiag_scale": 1.2, "merge_factor": 2.0, "host_per_op": {"ring": 1e-4}}
    row = dict(bench="cp_block", block="attention", model="v3-slice-1l", tp=1, cp=2, cp_kind="ring",
               sequence_parallel=False, tokens=8192, seq_len=8192, batch=1, num_heads=128, qk_head_dim=192,
               v_head_dim=128, precision="bf16", split="fit")
    ref = dict(row, cp=1, cp_kind="")
    off = (blocks.predict_cp_row(row, spec, h200, {}, terms), blocks.predict_cp_row(ref, spec, h200, {}, terms))
    monkeypatch.setattr(blocks, "ADOPT_CP_REP_SYNC", True)
    on = (blocks.predict_cp_row(row, spec, h200, {}, terms), blocks.predict_cp_row(ref, spec, h200, {}, terms))
    assert on[1] == off[1]
    assert 1e-4 <= on[0] - off[0] <= 1e-4 + 1e-9 + 0.05 * off[0]   # at least the first op's host lead


def test_case_medians_take_the_slowest_rank_and_drop_the_profilers_start_up():
    def acts(rank, rep, attn_us):
        return [dict(block="attention", model="m", cp_kind="ring", seq_len=8, split="fit", rank=rank, rep=rep,
                     **_act("fmha", "attention", 7, 10, 10 + attn_us, 1))]
    kernels = pd.DataFrame(acts(0, 0, 100) + acts(1, 0, 300) + acts(0, 1, 5000) + acts(1, 1, 200))
    reps = pd.DataFrame([dict(block="attention", model="m", cp_kind="ring", seq_len=8, rank=rk, rep=i, profiled=0,
                              device_s=d, host_s=1e-4, comm_detail='{"p2p_wait": 1e-05}')
                         for rk, d in ((0, 2e-4), (1, 3e-4)) for i in range(3)])
    med = ct.case_medians(kernels, reps)
    # rep 0: rank 1 is the slower (310 us); rep 1: rank 0's 5 ms profiled repetition is start-up, dropped
    assert len(med) == 1 and med["span_s"].iloc[0] == pytest.approx((310e-6 + 210e-6) / 2)
    assert med["device_s"].iloc[0] == pytest.approx(3e-4) and med["comm_s"].iloc[0] == pytest.approx(1e-5)

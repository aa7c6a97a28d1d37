"""real/bench/mla_loop.py (s11mla): an MLA layer record's loop timed on the host beside its setup
and its call alone, run on the CPU with the tiny model (the campaign's code path)."""

import csv

import pytest
import torch

from real.bench import mla_loop
from real.bench.timing import Timer
from real.telemetry import Telemetry


def test_loop_rows_account_for_the_host_of_each_repetition():
    dev = torch.device("cpu")
    rows = mla_loop.case_rows("tiny", 1, 16, "bf16", dev, Timer(dev, Telemetry(0), 0.0, warmup=1), rounds=1, reps=2)
    assert [r["phase"] for r in rows] == ["fwd", "bwd"]
    for r in rows:
        assert r["split"] == "fit" and r["reps"] == 2 and r["time_s"] > 0
        assert r["host_other_s"] == pytest.approx(r["host_loop_s"] - r["host_setup_s"] - r["host_call_s"])
    fwd, bwd = rows
    assert fwd["host_setup_s"] == 0.0 and bwd["host_setup_s"] > 0   # the backward's setup is its forward
    # the backward's first node was reached in every repetition, after its call began; no GPU events on a CPU
    assert 0 < bwd["engine_start_s"] < bwd["host_call_s"] * 10
    assert bwd["start_wait_s"] != bwd["start_wait_s"] and fwd["engine_start_s"] != fwd["engine_start_s"]   # NaN


def test_first_node_marks_pair_each_call_with_its_first_backward_node():
    marks = mla_loop.FirstNode(torch.device("cpu"))
    x = torch.ones(4, requires_grad=True)
    for _ in range(3):
        y = marks.hook(x * 2)
        marks.call()
        torch.autograd.grad(y, [x], torch.ones(4))
    engine, wait = marks.per_rep([0.1, 0.1, 0.1])
    assert len(engine) == 3 and all(e >= 0 for e in engine) and wait == []
    marks.clear()
    assert marks.per_rep([]) == ([], [])
    assert mla_loop.case_rows.__defaults__ == (mla_loop.ROUNDS, mla_loop.REPS)


def test_the_campaign_entry_point_writes_its_rows_on_cpu(tmp_path):
    assert mla_loop.main(["--out", str(tmp_path), "--device", "cpu", "--quick"]) == 0
    with (tmp_path / "mla_loop.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["bench"] for r in rows] == ["mla_loop_fwd", "mla_loop_bwd"]
    assert set(mla_loop.COLUMNS) <= set(rows[0]) and rows[0]["device"] == "cpu"
    # the held-out family is marked as calibration/split.py holds it out
    from calibration.split import is_held_out
    assert all(is_held_out({"model": m, "bench": "mla_layer_bwd", "batch": b, "seq_len": s, "num_experts": 0})
               == (m in mla_loop.HOLDOUT_MODELS) for m, b, s in mla_loop.CASES)

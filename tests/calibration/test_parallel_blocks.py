"""calibration.parallel_blocks: the twin's prediction of the TP and CP blocks measured on two GPUs
(parallel_blocks.csv), and the profile's measured collectives (calibration.fit.collectives_terms).

The issue-14 target: held-out TP2 / CP2 block rows within 10% of the measured time."""

import dataclasses
import functools

import pandas as pd
import pytest

from calibration import parallel_blocks as blocks
from calibration import records as rec
from calibration.fit import collectives_terms
from calibration.predict import gpu_spec
from calibration.validate import load_fitted_profile

TARGET = 0.10
FOLDER = rec.MEASUREMENTS_DIR / "h200x2"


@pytest.fixture(scope="module")
def h200():
    prof, _ = load_fitted_profile("h200", None)   # as `twin validate` predicts the records
    if not prof.collectives:
        prof = dataclasses.replace(prof, collectives=collectives_terms("h200")[0])
    return prof


def _row(**kw) -> dict:
    base = dict(bench="cp_block", block="attention", model="v2-lite-slice", tp=1, cp=2, sequence_parallel=False,
                tokens=16384, seq_len=16384, batch=1, hidden_size=2048, num_heads=16, qk_head_dim=192,
                v_head_dim=128, precision="bf16", cp_kind="ring", split="holdout", time_s=1e-3)
    base.update(kw)
    return base


def test_collectives_come_from_the_two_gpu_sweep_with_their_source():
    fits, info = collectives_terms("h200")
    assert {"all_reduce", "all_gather", "reduce_scatter", "send_recv"} <= set(fits)
    for op, entry in fits.items():
        assert entry["latency_s"] > 0 and entry["bus_bytes_per_s"] > 0
        assert "h200x2/nccl.csv" in entry["source"] and "held-out" in entry["source"]
    assert info["file"] == "h200x2/nccl.csv" and set(info["holdout"]) == set(fits)
    assert collectives_terms("no-such-gpu") == ({}, {})


def test_tp_rows_charge_their_collectives(h200):
    gpu = gpu_spec("h200")
    row = dict(bench="tp_block", block="mla", model="v3-slice-1l", tp=2, cp=1, sequence_parallel=True,
               tokens=8192, seq_len=8192, num_experts=float("nan"), precision="bf16", skew=float("nan"))
    with_comm = blocks.predict_tp_row(row, gpu, h200)
    without = blocks.predict_tp_row(row, gpu, dataclasses.replace(h200, collectives={
        k: dict(v, bus_bytes_per_s=1e18, latency_s=0.0) for k, v in h200.collectives.items()}))
    # two all-gathers and two reduce-scatters of 8192 tokens: hundreds of microseconds on NVLink
    assert 1e-4 < with_comm - without < 2e-3
    tp1 = blocks.predict_tp_row(dict(row, tp=1, sequence_parallel=False), gpu, h200)
    assert with_comm < tp1   # half the heads per rank outweighs the collectives at 8K tokens


def test_cp_rows_predict_ring_and_allgather(h200):
    gpu = gpu_spec("h200")
    ring = blocks.predict_block_row(_row(), gpu, h200)
    gathered = blocks.predict_block_row(_row(cp_kind="allgather"), gpu, h200)
    whole = blocks.predict_block_row(_row(cp=1, cp_kind=""), gpu, h200)
    assert 0 < ring < whole and 0 < gathered < whole
    mla = blocks.predict_block_row(_row(block="mla"), gpu, h200)
    assert mla > ring   # the sublayer adds its projections
    with pytest.raises(ValueError, match="cp_kind 'tree'"):
        blocks.predict_block_row(_row(cp_kind="tree"), gpu, h200)


def test_block_rows_load_every_parallel_blocks_file(tmp_path):
    pd.DataFrame([_row(time_s=2e-3)]).to_csv(tmp_path / "parallel_blocks.csv", index=False)
    pd.DataFrame([_row(time_s=3e-3, cp_kind="allgather"), _row(time_s=0.0)]).to_csv(
        tmp_path / "parallel_blocks_cp.csv", index=False)
    assert sorted(blocks.load_block_rows(tmp_path)["time_s"]) == [2e-3, 3e-3]


# held-out block -> relative error when last run (twin / measured - 1): issue 14's 10% target is
# not met for these. Strict xfails: listed, never loosened, and the test fails the day one passes.
# The v2-lite rows are host-bound with ranks waiting on each other (measured comm time up to 3.2 ms
# against ~0.1 ms of transfer); real/'s CP2 attention runs 5x slower than its CP1 reference, which
# the twin (CP2 ~ half of CP1 plus the K/V exchange) does not explain.
NOT_MET = {
    "tp_block mla v2-lite-slice t4096 tp2 sp": -0.377,
    "tp_block mla v2-lite-slice t4096 tp2": -0.334,
    "tp_block moe v2-lite-slice t4096 tp2 sp": -0.246,
    "tp_block moe v2-lite-slice t4096 tp2": -0.164,
    "tp_block moe v2-lite-slice t8192 tp2 sp": -0.268,
    "tp_block moe v2-lite-slice t8192 tp2": -0.243,
    # -9.1% before issue 13's MoE backward corrections (s7pipe: no copy of the output gradient,
    # the index_copy backward a vectorised gather, both seen in the v3 kernel records), which
    # took 0.3 ms off its prediction; the TP MoE blocks' shortfall is issue 14's
    "tp_block moe v3-slice-1l t4096 tp2 sp": -0.106,
    "cp_block attention v2-lite-slice t16384 cp2 allgather": -0.893,
    "cp_block attention v2-lite-slice t16384 cp2 ring": -0.902,
}


@functools.cache
def _held_out_blocks() -> dict[str, float]:
    prof, _ = load_fitted_profile("h200", None)
    if not prof.collectives:
        prof = dataclasses.replace(prof, collectives=collectives_terms("h200")[0])
    return {c["name"]: c["predicted_s"] / c["measured_s"] - 1 for c in blocks.predict_folder(FOLDER, "h200", prof)
            if c["held_out"] and int(c["row"]["tp"]) * int(c["row"]["cp"]) > 1}


def _block_params():
    import csv
    names = []
    for path in sorted(FOLDER.glob("parallel_blocks*.csv")):
        with open(path, newline="") as f:
            names += [blocks.block_name(r) for r in csv.DictReader(f)
                      if r["split"] == "holdout" and int(r["tp"]) * int(r["cp"]) > 1]
    for name in names:
        marks = [pytest.mark.xfail(strict=True, reason=f"not met: {NOT_MET[name]:+.0%} against 10% (issue 14 open)")] if name in NOT_MET else []
        yield pytest.param(name, marks=marks, id=name.replace(" ", "-"))


@pytest.mark.parametrize("name", list(_block_params()))
def test_held_out_tp2_and_cp2_block_within_target(name):
    err = _held_out_blocks()[name]
    assert abs(err) <= TARGET, f"{name}: {err:+.1%} (target {TARGET:.0%})"

"""calibration.mlm_sustained (campaign s24mlm, diagnostic only) on synthetic records of the 462B TP 8
slice: the chunk ratios, the per-model excess against the twin's, the held ratio against the twin's,
the rule's findings, and the published-row diagnostics moving the way the records say."""

import csv
from pathlib import Path

import pytest

from calibration import mlm_sustained as ms
from calibration.predict import gpu_spec
from twin.costs import compute
from twin.costs.profile import fitted_profile

MODEL, D = "megatron-gpt-462b", 18432
GEMMS = [("qkv_fprop", 4096, 3 * D // 8, D, 8), ("fc1_fprop", 4096, 4 * D // 8, D, 8),
         ("proj_dgrad", 4096, D // 8, D, 8), ("fc2_dgrad", 4096, 4 * D // 8, D, 8),
         ("proj_fprop", 4096, D, D // 8, 4), ("fc2_fprop", 4096, D, 4 * D // 8, 4)]
BLOCK = f"{MODEL} tp8 b1 s4096 block fwd_bwd flash"


def _write(path: Path, rows: list[dict]):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _twin_times(name, m, n, k, chunks):
    op, phase = ms._gemm_op(m, n, k, "fwd" if name.endswith("fprop") else "dgrad")
    spec, prof = gpu_spec("h100"), fitted_profile("h100")
    return (compute.chunked_gemm_time_s(op, phase, "bf16", 1, spec, prof),
            compute.chunked_gemm_time_s(op, phase, "bf16", chunks, spec, prof))


def _records(folder: Path, one_stream, three_streams, block_ratio: float):
    """gemm.csv: each GEMM whole at the twin's time, chunked at one_stream(whole, twin chunked) and
    three_streams(...); sustained.csv: the block held at burst / block_ratio, the reference GEMM at 0.9."""
    rows = []
    for name, m, n, k, c in GEMMS:
        whole, chunked = _twin_times(name, m, n, k, c)
        for variant, t, groups in (("whole", whole, 1), (f"chunks{c}_streams1", one_stream(whole, chunked), c),
                                   (f"chunks{c}_streams3", three_streams(whole, chunked), c)):
            rows.append(dict(bench="mlm_chunks", m=m, n=n, k=k, groups=groups, tokens_per_group=m // groups,
                             precision="bf16", shape_tag=f"{MODEL}/{name}/{variant}", time_s=t))
    _write(folder / "gemm.csv", rows)
    held = []
    for config, burst, ratio in ((BLOCK, 0.020, block_ratio), ("gemm m=8192 n=4096 k=7168", 0.0007, 0.9)):
        held.append(dict(bench="mlm_sustained", config=config, precision="bf16", phase="burst", window=0,
                         time_s=burst, sm_clock_mhz=1980, power_w=500))
        for w in range(1, 9):
            held.append(dict(bench="mlm_sustained", config=config, precision="bf16", phase="sustained", window=w,
                             time_s=burst / (1.0 if w < ms.SETTLED_WINDOW else ratio), sm_clock_mhz=1400,
                             power_w=700))
    _write(folder / "sustained.csv", held)


def test_records_as_the_twin_prices_them_give_no_finding(tmp_path):
    _records(tmp_path, lambda w, c: c, lambda w, c: c, 1.0)   # first, to read the twin's block ratio
    held = ms.sustained_table(tmp_path)
    twin_block_ratio = float(held.loc[held["config"] == BLOCK, "twin_ratio"].iloc[0])
    _records(tmp_path, lambda w, c: c, lambda w, c: w, twin_block_ratio)
    chunks = ms.chunk_table(tmp_path)
    assert chunks["ratio1"].tolist() == pytest.approx(chunks["twin_ratio"].tolist())
    assert chunks["ratio3"].tolist() == pytest.approx([1.0] * len(GEMMS))
    excess = ms.per_model_excess(chunks, tmp_path)
    assert excess["share1"].iloc[0] == pytest.approx(0.0, abs=1e-12)
    assert excess["share3"].iloc[0] < 0     # no chunk cost at all: below the twin's
    held = ms.sustained_table(tmp_path)
    assert held.loc[held["config"] == BLOCK, "meas_over_twin"].iloc[0] == pytest.approx(1.0)
    assert 0.85 < twin_block_ratio < 0.95   # the twin throttles a BF16 block by its ~0.90 ratios
    assert ms.findings(excess, held) == []


def test_costlier_chunks_and_a_harder_throttled_block_are_findings_and_lower_the_row(tmp_path):
    _records(tmp_path, lambda w, c: 1.3 * w, lambda w, c: 1.2 * w, 0.80)
    chunks = ms.chunk_table(tmp_path)
    assert chunks["ratio1"].tolist() == pytest.approx([1.3] * len(GEMMS))
    excess = ms.per_model_excess(chunks, tmp_path)
    # 0.3 of the six GEMMs (about a third of the block's GEMM time each way) is well past 3% of the block
    assert excess["share1"].iloc[0] > ms.FINDING_SHARE and excess["share3"].iloc[0] > ms.FINDING_SHARE
    held = ms.sustained_table(tmp_path)
    found = ms.findings(excess, held)
    assert any(f.startswith("(C) megatron-gpt-462b") for f in found)
    assert any(f.startswith("(S) megatron-gpt-462b") for f in found)
    assert not any("gemm m=8192" in f for f in found)   # the reference GEMM is never a finding
    base = {r["id"]: r["rel_error"] for r in ms.rows_with_measured_chunks(chunks.assign(ratio1=chunks["twin_ratio"]),
                                                                            "ratio1")}
    costly = {r["id"]: r["rel_error"] for r in ms.rows_with_measured_chunks(chunks, "ratio1")}
    assert costly["mlm-gpt-462b"] < base["mlm-gpt-462b"] - 0.01
    assert costly["mlm-gpt-177b"] == pytest.approx(base["mlm-gpt-177b"])   # 177B's GEMMs were not measured here
    slowed = {r["id"]: r for r in ms.rows_with_block_ratio(held)}
    assert set(slowed) == {"mlm-gpt-462b"}
    assert slowed["mlm-gpt-462b"]["scale"] < 1.0 and slowed["mlm-gpt-462b"]["rel_error"] < base["mlm-gpt-462b"] - 0.05


def test_round_two_averages_each_variant_s_pair_and_reports_its_spread(tmp_path):
    rows = []
    for name, m, n, k, c in GEMMS:
        whole, _ = _twin_times(name, m, n, k, c)
        for variant, t, groups in (("whole", whole, 1), (f"chunks{c}_streams1", 1.2 * whole, c),
                                   (f"chunks{c}_streams3", 1.1 * whole, c)):
            for rep, f in (("a", 1.02), ("b", 0.98)):
                rows.append(dict(bench="mlm_chunks2", m=m, n=n, k=k, groups=groups, tokens_per_group=m // groups,
                                 precision="bf16", shape_tag=f"{MODEL}/{name}/{variant}/{rep}",
                                 time_s=t * (f if variant == "whole" else 1.0)))
    rows.append(dict(bench="mlm_chunks", m=1, n=1, k=1, groups=1, tokens_per_group=1, precision="bf16",
                     shape_tag=f"{MODEL}/qkv_fprop/whole", time_s=1.0))   # a round-1 row beside: ignored
    _write(tmp_path / "gemm.csv", rows)
    chunks = ms.chunk_table(tmp_path)
    assert len(chunks) == len(GEMMS)
    assert chunks["ratio1"].tolist() == pytest.approx([1.2] * len(GEMMS))
    assert chunks["ratio3"].tolist() == pytest.approx([1.1] * len(GEMMS))
    assert chunks["spread"].tolist() == pytest.approx([1.02 / 0.98 - 1] * len(GEMMS))
    assert len(ms._measured_ratio_lookup(chunks, "ratio1")) == len(GEMMS)   # pairs within 5%: all used
    unsettled = chunks.assign(spread=[0.06] + [0.0] * (len(GEMMS) - 1))
    assert len(ms._measured_ratio_lookup(unsettled, "ratio1")) == len(GEMMS) - 1

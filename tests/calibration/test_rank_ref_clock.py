"""Round 2 of the per-rank clock (s31clk2, issue 13): pipeline.ADOPT_RANK_REF_CLOCK prices each compute class from the
reference clock its rates were fitted at to the rank's clock (both ways), memory-bound kernels at a fitted factor, under
a three-class power law; the committed figures are the live ones; the switch never moves a one-GPU row."""

import pandas as pd
import pytest

from calibration import pipeline as pipe
from calibration import prereg, rank_clock, s31clk2
from calibration.power_cap import MAX_SM_CLOCK_MHZ
from calibration.records_io import read_csv, read_json
from calibration.whole_step import gpu_spec

H200 = gpu_spec("h200").name
LAW = {"static_w": 100.0, "gemm_w": 1000.0, "grouped_w": 1200.0, "memory_w": 200.0}
REF = {"gemm": 1500.0, "grouped_gemm": 1500.0, "attention": 1800.0}


def test_classes_priced_from_their_reference_clock_both_ways():
    # at f_max a class fitted at 1,500 MHz runs 1500 / 1980 of the twin's time; below its reference clock, longer
    fast, slow = rank_clock.ref_clock_scale(MAX_SM_CLOCK_MHZ, REF, 1.25), rank_clock.ref_clock_scale(1200.0, REF)
    assert fast[("fb", "gemm")] == fast[("w", "grouped_gemm")] == pytest.approx(1500 / 1980)
    assert fast[("fb", "attention")] == pytest.approx(1800 / 1980) and fast[("w", "memory")] == 1.25
    assert slow[("fb", "gemm")] == pytest.approx(1.25) and ("fb", "memory") not in slow
    # class seconds: 0.2 s GEMM at 1,500 -> 0.2 x 1500 / 1980 at f_max; memory 0.1 x 1.25; launch unscaled
    t = rank_clock.class_seconds(MAX_SM_CLOCK_MHZ, {"gemm": 0.2, "attention": 0.1, "memory": 0.1, "launch": 0.05},
                                 REF, 1.25)
    assert t == pytest.approx({"gemm": 0.2 * 1500 / 1980, "grouped": 0.1 * 1800 / 1980, "memory": 0.125 + 0.05})


def test_law_below_the_limit_keeps_f_max_and_above_it_meets_the_limit():
    light = {"gemm": 0.1, "memory": 0.1}
    assert rank_clock.rank_ref_clock_mhz(light, 1.0, LAW, REF, 700.0) == MAX_SM_CLOCK_MHZ
    heavy = {"gemm": 0.5, "grouped_gemm": 0.3, "memory": 0.2}
    assert rank_clock.power_ref_w(MAX_SM_CLOCK_MHZ, heavy, 1.0, LAW, REF) > 700.0
    f = rank_clock.rank_ref_clock_mhz(heavy, 1.0, LAW, REF, 700.0)
    assert f < MAX_SM_CLOCK_MHZ and rank_clock.power_ref_w(f, heavy, 1.0, LAW, REF) == pytest.approx(700.0, abs=0.05)
    # a heavier memory factor adds memory duty (more power, a lower clock) until the rank's kernels outgrow the step
    assert rank_clock.rank_ref_clock_mhz(heavy, 1.0, LAW, REF, 700.0, memory_scale=2.0) < f


def test_committed_reference_clocks_are_the_records():
    assert s31clk2.reference_clocks() == rank_clock.REF_CLOCK_MHZ[H200]


@pytest.fixture(scope="module")
def inputs():
    return prereg.two_gpu_inputs("h200")


def _row(**kw):
    return pd.Series({"model": "llama3-8b-slice", "schedule": "1f1b", "pp": 2, "ep": 1, "dp": 1,
                      "num_microbatches": 4, "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16",
                      "num_layers": 4, **kw})


def test_switch_reprices_every_rank_never_one_gpu(inputs):
    """1F1B at pp 2 on llama3-8b-slice: the law holds the last rank (1) and leaves rank 0 at f_max; rank 0's compute
    runs faster than the twin's rates (its reference clocks are below f_max), rank 1's slower; a pp 1 row unmoved."""
    profile, acc, host, hold = inputs
    gpu = gpu_spec("h200")
    with s31clk2.switch(False):
        b = pipe.simulate_row(_row(), gpu, profile, acc, host, None, None, hold)[0]
        one_b = pipe.simulate_row(_row(pp=1), gpu, profile, acc, host, None, None, hold)[1]
    with s31clk2.switch(True):
        c, _, det = pipe.simulate_row(_row(), gpu, profile, acc, host, None, None, hold)
        one_c = pipe.simulate_row(_row(pp=1), gpu, profile, acc, host, None, None, hold)[1]
    f0, f1 = det["rank_clock_mhz"]
    assert f0 == MAX_SM_CLOCK_MHZ and f1 < 1700
    assert c.busy_s[1] > b.busy_s[1] and one_c == one_b
    assert pipe.ADOPT_RANK_REF_CLOCK is False


def test_committed_memory_factor_and_law_are_the_live_fit():
    """`python -m calibration.s31clk2 fit` (63 points, ~5 s): the memory factor and the three D's as committed; the
    free fit's reference clocks land within 100 MHz of the records' (the PP ranks' busy time agrees with them)."""
    scale, law, points = s31clk2.fit()
    assert round(scale["memory_scale"], 3) == rank_clock.MEMORY_SCALE[H200]
    assert {k: round(v, 1) for k, v in law.items() if k.endswith("_w") and k != "rms_w"} == rank_clock.RANK_POWER_REF[H200]
    assert all(abs(scale["free_ref_mhz"][c] - f) < 100 for c, f in rank_clock.REF_CLOCK_MHZ[H200].items())
    assert scale["median_abs_rel_error"] < scale["twin_median_abs_rel_error"]
    assert len(points) == 63


def test_registered_clocks_are_the_live_law(inputs):
    """The pre-registered predictions (docs/notes/s31clk2_rule.md) hold the law's clocks as the code computes them now
    (dsv2-slice 1F1B n8 recomputed)."""
    preds = read_csv(s31clk2.PREDICTIONS_FILE)
    assert len(preds) == 24 and preds["code_commit"].nunique() == 1
    sel = preds[(preds["model"] == "dsv2-slice") & (preds["schedule"] == "1f1b") & (preds["num_microbatches"] == 8)]
    row = sel.iloc[0][s31clk2.s31clk.ROW_KEYS].to_dict()
    assert [round(x, 3) for x in s31clk2.law_clocks(row, inputs)] == [
        round(float(sel.iloc[0][f"law_clock_r{k}_mhz"]), 3) for k in (0, 1)]


def test_judgement_record_and_live_fresh_scores():
    """calibration/s31clk2_judgement.json (`python -m calibration.s31clk2 record`): the fresh set (24 PP2 rows, 2xH200,
    00:41-00:43 UTC Nov 29) judged. The law's clocks hold out of sample (A2: 43 of 48 within 60 MHz, held / free
    agreeing on 40); C keeps the steps (median 2.13 -> 2.18%) but loses 2 idle rank-rows (40 -> 38): C1 fails, the
    guards failed before; not adopted, switch off. The fresh-set part recomputed live (records and the registered
    predictions, no twin pricing) equals the record."""
    j = read_json(s31clk2.JUDGEMENT_FILE)
    a, crit = j["clocks"], j["criteria"]
    assert (a["A2_within"], a["A2_rows"], a["A2_capped_agree"], a["A2"]) == (43, 48, 40, True)
    assert (j["B"]["num_within"], j["C"]["num_within"]) == (40, 38) and len(crit["lost_rank_rows"]) == 2
    assert crit["C1_idle_more_none_lost"] is False and crit["C2_steps"] is True and crit["C3_ranking"] is True
    assert not j["guards"]["G1_no_rank_row_lost"] and not j["guards"]["G2_steps_not_worse"]
    assert j["adopt"] is False and pipe.ADOPT_RANK_REF_CLOCK is False
    live = s31clk2.judge(with_guards=False)
    assert {k: v for k, v in live["clocks"].items() if k != "rows"} == {k: v for k, v in a.items() if k != "rows"}
    assert live["B"] == pytest.approx(j["B"]) and live["C"] == pytest.approx(j["C"])
    assert live["criteria"] == crit

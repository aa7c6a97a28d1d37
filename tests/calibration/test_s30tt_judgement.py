"""s30tt (docs/notes/s30tt_rule.md): the committed judgement of campaign s30tt (the rows' 8B Float8 block held at
the power limit beside FA2 and the FP8 GEMM alone, one H200) and a live recompute of its factors from the committed
records, so neither can go stale (~1 s; the published rows under the candidate are the judge's, not re-run here)."""

import math
from pathlib import Path

from calibration import block_hold
from calibration import records as rec
from calibration.records_io import read_json
from twin.core import specs

JUDGEMENT = Path(__file__).resolve().parents[2] / "calibration" / "s30tt_judgement.json"


def _judgement() -> dict:
    return read_json(JUDGEMENT)["records"][0]


def test_the_verdict_is_the_rules():
    res = _judgement()
    assert res["P0"]["holds"] and res["P1"]["holds"] and res["P2"]["holds"]
    assert res["C1"] and res["C2"] and res["C3"]["holds"] and res["C4"]   # the FA2 candidate alone passes
    assert not res["S"]["holds"] and res["S"]["left_10"]                   # the block's GEMMs gain more than FA2 loses
    assert res["adopt"] is False and specs.ADOPT_FA2_IN_BLOCK_HELD is False
    on, off = res["summary"]["on"], res["summary"]["off"]
    assert on["median_abs"] < off["median_abs"] and on["within_10"] == off["within_10"] == 23


def test_the_factors_recomputed_from_the_records():
    res = _judgement()
    fac = block_hold.factors(block_hold.load(rec.records_root() / "h200" / "s30tt"))
    for key, k in res["k"].items():
        assert math.isclose(fac["k"][key], k, rel_tol=1e-9), key
    assert math.isclose(fac["k_gemm"], res["k_gemm"], rel_tol=1e-9)
    k = fac["k"]
    # FA2 slows ~10% more under the limit inside the GEMM-heavy 8K block than alone; inside the 32K block the
    # block's lower draw (641 W against FA2's 681 W alone) offsets its in-block slowdown in the law
    assert k["fwd_8192"] < 0.92 and k["bwd_8192"] < 0.93
    assert abs(k["fwd_32768"] - 1) < 0.03 and abs(k["bwd_32768"] - 1) < 0.03
    # the FP8 GEMM alone is held at the cap (0.849 burst/held), inside the block it barely slows
    assert fac["k_gemm"] > 1.15 and fac["cases"]["gemm_fp8"]["power_w"] > 680


STEP = JUDGEMENT.with_name("s30tt_step_judgement.json")


def test_round_2_the_twin_predicts_the_rows_step_on_our_gpus():
    """Round 2 (the rule's section, pre-registered 6.748 / 7.685 s): the row's whole step on 2x H200 measured 6.499 s
    (Float8) and 7.284 s (BF16); the twin, live, must stay within the rule's 8% of both."""
    parts = read_json(STEP)["parts"]
    live = block_hold.step_check(rec.records_root() / "h200x2" / "s30tt_step")
    assert set(live) == set(parts) == {"step_fp8", "step_bf16"}
    for name, r in live.items():
        assert math.isclose(r["measured_s"], parts[name]["measured_s"], rel_tol=1e-12)
        assert r["steps_ok"] == [1, 2, 3, 4, 5] and r["alloc_retries"] == 0
        assert abs(r["rel_error"]) <= 0.08, (name, r["rel_error"])
        # the twin's count of live tensors is the run's allocated peak (101.3 GiB) within 1%
        assert abs(r["predicted"]["memory_gib"] / r["peak_allocated_gib"] - 1) < 0.01


def test_round_3_the_allocator_at_the_rows_headroom():
    """Round 3 (the rule's section): the same step with the caching allocator capped at the row's relative headroom
    (0.9241 of the H200) retries once a step and runs >= 3% slower than round 2's uncapped step (the rule's reading b);
    at 0.90, a sensitivity, it retries as often."""
    cap = block_hold.step_check(rec.records_root() / "h200x2" / "s30tt_cap")
    free = block_hold.step_check(rec.records_root() / "h200x2" / "s30tt_step")["step_fp8"]["measured_s"]
    assert cap["step_fp8_cap92"]["alloc_retries"] >= 3 and cap["step_fp8_cap90"]["alloc_retries"] >= 3
    assert cap["step_fp8_cap92"]["measured_s"] / free - 1 >= 0.03
    assert cap["step_fp8_cap92"]["peak_reserved_gib"] < 129.19   # held under the cap
    committed = read_json(JUDGEMENT.with_name("s30tt_cap_judgement.json"))["parts"]
    assert math.isclose(committed["step_fp8_cap92"]["measured_s"], cap["step_fp8_cap92"]["measured_s"], rel_tol=1e-12)

"""calibration.te_ring_check, check K of docs/notes/s27mlm_rule.md: the verdict from synthetic rows worked
by hand, the card kind from gpu_name, and each card's own floor from s20tt's committed records."""

import pandas as pd
import pytest

from calibration import judged_under
from calibration import te_ring_check as trc


def _rows(excesses, gpu="NVIDIA H200"):
    # each case: mm 4 ms, collective 1 ms (a long GEMM), fused 4 + e ms -> excess e; one case whose
    # collective is the longer (left out of K's set) and one torchtitan-shaped case (not Megatron's)
    rows = []
    for i, e in enumerate(excesses):
        for op, t in (("mm", 4e-3), ("collective", 1e-3), ("fused", 4e-3 + e * 1e-3)):
            rows.append(dict(shape_tag=f"megatron-gpt-177b/c{i}", kind="all_gather", op=op, world_size=2,
                             split="holdout", status="ok", time_s=t, gpu_name=gpu))
    for tag in ("megatron-gpt-32b/short", "llama3.1-70b/w1"):
        for op, t in (("mm", 1e-3), ("collective", 2e-3), ("fused", 9e-3)):
            rows.append(dict(shape_tag=tag, kind="all_gather", op=op, world_size=2, split="holdout", status="ok",
                             time_s=t, gpu_name=gpu))
    return pd.DataFrame(rows)


def test_k_holds_at_half_the_floor_fails_below_and_needs_five_rows():
    # f_card 0.2: threshold 0.1; medians 0.1 (holds, at the threshold) and 0.09 (fails)
    held = trc.judge(_rows([0.0, 0.05, 0.1, 0.3, 0.5]), 0.2)
    assert held["num_long_gemm"] == 5 and held["num_rows"] == 6   # the short Megatron case counted, not in K
    assert held["median_excess"] == pytest.approx(0.1) and held["verdict"] == "holds" and held["adopt_te_ring_excess"]
    failed = trc.judge(_rows([0.0, 0.05, 0.09, 0.3, 0.5]), 0.2)
    assert failed["verdict"] == "fails" and not failed["adopt_te_ring_excess"]
    few = trc.judge(_rows([0.0, 0.0, 0.0, 0.0]), 0.2)
    assert few["verdict"] == "undecided" and few["adopt_te_ring_excess"]


def test_card_kind_and_its_own_floor():
    assert trc.card_kind(_rows([0.1])) == "h200x2"
    assert trc.card_kind(_rows([0.1], gpu="NVIDIA H100 80GB HBM3")) == "h100x2"
    with pytest.raises(ValueError, match="card kind"):
        trc.card_kind(pd.concat([_rows([0.1]), _rows([0.1], gpu="NVIDIA H100 80GB HBM3")]))
    # s20tt's fits (docs/notes/s20tt_rule.md, README twenty-third/fifth passes): 0.210 on H100, 0.166 on H200
    assert trc.card_floor("h100x2") == pytest.approx(0.2102, abs=5e-4)
    assert trc.card_floor("h200x2") == pytest.approx(0.1662, abs=5e-4)


# --- the judgement of campaign s27mlm (2xH200), written by
# `python -m calibration.te_ring_check calibration/measurements/h200x2/s27mlm_async_tp --json calibration/s27mlm_judgement.json`
RECORDS = "h200x2/s27mlm_async_tp"
STALE = f"rerun `python -m calibration.te_ring_check calibration/measurements/{RECORDS} --json calibration/s27mlm_judgement.json`"


def test_the_committed_judgement_is_todays_and_refutes_the_floors_premise():
    from calibration.records import MEASUREMENTS_DIR
    from twin.training import step as step_mod
    records = trc.records_of(MEASUREMENTS_DIR / RECORDS)
    j = trc.read_judgement()
    live = {"card_kind": trc.card_kind(records), **trc.judge(records, trc.card_floor(trc.card_kind(records)))}
    assert live["rows"] == j["rows"], STALE
    assert {k: live[k] for k in live if k != "rows"} == \
        {k: j[k] for k in j if k != "rows" and k not in judged_under.IGNORED_KEYS}, STALE   # s30stale's stamp: when
    # K holds by its letter (torch's fused op pays far more than the floor at these shapes) ...
    assert j["card_kind"] == "h200x2" and j["verdict"] == "holds" and j["num_long_gemm"] == 7
    # ... but what it pays is the op's own cost, not the copy engine's: the fused op takes about the same
    # time (0.40-0.51 ms) whatever its GEMM (0.02-0.45 ms), and a copy-engine pull beside a long GEMM costs
    # it under half the floor (median 0.089 of the pull against f_card 0.166): C1's premise fails, the
    # switch stays off (docs/notes/s27mlm_rule.md, outcome)
    mlm = records[records["shape_tag"].str.startswith("megatron-gpt")]
    fused, mm = (mlm[mlm["op"] == op]["time_s"].astype(float) for op in ("fused", "mm"))
    assert fused.max() / fused.min() < 1.3 and mm.max() / mm.min() > 10
    assert j["median_copy_share"] < 0.6 * j["f_card"]
    assert not step_mod.ADOPT_TE_RING_EXCESS

"""calibration.te_ring_check, check K of docs/notes/s27mlm_rule.md: the verdict from synthetic rows worked
by hand, the card kind from gpu_name, and each card's own floor from s20tt's committed records."""

import pandas as pd
import pytest

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

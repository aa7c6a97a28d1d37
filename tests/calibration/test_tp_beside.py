"""calibration.tp_beside on a hand-made tp_beside.csv: the slowdowns as ratios of the rows, the
twin's the profile's untold slowdown at TE's 16 SMs."""

import pandas as pd
import pytest

from calibration import tp_beside
from twin.costs import compute
from twin.costs.profile import load_profile
from twin.core.specs import get_gpu


def _rows(tag, channels, mm, coll, mm_beside, coll_beside, repeats):
    base = dict(bench="tp_beside", shape_tag=tag, kind="all_gather", nccl_channels=channels, status="ok", split="holdout",
                timing="cuda_events_after_sleep" if channels == "16" else "cuda_events")
    return [dict(base, op="mm", time_s=mm, collective_repeats=1), dict(base, op="collective", time_s=coll, collective_repeats=1),
            dict(base, op="mm_beside", time_s=mm_beside, collective_repeats=repeats),
            dict(base, op="collective_beside", time_s=coll_beside, collective_repeats=repeats)]


def test_slowdowns_from_the_rows(tmp_path):
    (tmp_path / "h100x2").mkdir()
    rows = _rows("a", "16", 1.0e-3, 0.4e-3, 1.3e-3, 1.6e-3, 3) + _rows("b", "default", 1.0e-3, 0.2e-3, 1.2e-3, 1.0e-3, 4)
    pd.DataFrame(rows).to_csv(tmp_path / "h100x2" / "tp_beside.csv", index=False)
    df = tp_beside.load("h100x2", tmp_path)
    profile = load_profile("h100")
    out = tp_beside.compare(df, profile, "h100")
    twin = compute.untold_sm_slowdown(profile, "bf16", 16, get_gpu("h100"))
    a, b = out
    assert (a["nccl_channels"], a["gemm_slowdown"], a["comm_slowdown"]) == ("16", pytest.approx(1.3), pytest.approx(1.6 / 1.2))
    assert a["covered"] and a["twin_slowdown"] == twin and a["rel_error"] == pytest.approx(twin / 1.3 - 1)
    assert not b["covered"] and b["comm_slowdown"] == pytest.approx(1.0 / 0.8)
    assert b["upper_bound"] and not a["upper_bound"]   # the first campaign's timing
    assert tp_beside.load("h200x2", tmp_path).empty
    assert tp_beside.main(["--root", str(tmp_path), "--gpu", "h100x2"]) == 0

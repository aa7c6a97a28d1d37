"""calibration.s30dec2 (docs/notes/s30dec2_rule.md): the adopted decode pricing on a second fresh lease, blind. The
committed predictions cover the campaign's cases from one commit with s30dec's w copied (never refitted); the committed
judgement (`python -m calibration.s30dec2 --json ...`) is recomputed live once; issue 13's decode target on the lease is
asserted (a miss: a strict xfail with the figure)."""

import re

import numpy as np
import pytest

from calibration import s30dec, s30dec2, step_host
from calibration.records_io import json_exists, read_json


@pytest.fixture(scope="module")
def pred():
    return s30dec2.load_predictions()


def test_committed_predictions_cover_the_cases_with_the_adopted_w(pred):
    key = s30dec.KEY
    assert sorted(tuple(r[k] for k in key) for r in pred["rows"]) == sorted(
        tuple(r[k] for k in key) for r in s30dec2.case_rows())
    assert re.fullmatch(r"[0-9a-f]{40}", pred["code_commit"])
    assert np.allclose(pred["host_grid_s_per_kernel"], step_host.STEP_HOST_GRID_S)
    # w is s30dec's committed value, not a refit that could see the s30dec lease
    assert pred["kernel_host_weight"]["h200"]["w"] == s30dec.load_predictions()["kernel_host_weight"]["h200"]["w"]
    for r in pred["rows"]:
        assert (r["twin_ops"] > 0) == (r["bench"] == "decode")
        assert np.all(np.diff(r["cand_grid_predicted_s"]) >= -1e-12)


@pytest.fixture(scope="module")
def committed():
    return read_json(s30dec2.JUDGEMENT_FILE)


@pytest.fixture(scope="module")
def live(pred):
    return s30dec2.judge(pred=pred)


def test_the_committed_judgement_is_the_live_one(committed, live, pred):
    assert committed["predictions_commit"] == pred["code_commit"]
    assert sorted(committed["leases"]) == sorted(live["leases"])
    for lease, v in committed["leases"].items():
        for bench, g in v["by_kind"].items():
            for k in ("median_abs_rel_error", "p90_abs_rel_error"):
                assert g["candidate"][k] == pytest.approx(live["leases"][lease]["by_kind"][bench]["candidate"][k],
                                                          rel=1e-9), (lease, bench, k)
    assert live["verdict"] == committed["verdict"]
    # a confirmation moves no switch
    assert live["adopted"] is s30dec.ADOPT_SYNCED_KERNEL_HOST is True


def _mark():
    data = read_json(s30dec2.JUDGEMENT_FILE) if json_exists(s30dec2.JUDGEMENT_FILE) else None
    if data and data["verdict"]["decode_target_held"]:
        return ()
    g = [v["by_kind"].get("decode", {}).get("candidate", {}) for v in (data or {}).get("leases", {}).values()]
    fig = ", ".join(f"{x['median_abs_rel_error']:.1%} / {x['p90_abs_rel_error']:.1%}" for x in g if x.get("num_cases"))
    return pytest.mark.xfail(strict=True, reason=f"not held on lease 2: {fig or 'no records'} (docs/notes/s30dec2.md)")


@pytest.mark.parametrize("which", [pytest.param("candidate", marks=_mark())])
def test_issue13_decode_target_on_the_second_lease(live, which):
    assert live["leases"], "no fresh lease filed"
    for lease, v in live["leases"].items():
        g = v["by_kind"]["decode"][which]
        print(f"{lease} decode (adopted): median {g['median_abs_rel_error']:.1%}, P90 {g['p90_abs_rel_error']:.1%}")
        assert g["num_cases"] >= s30dec2.MIN_DECODE_RECORDS
        assert g["median_abs_rel_error"] <= s30dec2.MEDIAN_TARGET and g["p90_abs_rel_error"] <= s30dec2.P90_TARGET

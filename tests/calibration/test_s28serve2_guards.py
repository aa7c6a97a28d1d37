"""(s28serve round 2, docs/notes/s28serve2_rule.md) W (ADOPT_WARM_PASS_AND_BUDGET) against its guards, computed before
set N existed by the judge's own command (`python -m calibration.serve_warm_budget guards --json
calibration/s28serve2_guards.json`): the fresh H200 sets J-M gain, the older sets A, C and E lose more than K2 allows
and the A-H pool loses checks (K1), so W is not adopted, the switch is off and set N was not run. One cheap live
recompute keeps the file honest: W still charges set M's bench-small closed loop its first-met stall at t = 0."""

from pathlib import Path

import pytest

import calibration.serve_load_validation as slv
from calibration import records as rec
from calibration.serve_ttft_parts import folder_parts
from calibration.records_io import read_json

GUARDS = Path(__file__).resolve().parents[2] / "calibration" / "s28serve2_guards.json"


def _guards() -> dict:
    return read_json(GUARDS)


def test_w_is_off_and_its_committed_guards_say_why():
    g = _guards()
    assert not slv.ADOPT_WARM_PASS_AND_BUDGET and not g["passes"] and g["adopt"] is None
    crit = g["criteria"]
    assert not crit["K1_pooled_no_fewer"] and crit["K1_pooled_median_within_noise"]
    assert {k for k, v in crit.items() if k.startswith("K2_") and not v} == {f"K2_set_{s}_within_2" for s in "ACE"}
    assert all(v for k, v in crit.items() if k.startswith("K3_"))   # committed runs carry no warm pass: unmoved
    sets = g["seen_sets"]
    assert all(sets[s][1][0] >= sets[s][0][0] for s in "JKLM")       # the fresh H200 sets gain or hold


@pytest.mark.xfail(strict=True, reason="W loses checks on the seen sets A, C, E (K1, K2): not adopted")
def test_w_would_hold_its_guards():
    g = _guards()
    (c0, m0), (c1, m1) = g["pooled"]
    print(f"A-H pooled in force {c0} checks ({m0:.2%}) -> W {c1} ({m1:.2%}); per set: "
          + ", ".join(f"{s} {v[0][0]}->{v[1][0]}" for s, v in g["seen_sets"].items()))
    assert all(v for k, v in g["criteria"].items() if k.startswith(("K1_", "K2_")))


def test_live_w_charges_set_m_bench_closed_loop_its_first_met_stall(monkeypatch):
    folder = Path(rec.MEASUREMENTS_DIR) / "h200" / "s28serve" / "bench-small"
    first = {}
    for on in (False, True):
        monkeypatch.setattr(slv, "ADOPT_WARM_PASS_AND_BUDGET", on)
        (row,) = folder_parts(folder, 0, "closed-c3")
        first[on] = row["twin_steps"][0]
    measured = row["measured_steps"][0]
    assert first[False][0] == first[True][0] == measured[0] > 816      # the t=0 iteration: above the warm pass
    print(f"t=0 iteration {measured[0]} tokens: measured {measured[2] * 1e3:.1f} ms, in force {first[False][2] * 1e3:.1f}, "
          f"W {first[True][2] * 1e3:.1f}")
    assert first[True][2] > first[False][2] + 0.005                    # W charges the first-met terms
    assert abs(first[True][2] - measured[2]) < abs(first[False][2] - measured[2])

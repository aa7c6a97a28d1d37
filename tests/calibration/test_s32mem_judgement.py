"""Campaign s32mem's judgement (docs/notes/s32mem_rule.md; calibration/s32mem_judgement.json, written by
`python -m calibration.reserve_pool --json`): the switch stands as it decided, and a cheap live recompute from the
committed records (every part's reserve fraction, P1, the capped parts' finding) so it cannot go stale (<1 s)."""


import pytest

from calibration import allocator_reserve as ar
from calibration import published_runs
from calibration import reserve_pool as rp
from calibration.records_io import read_json

J = read_json(rp.JUDGEMENT)
DF = ar.pool_rows()
PARTS = ar.pooled_parts(DF)


def test_the_switch_stands_as_judged():
    assert J["criteria"] == {"P1": False, "M1": True, "M2": True, "M3": True, "G1": True} and J["adopt"] is False
    assert published_runs.ADOPT_RESERVED_PEAK_POOLED is False


def test_the_records_give_the_judged_fractions_and_premise():
    assert set(PARTS) == set(J["parts"])
    for key, p in PARTS.items():   # cap102_n ran no steady step (OOM in step 2): None both ways
        want = J["parts"][key]["reserve_frac"]
        assert p["reserve_frac"] == (None if want is None else pytest.approx(want, rel=1e-12)), key
    committed = ar.pooled_fractions({k: p for k, p in PARTS.items() if not p["record"].endswith(ar.FRESH)})
    assert rp.premise(PARTS, committed) == J["P1"]
    # per-op SAC reserves a quarter beyond its live peak under either setting; eager full AC a fifth
    f = {k: v["f"] for k, v in J["P1"]["parts"].items()}
    assert 0.25 < f["op_e"] < f["op_n"] < 0.30 and 0.15 < f["full_e"] < f["none_e"] < 0.25


def test_the_capped_steps_as_judged():
    assert rp.feasibility(DF) == J["feasibility"]
    caps = J["feasibility"]["parts"]
    # expandable segments: every step runs at 1.02 x the live peak, retrying; the default allocator runs out at 1.06
    assert not caps["cap102_e"]["oom"] and caps["cap102_e"]["steps_ok"] == 5 and caps["cap102_e"]["num_alloc_retries"] > 0
    assert caps["cap102_n"]["oom"] and caps["cap106_n"]["oom"]


@pytest.mark.xfail(strict=True, reason=f"not met (P1): eager full AC reserves {J['P1']['parts']['full_e']['f']:.3f} "
                   f"beyond its live peak against the committed median {J['committed_fractions']['expandable']:.3f} "
                   f"(band {rp.P1_BAND}): the reserve is not one figure of the allocator")
def test_the_reserve_is_one_fraction_across_recomputation_modes():
    assert all(v["within"] for v in J["P1"]["parts"].values() if v["judged"])

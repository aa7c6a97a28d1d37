"""The memory a training process holds outside torch's allocator (s26mem round 2, rule
docs/notes/s26mem2_rule.md, step.ADOPT_OUTSIDE_ALLOCATOR_RESERVE): where the switch is on, the step
simulator and the plan screen both fit a rank's count within the GPU's capacity less the figure, so
both refuse a plan whose count lies within it of the capacity, and the published-runs comparison
reports that capacity."""

import pytest

from calibration import published_runs as pr
from calibration.published_runs import load_runs, scenario_of
from twin.core.errors import InfeasiblePlan
from twin.planning.screen import screen
from twin.training import step

GIB = 2 ** 30
# a plan 0.19 GiB from its capacity: the Llama 3 8,192-GPU row as read before s33pub (ZeRO-2 reduce-scattering every
# backward; published_runs.ADOPT_LLAMA3_ISCA_COMMS off). Read as Meta's ISCA'25 paper states it, it needs 88.6 GiB.
ROW = "l3-405b-8k-gpus8192"


@pytest.fixture(scope="module")
def row_scenario():
    saved, pr.ADOPT_LLAMA3_ISCA_COMMS = pr.ADOPT_LLAMA3_ISCA_COMMS, False
    try:
        return scenario_of(next(r for r in load_runs()[0] if r.id == ROW))
    finally:
        pr.ADOPT_LLAMA3_ISCA_COMMS = saved


@pytest.mark.parametrize(("reserve_gib", "fits"), [(0.1, True), (0.5, False)])
def test_the_simulator_and_the_screen_fit_within_the_capacity_less_the_reserve(monkeypatch, row_scenario,
                                                                              reserve_gib, fits):
    monkeypatch.setattr(step, "ADOPT_OUTSIDE_ALLOCATOR_RESERVE", True)
    monkeypatch.setattr(step, "OUTSIDE_ALLOCATOR_BYTES", reserve_gib * GIB)
    sc = row_scenario
    assert step.training_capacity_bytes(sc.gpu) == pytest.approx(sc.gpu.hbm_bytes - reserve_gib * GIB)
    est = screen(sc)
    assert est.fits is fits
    if fits:
        res = step.simulate_step(sc, record_events=False)
        assert res.memory_capacity_bytes == pytest.approx(sc.gpu.hbm_bytes - reserve_gib * GIB)
    else:
        with pytest.raises(InfeasiblePlan, match="out of memory"):
            step.simulate_step(sc, record_events=False)


def test_off_the_capacity_is_the_gpus(monkeypatch, row_scenario):
    monkeypatch.setattr(step, "ADOPT_OUTSIDE_ALLOCATOR_RESERVE", False)
    monkeypatch.setattr(step, "OUTSIDE_ALLOCATOR_BYTES", 5 * GIB)
    assert step.training_capacity_bytes(row_scenario.gpu) == row_scenario.gpu.hbm_bytes

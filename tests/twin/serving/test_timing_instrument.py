"""timing.ADOPT_TIMING_INSTRUMENT (docs/notes/s28serve_rule.md): a load record run with real/serve --timing is replayed
with the instrument's time between iterations (the table's timing_loop_s, host-scaled, on loop_s). Off, or a scenario
whose engine ran without it, or a table without the term: nothing moves."""

import dataclasses

import pytest

from calibration import prereg_serve as ps
from calibration import serve_floor_rejudge as sti
from calibration.serve_load_validation import scenario_for, timed_run_ids
from twin.serving import timing

TABLE = "real-serve-h200-ep1"
TERM_S = 30e-6


def _costs(model: str = "bench-small", timed: bool = True, probe_s: float = 0.0) -> timing.IterationCosts:
    run = next(r for r in ps.S22.runs if r.arrival == "closed")
    sc = ps.scenario_for(ps.run_row("h200", model, run, probe_s), engine=TABLE)
    return timing.IterationCosts(sc.model, sc.gpu, dataclasses.replace(sc.serve, engine_timing=timed))


def _prices(c: timing.IterationCosts) -> tuple[float, ...]:
    """A decode-only replay (5 rows: bucket 8), a lone prompt and a mixed eager iteration."""
    return (c.iteration_s(5, 400.0, 0, 0.0, 400.0)[0], c.iteration_s(0, 0.0, 480, 480.0, 0.0, 1, 480.0 * 480)[0],
            c.iteration_s(8, 700.0, 640, 640.0, 700.0, 1, 640.0 * 640)[0])


def test_off_by_default_and_a_scenario_runs_without_the_instrument():
    assert timing.ADOPT_TIMING_INSTRUMENT is False and "timing_loop_s" in timing.HOST_SCALED_TERMS
    sc = ps.scenario_for(ps.run_row("h200", "bench-small", ps.S22.runs[0], 0.0), engine=TABLE)
    assert sc.serve.engine_timing is False


@pytest.mark.parametrize("probe_s", [0.0, 12e-6])
def test_on_a_timed_scenario_pays_the_term_at_every_iteration_host_scaled(probe_s):
    off = _costs(probe_s=probe_s)
    f = timing.host_scale(timing.engine_costs(TABLE), probe_s)
    with sti.setting({TABLE: {sti.TERM: TERM_S}}):
        on, untimed = _costs(probe_s=probe_s), _costs(timed=False, probe_s=probe_s)
        assert on.loop_of(True) == pytest.approx(off.loop_of(True) + TERM_S * f, rel=1e-12)
        assert on.loop_of(False) == pytest.approx(off.loop_of(False) + TERM_S * f, rel=1e-12)
        for a, b in zip(_prices(on), _prices(off)):
            assert a == pytest.approx(b + TERM_S * f, rel=1e-9)
        assert _prices(untimed) == _prices(off)           # the engine alone: as before
    assert _prices(_costs(probe_s=probe_s)) == _prices(off)   # off again: as before
    with sti.setting({"real-serve-h100-ep1": {sti.TERM: TERM_S}}):
        assert _prices(_costs(probe_s=probe_s)) == _prices(off)   # a table without the term


def test_a_record_is_timed_where_its_iterations_carry_the_instrument_columns():
    its = [{"run_id": "a", "host_s": "0.0002", "gpu_s": "0.001"}, {"run_id": "b", "host_s": "", "gpu_s": "nan"},
           {"run_id": "c", "host_s": "0.0001", "gpu_s": ""}, {"run_id": "b", "host_s": "nan", "gpu_s": ""}]
    assert timed_run_ids(its) == {"a", "c"}
    run = {**ps.run_row("h200", "bench-small", ps.S22.runs[0], 0.0), "engine_timing": True}
    assert scenario_for(run).serve.engine_timing is True

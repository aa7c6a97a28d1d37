"""timing.ADOPT_EAGER_START_SYNC (docs/notes/s26start_rule.md): round 1's P plus the eager prompt step's start (host
work before the first operator; the attention core issued from the chunk operators) and its closing sync. Off nothing
moves; on, a table without the new terms prices as P; EP tables never move; the start and the sync add what they
say."""

import dataclasses

import pytest

from calibration import prereg_serve as ps
from calibration import serve_prefill_kernels as spk
from calibration import serve_start_sync as sss
from twin.serving import timing
from twin.serving.pipeline import pipeline_end_s

TABLE = "real-serve-h100-ep1"
OP_COSTS = {"real-serve-h100-ep1": 10.78e-6, "real-serve-h200-ep1": 11.27e-6}   # s24pipe's
SYNC = {"real-serve-h100-ep1": 64e-6, "real-serve-h200-ep1": 67e-6}
HOST = {t: {"eager_op_s": 8.5e-6, "start_s_per_token": 0.12e-6, "start_s": 0.34e-3, "start_prompt_only_s": 0.68e-3}
        for t in OP_COSTS}
MODELS = ("v3-slice-2l", "qwen3moe-mla-slice", "mixtral-mla-slice", "bench-small")


def _costs(model: str, table: str = TABLE, ep: int | None = None) -> timing.IterationCosts:
    run = next(r for r in ps.S22.runs if r.arrival == "closed")
    sc = ps.scenario_for(ps.run_row("h100", model, run, 0.0), engine=table)
    s = sc.serve if ep is None else dataclasses.replace(sc.serve, ep=ep)
    return timing.IterationCosts(sc.model, sc.gpu, s)


def _prices(c: timing.IterationCosts) -> tuple[float, ...]:
    """A lone prompt (1 x 480), a prompt-only iteration (4 x 480), a mixed one (2 x 640 beside 8 decode rows) and a
    decode-only one (16 rows)."""
    return (c.iteration_s(0, 0.0, 480, 480.0, 0.0, 1, 480.0 * 480)[0],
            c.iteration_s(0, 0.0, 1920, 480.0, 0.0, 4, 1920.0 * 480)[0],
            c.iteration_s(8, 700.0, 1280, 640.0, 0.0, 2, 1280.0 * 640)[0],
            c.iteration_s(16, 700.0, 0, 0.0, 700.0)[0])


def test_pipeline_start_delays_an_idle_gpu_by_the_start():
    stages = [(10, 0.0), (20, 1e-3), (5, 0.0)]
    end0, last0 = pipeline_end_s(stages, 10e-6)
    end1, last1 = pipeline_end_s(stages, 10e-6, 0.5e-3)
    assert last1 == pytest.approx(last0 + 0.5e-3) and end1 == pytest.approx(end0 + 0.5e-3)
    # a GPU still busy from kernels queued long before hides none of a start given to a later stage: only the first
    # operator waits for it
    assert pipeline_end_s([(1, 5e-3)], 10e-6, 1e-3)[0] == pytest.approx(1e-3 + 10e-6 + 5e-3)


@pytest.fixture(scope="module")
def settings():
    refit = spk.read_refit()
    out = {}
    for name, cand in (("off", None), ("P", "P"), ("S", "S")):
        with sss.setting(cand, refit, OP_COSTS, SYNC, HOST):
            out[name] = {m: _prices(_costs(m)) for m in MODELS}
            out[name]["ep2"] = _prices(_costs("v3-slice-2l", "real-serve-h100-ep2", ep=2))
    return out


def test_on_by_default_with_the_other_two_of_t():
    """Adopted as candidate T (docs/notes/s26start2_rule.md): the three switches on by default."""
    assert all(getattr(timing, name) for name in timing.T_SWITCHES)
    assert "ADOPT_EAGER_START_SYNC" in timing.T_SWITCHES


def test_ep_tables_do_not_move(settings):
    assert settings["S"]["ep2"] == settings["off"]["ep2"] == settings["P"]["ep2"]


def test_switch_without_the_terms_prices_as_p():
    refit = spk.read_refit()
    zero = {t: {k: 0.0 for k in sss.HOST_FIT_TERMS if k != "eager_op_s"} | {"eager_op_s": OP_COSTS[t]} for t in OP_COSTS}
    with sss.setting("P", refit, OP_COSTS):
        p = [_prices(_costs(m)) for m in MODELS]
    with sss.setting("S", refit, OP_COSTS, {t: 0.0 for t in OP_COSTS}, zero):
        s = [_prices(_costs(m)) for m in MODELS]
    # the core's placement alone (no start, no sync): never earlier than P
    for a, b in zip(p, s):
        assert all(y >= x - 1e-12 for x, y in zip(a, b))


def test_start_and_sync_lengthen_a_lone_prompt_by_exactly_them_at_the_same_operator_cost():
    """At P's operator cost a lone prompt step's every launch moves by the start (its GPU idle before the first
    operator), the core's placement can only delay, and the sync follows the last kernel."""
    refit = spk.read_refit()
    same = {t: {**HOST[t], "eager_op_s": OP_COSTS[t]} for t in OP_COSTS}
    start = HOST[TABLE]["start_s"] + HOST[TABLE]["start_prompt_only_s"] + 480 * HOST[TABLE]["start_s_per_token"]
    for m in MODELS:
        with sss.setting("P", refit, OP_COSTS):
            p = _costs(m).iteration_s(0, 0.0, 480, 480.0, 0.0, 1, 480.0 * 480)[0]
        with sss.setting("S", refit, OP_COSTS, SYNC, same):
            s = _costs(m).iteration_s(0, 0.0, 480, 480.0, 0.0, 1, 480.0 * 480)[0]
        assert s - p >= start + SYNC[TABLE] - 1e-9, (m, s - p)
        assert s - p < start + SYNC[TABLE] + 2e-3, (m, s - p)


def test_a_graph_replayed_decode_step_does_not_move():
    refit = spk.read_refit()
    got = {}
    for cand in ("P", "S"):
        with sss.setting(cand, refit, OP_COSTS, SYNC, HOST):
            c = _costs("v3-slice-2l")
            assert not c.is_eager(16, 0, 700.0)
            got[cand] = c.iteration_s(16, 700.0, 0, 0.0, 700.0)[0]
    assert got["S"] == got["P"]

"""timing.ADOPT_ENGINE_PREFILL_BY_HEADS (docs/notes/s25v3pre2_rule.md): on a one-GPU real.serve table, the fit model's
head-layers priced as committed, every other model as round 1's candidate P (the engine terms, the pipeline, the
refitted table with eager_op_s). Off nothing moves; the fit model never moves; EP tables never move; a non-fit model
is priced exactly as P prices it."""

import dataclasses

import pytest

from calibration import prereg_serve as ps
from calibration import serve_prefill_kernels as spk
from calibration import serve_prefill_kernels2 as spk2
from twin.serving import timing

TABLE = "real-serve-h100-ep1"
OP_COSTS = {"real-serve-h100-ep1": 10.78e-6, "real-serve-h200-ep1": 11.27e-6}   # s24pipe's, as the judge reads them


def _costs(model: str, table: str = TABLE, ep: int | None = None) -> timing.IterationCosts:
    run = next(r for r in ps.S22.runs if r.arrival == "closed")
    sc = ps.scenario_for(ps.run_row("h100", model, run, 0.0), engine=table)
    s = sc.serve if ep is None else dataclasses.replace(sc.serve, ep=ep)
    return timing.IterationCosts(sc.model, sc.gpu, s)


def _prices(c: timing.IterationCosts) -> tuple[float, ...]:
    """A prompt-only iteration (4 x 480), one behind a prefix, and a mixed one (2 x 640 beside 8 decode rows)."""
    return (c.iteration_s(0, 0.0, 1920, 480.0, 0.0, 4, 1920.0 * 480)[0],
            c.iteration_s(0, 0.0, 480, 480.0 + 2 * 512, 0.0, 1, 480.0 * 992, 512.0)[0],
            c.iteration_s(8, 700.0, 1280, 640.0, 0.0, 2, 1280.0 * 640)[0])


def test_off_by_default_and_off_moves_nothing():
    assert not timing.ADOPT_ENGINE_PREFILL_BY_HEADS
    s = _costs("qwen3moe-mla-slice").s
    assert timing.engine_prefill_by_heads(_costs("qwen3moe-mla-slice").m, s) == (s, None)


@pytest.fixture(scope="module")
def settings():
    refit = spk.read_refit()
    out = {}
    for name, cand in (("off", None), ("R", "R")):
        with spk2.setting(cand, refit, OP_COSTS):
            out[name] = {m: _prices(_costs(m)) for m in ("v3-slice-2l", "qwen3moe-mla-slice", "mixtral-mla-slice")}
            out[name]["ep2"] = _prices(_costs("v3-slice-2l", "real-serve-h100-ep2", ep=2))
            out[name]["h200-qwen3"] = _costs("qwen3moe-mla-slice", "real-serve-h200-ep1").s.engine_costs
    with spk.setting("P", refit, OP_COSTS):
        out["P"] = {m: _prices(_costs(m)) for m in ("qwen3moe-mla-slice", "mixtral-mla-slice")}
    return out


def test_the_fit_model_and_ep_tables_do_not_move(settings):
    assert settings["R"]["v3-slice-2l"] == settings["off"]["v3-slice-2l"]
    assert settings["R"]["ep2"] == settings["off"]["ep2"]


def test_other_models_are_priced_as_round_one_p(settings):
    for m in ("qwen3moe-mla-slice", "mixtral-mla-slice"):
        assert settings["R"][m] == pytest.approx(settings["P"][m], rel=1e-12)
        assert settings["R"][m] != settings["off"][m]
    assert settings["R"]["h200-qwen3"] == "real-serve-h200-ep1-engine"
    assert settings["off"]["h200-qwen3"] == "real-serve-h200-ep1"


def test_variant_tables_are_removed_after_the_setting():
    from twin.core.specs import serve_engines
    assert not [t for t in serve_engines() if t.endswith("-engine")]


def test_the_committed_sets_hold_only_the_fit_model_or_ep_runs():
    """K3 by construction (the committed sets R cannot move)."""
    assert spk2.committed_sets_unmoved_by_construction()
    assert spk2.fit_model_head_layers("v3-slice-2l") and not spk2.fit_model_head_layers("mixtral-mla-slice")

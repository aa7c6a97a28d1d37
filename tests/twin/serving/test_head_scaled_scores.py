"""twin.serving.timing.ADOPT_HEAD_SCALED_SCORES (docs/notes/s23closed_rule.md): under the switch a model of H heads
and L layers pays the tables' score term per query-key pair times (H x L) / (128 x 2); the tables' own model
(v3-slice-2l, every committed load run) is untouched either way, and off every model pays it as fitted."""

import pytest

from calibration import prereg_serve as ps
from twin.core.specs import get_model, serve_engines
from twin.serving import timing

TABLE = serve_engines()["real-serve-h100-ep1"]
# a closed loop's first iteration (s22ttft seed 63): six prompts from t = 0, the last chunked to what the budget leaves
CHUNKS = (742, 245, 295, 212, 392, 162)
PAIRS = float(sum(n * n for n in CHUNKS))   # fresh prompts: a chunk of n tokens scores n x n pairs


@pytest.fixture
def switch(monkeypatch):
    def set_to(on: bool):
        for name in timing.T_SWITCHES:   # the committed pricing before candidate T (docs/notes/s26start2_rule.md)
            monkeypatch.setattr(timing, name, False)
        monkeypatch.setattr(timing, "ADOPT_HEAD_SCALED_SCORES", on)
    return set_to


def _heads_layers(model: str) -> tuple[int, int]:
    m = get_model(model)
    return m.num_heads, m.num_layers


def test_on_scales_only_the_score_term_by_head_layers(switch):
    switch(True)
    # qwen2moe-mla-slice: 16 heads x 2 layers = 32 of v3-slice-2l's 128 x 2 = 256: 1/8
    scaled = timing.head_scaled_engine(TABLE, *_heads_layers("qwen2moe-mla-slice"))
    for k, v in TABLE.items():
        want = v / 8 if k in timing.HEAD_SCALED_TERMS else v
        assert scaled[k] == pytest.approx(want) if isinstance(v, float) else scaled[k] == v
    # qwen3moe-mla-slice: 32 x 2 = 64 of 256
    assert timing.head_scaled_engine(TABLE, *_heads_layers("qwen3moe-mla-slice"))["score_s_per_pair"] == pytest.approx(
        TABLE["score_s_per_pair"] / 4)


def test_the_tables_own_model_is_untouched_either_way(switch):
    heads, layers = _heads_layers("v3-slice-2l")
    assert (heads, layers) == (timing.ENGINE_FIT_HEADS, timing.ENGINE_FIT_LAYERS)
    for on in (False, True):
        switch(on)
        assert timing.head_scaled_engine(TABLE, heads, layers) is TABLE


def test_off_every_model_pays_the_term_as_fitted(switch):
    switch(False)
    for model in ("mixtral-mla-slice", "qwen3moe-mla-slice", "qwen2moe-mla-slice"):
        assert timing.head_scaled_engine(TABLE, *_heads_layers(model)) is TABLE


def _first_iteration_s(model: str) -> float:
    run = next(r for r in ps.S22.runs if r.arrival == "closed")
    sc = ps.scenario_for(ps.run_row("h100", model, run, 0.0), engine=ps.engine_table("h100"))
    costs = timing.IterationCosts(sc.model, sc.gpu, sc.serve)
    p = sum(CHUNKS)
    span = PAIRS / p   # the pairs-weighted span: sum n (n + 2 x prefix) / p, no prefix
    return costs.iteration_s(0, 0.0, p, span, 0.0, len(CHUNKS), PAIRS)[0]


@pytest.mark.parametrize("model, share", [("qwen2moe-mla-slice", 1 / 8), ("mixtral-mla-slice", 1 / 8),
                                          ("qwen3moe-mla-slice", 1 / 4), ("v3-slice-2l", 1.0)])
def test_a_closed_loops_first_iteration_pays_its_models_share_of_the_scores(switch, model, share):
    """Six prompts of 2,048 tokens: on, the iteration is shorter by exactly (1 - share) x the fitted score term x
    its pairs (the score term adds to the rest, nothing else moves); v3-slice-2l's not at all."""
    switch(False)
    off = _first_iteration_s(model)
    switch(True)
    on = _first_iteration_s(model)
    assert off - on == pytest.approx((1 - share) * TABLE["score_s_per_pair"] * PAIRS, rel=1e-9, abs=1e-15)

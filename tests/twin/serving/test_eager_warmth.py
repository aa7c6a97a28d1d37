"""(s33loop, docs/notes/s33loop.md) Candidate W, twin.serving.timing.ADOPT_EAGER_WARMTH (off: screened on the seen sets,
not judged): an eager step's host work (the pipeline's start and per-operator dispatch) times eager_warmth(k), k the
graph-replayed iterations of the instance since its last eager step. The engine counts k; the factor is exact on the
pipeline's host terms; graph replays never change; off (or a zero slope) nothing moves."""

import math

import pytest

from calibration.serve_load_validation import scenario_for
from twin.serving import engine, timing
from twin.serving.pipeline import pipeline_end_s
from tests.twin.serving.synthetic_run import RUN, served


def test_the_switch_is_off_and_its_form_is_centred_on_the_fitting_steps():
    assert not timing.ADOPT_EAGER_WARMTH
    c, b = timing.EAGER_WARMTH_CENTER, timing.EAGER_WARMTH_PER_DOUBLING
    k_centre = 2 ** c - 1   # the k whose factor is 1
    assert timing.eager_warmth(k_centre) == pytest.approx(1.0, rel=1e-12)
    # k = 3: log2(4) = 2; before the first eager step (inf) and past the cap: log2(65)
    assert timing.eager_warmth(3) == pytest.approx(math.exp(b * (2.0 - c)), rel=1e-12)
    assert timing.eager_warmth(math.inf) == timing.eager_warmth(1000) == pytest.approx(
        math.exp(b * (math.log2(1 + timing.EAGER_WARMTH_CAP) - c)), rel=1e-12)


def test_the_factor_scales_the_pipelines_host_terms_and_leaves_graph_replays(monkeypatch):
    monkeypatch.setattr(timing, "ADOPT_EAGER_WARMTH", True)
    sc = scenario_for(RUN, spread=False)
    costs = timing.IterationCosts(sc.model, sc.gpu, sc.serve)
    assert costs.tracks_warmth
    # a prompt step of 300 tokens beside 8 decode rows: eager, priced by the pipeline
    args = (8, 400.0, 300.0, 300.0, 420.0, 1, 300.0 * 300.0, 0.0)
    base, _ = costs.iteration_s(*args)
    warm, _ = costs.iteration_s(*args, warmth=1.25)
    e = costs.engine
    kern, pre, _, b, _ = costs._kernels(8, 400.0, 300.0, 300.0, 420.0, 0.0, 300.0 * 300.0)
    attn_x, moe_x = costs.engine_terms_s(300.0, 300.0, 300.0 * 300.0, 0.0)
    core_x = costs.engine_core_part_s(300.0, 300.0, 300.0 * 300.0, 0.0)
    stages = costs._pipeline_stages(b, 400.0, 300.0, 300.0, 1, kern - pre, pre - attn_x - moe_x, attn_x, moe_x, core_x)
    end0, _ = pipeline_end_s(stages, e["eager_op_s"], costs.start_s(8, 300.0))
    end1, _ = pipeline_end_s(stages, e["eager_op_s"] * 1.25, costs.start_s(8, 300.0) * 1.25)
    assert warm - base == pytest.approx(end1 - end0, rel=1e-9) and warm > base
    # a decode step of 8 rows replays a graph: no host warmth
    assert costs.iteration_s(8, 400.0, 0.0, 0.0, 420.0, warmth=1.25) == costs.iteration_s(8, 400.0, 0.0, 0.0, 420.0)


def test_the_engine_counts_graph_replays_since_the_last_eager_step(monkeypatch):
    """Three lone 300-token prompts 1 s apart, 40 output tokens: each prompt step is eager, then 39 graph decodes; the
    first prompt comes before any eager step (k = inf), the next two after 39 replays each."""
    monkeypatch.setattr(timing, "ADOPT_EAGER_WARMTH", True)
    seen = []
    monkeypatch.setattr(engine, "eager_warmth", lambda k: seen.append(k) or 1.0)
    served([1.0, 2.0, 3.0], 300, 40)
    assert seen == [math.inf, 39, 39]


def test_off_or_a_zero_slope_moves_nothing_and_a_slope_delays_the_prompts(monkeypatch):
    off = served([1.0, 2.0, 3.0], 300, 40)["first_token_s"]
    monkeypatch.setattr(timing, "ADOPT_EAGER_WARMTH", True)
    monkeypatch.setattr(timing, "EAGER_WARMTH_PER_DOUBLING", 0.0)
    assert served([1.0, 2.0, 3.0], 300, 40)["first_token_s"].tolist() == off.tolist()
    monkeypatch.setattr(timing, "EAGER_WARMTH_PER_DOUBLING", 0.05)
    on = served([1.0, 2.0, 3.0], 300, 40)["first_token_s"]
    # k = inf (the cap, 64) and k = 39 both lie above the centre (k ~ 7.6): every prompt step is slower
    assert all(on > off)

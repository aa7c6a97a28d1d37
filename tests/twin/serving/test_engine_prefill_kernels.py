"""timing.ADOPT_ENGINE_PREFILL_KERNELS (docs/notes/s25v3pre_rule.md): an eager one-GPU real.serve prompt chunk priced
as the engine runs it (math-SDPA core, the eager MoE's routing passes, fp32 RoPE) in place of the twin's attn_core,
kv_up, rope, permute, unpermute, experts_swiglu, the prefix expansion and the table's score term. Off nothing moves;
on, only the one-GPU real.serve tables move; the pipeline keeps every kernel second; the terms scale as written."""

import dataclasses

import pytest

from calibration import prereg_serve as ps
from calibration.serve_host_speed import tables_with
from twin.core.scenario import load_scenario
from twin.core.specs import get_model
from twin.serving import timing

TABLE = "real-serve-h100-ep1"


def _costs(model: str, table: str = TABLE, ep: int | None = None) -> timing.IterationCosts:
    run = next(r for r in ps.S22.runs if r.arrival == "closed")
    sc = ps.scenario_for(ps.run_row("h100", model, run, 0.0), engine=table)
    s = sc.serve if ep is None else dataclasses.replace(sc.serve, ep=ep)
    return timing.IterationCosts(sc.model, sc.gpu, s)


def _prompt_s(c: timing.IterationCosts, prompts: int, tokens: int, prefix: int = 0) -> float:
    pairs = float(prompts * tokens * (prefix + tokens))
    span = float(tokens + 2 * prefix)
    return c.iteration_s(0, 0.0, prompts * tokens, span, 0.0, prompts, pairs, float(prompts * prefix))[0]


def test_off_nothing_moves_and_the_switch_is_on_by_default(monkeypatch):
    assert timing.ADOPT_ENGINE_PREFILL_KERNELS   # adopted as part of candidate T (docs/notes/s26start2_rule.md)
    monkeypatch.setattr(timing, "ADOPT_ENGINE_PREFILL_KERNELS", False)
    c = _costs("v3-slice-2l")
    assert not c.engine_prefill and c.engine_terms_s(1920, 480, 1920 * 480.0, 0.0) == (0.0, 0.0)
    assert _prompt_s(c, 4, 480) > 0


def test_on_only_the_one_gpu_real_serve_tables_move(monkeypatch):
    """G3 by construction: the default serving scenario (R1 on one HGX H200, no engine table) and an EP table are
    priced as before with the switch on."""
    sc = load_scenario(kind="serving")
    off = timing.IterationCosts(sc.model, sc.gpu, sc.serve)
    ep2 = _costs("v3-slice-2l", "real-serve-h100-ep2", ep=2)
    before = (off.iteration_s(0, 0.0, 4096, 4096, 0.0, 1, 4096.0 ** 2)[0], _prompt_s(ep2, 4, 480))
    monkeypatch.setattr(timing, "ADOPT_ENGINE_PREFILL_KERNELS", True)
    on = timing.IterationCosts(sc.model, sc.gpu, sc.serve)
    ep2_on = _costs("v3-slice-2l", "real-serve-h100-ep2", ep=2)
    assert not on.engine_prefill and not ep2_on.engine_prefill
    assert (on.iteration_s(0, 0.0, 4096, 4096, 0.0, 1, 4096.0 ** 2)[0], _prompt_s(ep2_on, 4, 480)) == before
    assert _costs("v3-slice-2l").engine_prefill and _costs("qwen3moe-mla-slice", "real-serve-h200-ep1").engine_prefill


def test_on_the_score_term_is_replaced_and_the_terms_scale_as_written(monkeypatch):
    monkeypatch.setattr(timing, "ADOPT_ENGINE_PREFILL_KERNELS", True)
    c = _costs("v3-slice-2l")
    m = get_model("v3-slice-2l")
    attn, moe = c.engine_terms_s(1920.0, 480.0, 1920.0 * 480, 0.0)
    hl = m.num_heads * m.num_layers
    assert attn == pytest.approx(hl * (timing.CORE_S_PER_PAIR_HEAD_LAYER * 1920 * 480 + timing.CORE_S_PER_KEY_HEAD_LAYER
                                       * 1920 + timing.ROPE_S_PER_TOKEN_HEAD_LAYER * 1920))
    assert moe == pytest.approx(m.num_moe_layers * (timing.MOE_ROUTING_S_PER_LAYER + timing.MOE_ROUTING_S_PER_ROW_ELEMENT
                                                    * 1920 * m.top_k * m.hidden_size))
    # a chunk behind a prefix: every key (prefix + chunk) pays the per-key term, no prefix expansion beside it
    a0, _ = c.engine_terms_s(480.0, 480.0, 480.0 * 480, 0.0)
    a1, _ = c.engine_terms_s(480.0, 480.0 + 2 * 512, 480.0 * (512 + 480), 512.0)
    assert a1 - a0 == pytest.approx(hl * (timing.CORE_S_PER_PAIR_HEAD_LAYER * 480 * 512
                                          + timing.CORE_S_PER_KEY_HEAD_LAYER * 512))
    assert c.prefix_s(512.0) == 0.0
    # the table's score term is not charged: raising it moves nothing
    base = _prompt_s(c, 4, 480)
    with tables_with({TABLE: {"score_s_per_pair": 1e-6}}):
        assert _prompt_s(_costs("v3-slice-2l"), 4, 480) == base


def test_the_pipeline_keeps_every_kernel_second(monkeypatch):
    """Under the pipeline the engine terms sit in the attention and MoE stages: the stages' kernel seconds sum to the
    iteration's kernels, whatever the mix of prompt and decode rows."""
    monkeypatch.setattr(timing, "ADOPT_ENGINE_PREFILL_KERNELS", True)
    c = _costs("v3-slice-2l")
    for b, p, chunks, prefix in ((0, 960, 2, 0), (16, 480, 1, 256), (0, 1280, 1, 0)):
        pairs = float(p * (p / chunks + prefix))
        span = p / chunks + 2 * prefix
        kern, pre, *_ = c._kernels(b, 300.0 if b else 0.0, p, span, 300.0, prefix * chunks, pairs)
        attn, moe = c.engine_terms_s(p, span, pairs, prefix * chunks)
        stages = c._pipeline_stages(b, 300.0, p, span, chunks, kern - pre, pre - attn - moe, attn, moe)
        assert sum(g for _, g in stages) == pytest.approx(kern, rel=1e-9)

"""FlashMLA's release picks the MLA core's compute-bound figure (serve.flashmla_kernel), and DeepSeek's
decode comparisons price it with the release of their date under ADOPT_FLASHMLA_OF_THE_DATE
(docs/notes/s20srv2_rule.md)."""

from __future__ import annotations

import dataclasses

import pytest

import twin.serving.published as published
from twin.core.scenario import SERVING, load_scenario, packaged_scenario
from twin.core.specs import serving_tables
from twin.serving.iteration import flashmla_rates, mla_decode_core_s, serving_profile


@pytest.fixture(scope="module")
def h800_decode():
    sc = load_scenario(packaged_scenario(published.DEEPSEEK_DECODE_SCENARIO),
                       list(published.DEEPSEEK_PROFILE_DECODE_CONDITIONS), SERVING)
    return sc.model, sc.gpu, sc.serve


def test_first_release_has_its_published_compute_figure_and_the_same_memory_figure(h800_decode):
    _, gpu, s = h800_decode
    fm = serving_tables()["flashmla"]
    assert fm["compute_flops_per_s_2502"] == 580e12 and fm["compute_flops_per_s"] == 660e12
    mem_new, flops_new = flashmla_rates(gpu, s)
    mem_old, flops_old = flashmla_rates(gpu, dataclasses.replace(s, flashmla_kernel="2502"))
    assert mem_old == mem_new == pytest.approx(3000e9)            # H800: 3.35 TB/s x 3000/3350
    assert flops_new == pytest.approx(660e12) and flops_old == pytest.approx(580e12)


def test_compute_bound_core_slows_by_660_over_580_and_memory_bound_core_not(h800_decode):
    m, gpu, s = h800_decode
    prof = serving_profile(gpu, s)
    old = dataclasses.replace(s, flashmla_kernel="2502")
    # the profile's micro-batch: 64 requests, 128 heads, 4K context: 73.0 GFLOP against 302 MB, compute-bound
    new_s, flops, nbytes = mla_decode_core_s(m, gpu, s, 64, 1, 4096, prof)
    old_s, _, _ = mla_decode_core_s(m, gpu, old, 64, 1, 4096, prof)
    assert flops / nbytes > 660e12 / 3000e9
    assert (old_s - prof.launch_s) / (new_s - prof.launch_s) == pytest.approx(660 / 580)
    # 16 heads (TP8): 30 FLOP per byte, memory-bound under both releases
    tp8, tp8_old = dataclasses.replace(s, tp=8), dataclasses.replace(old, tp=8)
    assert mla_decode_core_s(m, gpu, tp8, 64, 1, 4096, prof)[0] == mla_decode_core_s(m, gpu, tp8_old, 64, 1, 4096, prof)[0]


@pytest.mark.parametrize("adopt", [True, False])
def test_deepseek_decode_comparisons_carry_the_release_of_their_date_only_under_the_switch(monkeypatch, adopt):
    monkeypatch.setattr(published, "ADOPT_FLASHMLA_OF_THE_DATE", adopt)
    expected = ('serve.flashmla_kernel="2502"',) if adopt else ()
    gemm = published.DEEPSEEK_DECODE_GEMM_CONDITIONS if published.ADOPT_DEEPGEMM_MASKED_DECODE else ()   # s22dg2
    assert published.deepseek_decode_conditions() == expected + gemm
    overrides = published.deepseek_profile_groups("decode")["overrides"]
    assert ('serve.flashmla_kernel="2502"' in overrides) == adopt
    assert overrides[:len(published.DEEPSEEK_PROFILE_DECODE_CONDITIONS)] == published.DEEPSEEK_PROFILE_DECODE_CONDITIONS


def test_the_decode_profile_step_is_longer_with_the_first_release(monkeypatch):
    """Only the attention core moves: 580 TFLOPS lengthens the compute-bound core of every layer, and
    the step (compute-bound at the profile's conditions) with it."""
    monkeypatch.setattr(published, "ADOPT_FLASHMLA_OF_THE_DATE", False)
    off = published.deepseek_profile_groups("decode")
    monkeypatch.setattr(published, "ADOPT_FLASHMLA_OF_THE_DATE", True)
    on = published.deepseek_profile_groups("decode")
    assert on["groups_us"]["attention_core"] > off["groups_us"]["attention_core"]
    for group in ("attention_gemm", "shared_experts", "routed_experts", "elementwise", "dispatch", "combine"):
        assert on["groups_us"][group] == pytest.approx(off["groups_us"][group])
    assert on["iteration_s"] > off["iteration_s"]
    assert on["tokens_per_s_per_node"] < off["tokens_per_s_per_node"]

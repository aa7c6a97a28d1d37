"""The straggler's scatter (twin.serving.iteration.ADOPT_STRAGGLER_SCATTER) and the routed-expert kernel choice
(serve.routed_gemm_kernel, twin.serving.published.ADOPT_DEEPGEMM_MASKED_DECODE): docs/notes/s22dg_rule.md."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import twin.serving.iteration as it
import twin.serving.published as published
from twin.core.errors import ScenarioError
from twin.core.scenario import SERVING, load_scenario, packaged_scenario


@pytest.fixture(scope="module")
def h800_decode():
    sc = load_scenario(packaged_scenario(published.DEEPSEEK_DECODE_SCENARIO), ["traffic.target_tpot_s=0"], SERVING)
    return sc.model, sc.gpu, sc.serve


@pytest.fixture
def scatter(monkeypatch):
    def set_(on: bool):
        monkeypatch.setattr(it, "ADOPT_STRAGGLER_SCATTER", on)
    return set_


def routed_us(m, gpu, s, req_per_gpu: int) -> float:
    return 1e6 * it.decode_step(m, gpu, s, req_per_gpu * s.ep)["per_microbatch_groups_s"]["routed_experts"]


def test_sampled_rows_keep_the_instances_rows_and_the_placement(h800_decode):
    """Each draw's rows over every GPU's slots add up to the experts' drawn rows (replicas split them),
    over the EPLB plan's (ep, slots) layout; the draws are seeded."""
    m, gpu, s = h800_decode
    loads = it._load_figures(m, s, gpu.gpus_per_node)
    tokens = 100 * s.ep // 2
    draws = it.sampled_gpu_rows(loads, s.ep, m.top_k, tokens)
    assert draws.shape == (it.SCATTER_DRAWS, s.ep, (m.num_routed_experts + s.redundant_experts) // s.ep)
    assert np.all(draws >= 0)
    mean_rows = draws.sum(axis=(1, 2)).mean()
    assert mean_rows == pytest.approx(tokens * m.top_k, rel=0.01)
    assert it.sampled_gpu_rows(loads, s.ep, m.top_k, tokens) is draws       # kept with the placement
    assert np.array_equal(draws, it.sampled_gpu_rows({k: v for k, v in loads.items() if k != "sampled_rows"},
                                                     s.ep, m.top_k, tokens))


def test_scatter_off_costs_the_straggler_at_mean_rows_and_on_the_slowest_draw(h800_decode, scatter):
    """EP144 at 104 requests per GPU: the straggler's slots average 234 rows (below torch's 256-row tile),
    but in a draw the slowest of 144 GPUs has a slot past it, so its GEMMs cost a second tile; off, the
    mean rows stay in one."""
    m, gpu, s = h800_decode
    scatter(False)
    off = routed_us(m, gpu, s, 104)
    scatter(True)
    on = routed_us(m, gpu, s, 104)
    assert on > off * 1.2
    scatter(False)
    assert routed_us(m, gpu, s, 104) == off


def test_scatter_leaves_one_gpu_instances_alone(h800_decode, scatter):
    m, gpu, s = h800_decode
    one = dataclasses.replace(s, ep=1, redundant_experts=0)
    scatter(False)
    off = it.decode_step(m, gpu, one, 64)["step_s"]
    scatter(True)
    assert it.decode_step(m, gpu, one, 64)["step_s"] == off


def test_masked_kernel_is_fp8_only_and_set_for_deepseek_under_its_switch(monkeypatch):
    with pytest.raises(ScenarioError, match="routed_gemm_kernel"):
        load_scenario(packaged_scenario(published.DEEPSEEK_DECODE_SCENARIO),
                      ['serve.routed_gemm_kernel="deepgemm_masked"', 'serve.weight_precision="bf16"'], SERVING)
    monkeypatch.setattr(published, "ADOPT_DEEPGEMM_MASKED_DECODE", True)
    assert 'serve.routed_gemm_kernel="deepgemm_masked"' in published.deepseek_decode_conditions()
    monkeypatch.setattr(published, "ADOPT_DEEPGEMM_MASKED_DECODE", False)
    assert not any("routed_gemm_kernel" in c for c in published.deepseek_decode_conditions())


def test_masked_kernel_prices_the_routed_gemms_with_its_own_model(h800_decode):
    m, gpu, s = h800_decode
    masked = dataclasses.replace(s, routed_gemm_kernel="deepgemm_masked")
    prof = it.serving_profile(gpu, s)
    rows = [200.0, 200.0]
    assert it.routed_gemms_s(rows, m, gpu, masked, prof, 1.0) != it.routed_gemms_s(rows, m, gpu, s, prof, 1.0)
    assert routed_us(m, gpu, masked, 60) > 0

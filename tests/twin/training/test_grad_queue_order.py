"""ADOPT_GRAD_QUEUE_AFTER_FREES (docs/notes/s21tt_rule.md; adopted under docs/notes/s26mem_rule.md): at the end of a chunk's
backward op its gradients join plan.pp_grad_sync 'every_backward''s reduce-scatter queue after its
activations were freed as the backward ran, through the op's inner peak walked block by block
(step.backward_inner_peak_bytes), against the default that counts the op's gradients and all of its
activations together for that instant. Both settings tested; formulas, not figures."""

import pytest

from calibration import published_runs as pr
from twin.training import step as st
from twin.training.results import Perturb

from tests.twin.training.test_grad_sync import _every


def _queue_peaks(sc, after_frees: bool, monkeypatch, inner=None) -> list[float]:
    monkeypatch.setattr(st, "ADOPT_GRAD_QUEUE_AFTER_FREES", after_frees)
    if inner is not None:
        monkeypatch.setattr(st, "backward_inner_peak_bytes", inner)
    result = st.simulate_step(sc, record_events=True, check_memory=False)
    schedule, costs, *_ = st._prepare(sc, None, Perturb(), False)
    return [peak for _, _, peak in st.grad_sync_queue(sc, costs, schedule, result.pipeline.op_spans, sc.gpu, 1.0)]


def _chunk_bytes(sc, costs, rank, stage) -> tuple[float, float]:
    width = st.GRAD_REDUCE_BYTES[sc.plan.grad_reduce_dtype]
    return st.stage_activation_bytes(sc, costs, stage), st.chunk_params(sc, costs, rank, stage) * width


def test_the_inner_peak_lies_between_freeing_first_and_adding_first():
    sc = _every()
    schedule, costs, *_ = st._prepare(sc, None, Perturb(), False)
    for rank in range(schedule.num_ranks):
        for chunk in range(schedule.num_chunks):
            stage = schedule.stage_of(rank, chunk)
            acts, grads = _chunk_bytes(sc, costs, rank, stage)
            peak = st.backward_inner_peak_bytes(sc, costs, rank, stage)
            assert max(acts, grads) <= peak <= acts + grads


def test_a_llama3_405b_block_peaks_at_its_first_linear_s_gradient():
    """One layer a chunk (Llama 3 405B, TP 8 with SP, 8,192 tokens, no recomputation): the largest
    joint count inside its backward is its FP32 gradients with the two hidden-width tensors its
    QKV projection and first norm still keep (the rule's C3: 1.546 GiB), under the 1.98 GiB that
    adding before freeing counts."""
    runs, _ = pr.load_runs()
    sc = pr.scenario_of(next(r for r in runs if r.id == "l3-405b-8k-gpus8192"))
    schedule, costs, *_ = st._prepare(sc, None, Perturb(), False)
    rank = 1
    stage = schedule.stage_of(rank, 1)
    assert len(costs.layers[stage]) == 1
    d, heads, kv, hd, f, t, tokens = 16384, 128, 8, 128, 53248, 8, 8192
    layer_params = (2 * d * heads * hd + 2 * d * kv * hd + 3 * d * f) / t + 2 * d
    first_inputs = 2 * (d * 2 / t) * tokens
    want = 4 * layer_params + first_inputs
    assert st.backward_inner_peak_bytes(sc, costs, rank, stage) == pytest.approx(want, rel=1e-9)
    acts, grads = _chunk_bytes(sc, costs, rank, stage)
    assert grads == pytest.approx(4 * layer_params) and want < acts + grads


def test_the_switch_moves_only_the_count_between_its_bounds(monkeypatch):
    sc = _every()
    before = st.simulate_step(sc, record_events=False, check_memory=False)
    adds_first = _queue_peaks(sc, False, monkeypatch)
    after_frees = _queue_peaks(sc, True, monkeypatch)
    frees_first = _queue_peaks(sc, True, monkeypatch, inner=lambda sc_, costs, rank, stage: max(
        _chunk_bytes(sc_, costs, rank, stage)))
    for low, got, high in zip(frees_first, after_frees, adds_first):
        assert low <= got <= high
    assert any(got < high for got, high in zip(after_frees, adds_first))
    monkeypatch.undo()
    monkeypatch.setattr(st, "ADOPT_GRAD_QUEUE_AFTER_FREES", True)
    after = st.simulate_step(sc, record_events=False, check_memory=False)
    assert after.step_time_s == pytest.approx(before.step_time_s, rel=1e-12)
    assert after.memory_breakdown_bytes["activations"] == pytest.approx(before.memory_breakdown_bytes["activations"])
    assert after.memory_breakdown_bytes["grad_queue"] <= before.memory_breakdown_bytes["grad_queue"]


def test_the_default_frees_a_backward_s_activations_before_its_gradients_join():
    # the autograd engine releases a node's saved tensors once it has run (engine.cpp
    # Engine::evaluate_function): a backward never holds its chunk's whole gradients and all of its
    # activations at once (s26mem_rule.md, C1-C3 held)
    assert st.ADOPT_GRAD_QUEUE_AFTER_FREES is True

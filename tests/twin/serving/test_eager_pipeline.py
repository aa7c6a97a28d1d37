"""twin.serving.pipeline and timing.ADOPT_EAGER_PIPELINE (docs/notes/s24pipe_rule.md): an eager one-GPU iteration as
a launch/kernel pipeline. The closed form against an operator-by-operator walk, the engine's operator counts, and the
switch: off (or a table without eager_op_s) nothing moves; on, a host-bound iteration ends after its last launch by
what the GPU still has queued."""

import random

import pytest

from calibration import prereg_serve as ps
from calibration.serve_host_speed import tables_with
from twin.core.specs import get_model
from twin.serving import timing
from twin.serving.pipeline import eager_ops, head_stages, moe_ffn_stages, pipeline_end_s, stage_ops

TABLE = "real-serve-h100-ep1"
OP_S = 10.78e-6   # s24eager's median host per operator at the H100 table's reference host


def _walk(stages, op_s):
    """Operator by operator: kernel k starts at max(its launch, kernel k-1's end)."""
    host = gpu = 0.0
    for n, g in stages:
        if n <= 0:
            gpu += g
            continue
        for _ in range(int(n)):
            host += op_s
            gpu = max(gpu, host) + g / n
    return gpu, host


def test_the_closed_form_is_the_operator_walk():
    rnd = random.Random(7)
    for _ in range(200):
        stages = [(rnd.randint(0, 40), rnd.choice([0.0, rnd.uniform(0, 2e-3)])) for _ in range(rnd.randint(1, 12))]
        end, last = pipeline_end_s(stages, OP_S)
        walk_end, walk_last = _walk(stages, OP_S)
        assert end == pytest.approx(walk_end, rel=1e-9, abs=1e-15) and last == pytest.approx(walk_last, rel=1e-12)


def test_a_heavy_kernel_late_in_the_forward_leaves_a_tail():
    # 100 light operators, one 1 ms GEMM, 10 more light ones: the step ends 1 ms after the GEMM's launch
    end, last = pipeline_end_s([(100, 0.0), (1, 1e-3), (10, 0.0)], OP_S)
    assert last == pytest.approx(111 * OP_S)
    assert end == pytest.approx(101 * OP_S + 1e-3)
    # the same kernel time spread over the first operators is hidden under the launches that follow
    end, last = pipeline_end_s([(100, 0.5e-3), (11, 0.0)], OP_S)
    assert end == pytest.approx(last)


def test_operator_counts_follow_the_engine_structure():
    ops = eager_ops("mixtral-mla-slice")
    m = get_model("mixtral-mla-slice")
    pre, attn, ffn, head = stage_ops(ops, m, 1, 0)
    assert pre + sum(attn) + sum(ffn) + head == 180        # counted: 11 + 95 + 65 + 9
    pre16, attn16, _, _ = stage_ops(ops, m, 1, 16)
    assert pre16 - pre == 3 * 16 + 2 and attn16[0] - attn[0] == 77
    assert stage_ops(ops, m, 4, 0)[1][0] - attn[0] == 3 * 42
    v3 = stage_ops(eager_ops("v3-slice-2l"), get_model("v3-slice-2l"), 1, 0)
    assert v3[2] == [20.0, 82.0]                             # a dense first layer, then MoE
    assert eager_ops("no-such-model") is None


def test_the_moe_ffn_and_head_stages_keep_their_operators_and_seconds():
    ops = eager_ops("qwen2moe-mla-slice")
    st = moe_ffn_stages(ops, 1e-3, 0.8)
    assert sum(n for n, _ in st) == ops["ffn_ops_moe"] and sum(g for _, g in st) == pytest.approx(1e-3)
    assert st[1] == (1.0, pytest.approx(0.8e-3 * 2 / 3)) and st[3] == (1.0, pytest.approx(0.8e-3 / 3))
    hd = head_stages(ops, 2e-4)
    assert sum(n for n, _ in hd) == ops["head_ops"] and [g for _, g in hd] == [0.0, 2e-4, 0.0]


@pytest.fixture
def switch(monkeypatch):
    def set_to(on: bool):
        for name in timing.T_SWITCHES:   # the committed pricing before candidate T (docs/notes/s26start2_rule.md)
            monkeypatch.setattr(timing, name, False)
        monkeypatch.setattr(timing, "ADOPT_EAGER_PIPELINE", on)
        monkeypatch.setattr(timing, "ADOPT_HEAD_SCALED_SCORES", on)
    return set_to


def _costs(model: str) -> timing.IterationCosts:
    run = next(r for r in ps.S22.runs if r.arrival == "closed")
    sc = ps.scenario_for(ps.run_row("h100", model, run, 0.0), engine=ps.engine_table("h100"))   # the fit host
    return timing.IterationCosts(sc.model, sc.gpu, sc.serve)


def _one_prompt_s(model: str, tokens: int) -> float:
    return _costs(model).iteration_s(0, 0.0, tokens, tokens, 0.0, 1, float(tokens * tokens))[0]


def test_off_or_without_eager_op_s_nothing_moves(switch):
    switch(False)
    base = _one_prompt_s("qwen2moe-mla-slice", 250)
    with tables_with({TABLE: {"eager_op_s": OP_S}}):
        assert _one_prompt_s("qwen2moe-mla-slice", 250) == base
    assert timing.engine_costs(TABLE)["eager_op_s"] == 0.0


def test_on_a_host_bound_iteration_ends_after_its_launches(switch):
    switch(True)
    with tables_with({TABLE: {"eager_op_s": OP_S}}):
        c = _costs("mixtral-mla-slice")
        t = _one_prompt_s("mixtral-mla-slice", 480)
        pre, attn, ffn, head = stage_ops(c.ops, c.m, 1, 0)
        launches = (pre + sum(attn) + sum(ffn) + head) * OP_S
        kern, pre_k, *_ = c._kernels(0, 0.0, 480, 480, 0.0, 0.0)
    assert t > c.engine["loop_s"] + launches                          # the GPU's queue after the last launch
    assert t < c.engine["loop_s"] + launches + kern + c.engine["score_s_per_pair"] * 480 * 480

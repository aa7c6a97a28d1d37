"""s24long's switches (docs/notes/s24long_rule.md): an FA2 call of few heads per GPU, or of few queries over many
keys, costs its curve time x its class's measured factor; cuDNN curves and 32-head calls never move."""

import pytest

from twin.costs import compute
from twin.costs.flops import Op, OpKind
from twin.costs.profile import load_profile
from twin.core.specs import get_gpu


def _op(heads, q, kv=0, causal=True):
    return Op("attn_core", OpKind.ATTENTION, "attn", batch=1, seq_len=q, heads=heads, qk_dim=128, v_dim=128,
              causal=causal, kv_len=kv)


def test_classes_worked_examples():
    assert compute.fa2_call_class(_op(16, 4096, 65536)) == "few_queries"   # 65,536 >= 8 x 4,096
    assert compute.fa2_call_class(_op(16, 4096, 32767)) == "few_heads"     # 32,767 < 32,768: not few queries
    assert compute.fa2_call_class(_op(16, 32768)) == "few_heads"           # 405B under TP 8
    assert compute.fa2_call_class(_op(8, 8192)) == "few_heads"             # 70B under TP 8
    assert compute.fa2_call_class(_op(32, 32768)) == ""                    # 8B: the curves' own head count
    assert compute.fa2_call_class(_op(32, 32768, 16384, causal=False)) == ""


@pytest.mark.parametrize("heads_on, queries_on", [(False, False), (True, False), (False, True), (True, True)])
def test_factor_applies_only_to_fa2_calls_of_a_switched_class(monkeypatch, heads_on, queries_on):
    monkeypatch.setattr(compute, "ADOPT_FA2_FEW_HEADS_FACTOR", heads_on)
    monkeypatch.setattr(compute, "ADOPT_FA2_FEW_QUERIES_FACTOR", queries_on)
    monkeypatch.setattr(compute, "FA2_SHAPE_TIME_FACTOR", {"few_heads": 1.25, "few_queries": 0.8})
    prof, gpu = load_profile("h100"), get_gpu("h100")
    fa2 = prof.with_attention_kernel("fa2")
    cases = {_op(16, 32768): ("few_heads", heads_on), _op(16, 4096, 65536): ("few_queries", queries_on),
             _op(32, 32768): ("", False)}
    for op, (cls, on) in cases.items():
        want = compute.FA2_SHAPE_TIME_FACTOR[cls] if on else 1.0
        assert compute.fa2_shape_factor(op, fa2) == want
        assert compute.fa2_shape_factor(op, prof) == 1.0   # the cuDNN curves: never
        for d in ("fwd", "bwd"):
            t = compute.attention_time_s(op, d, gpu, fa2)
            monkeypatch.setattr(compute, "ADOPT_FA2_FEW_HEADS_FACTOR", False)
            monkeypatch.setattr(compute, "ADOPT_FA2_FEW_QUERIES_FACTOR", False)
            base = compute.attention_time_s(op, d, gpu, fa2)
            monkeypatch.setattr(compute, "ADOPT_FA2_FEW_HEADS_FACTOR", heads_on)
            monkeypatch.setattr(compute, "ADOPT_FA2_FEW_QUERIES_FACTOR", queries_on)
            # the launch term is not scaled
            assert t - prof.launch_s == pytest.approx(want * (base - prof.launch_s), rel=1e-12)

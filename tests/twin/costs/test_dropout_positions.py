"""Learned absolute positions and training dropout (session s11drop): Megatron-LM's GPT as the
twin's specs and ops hold it; every other model as before."""

import dataclasses

import pytest

from twin.core.errors import ScenarioError
from twin.core.scenario import load_scenario
from twin.core.specs import get_gpu, get_model
from twin.costs import compute
from twin.costs.flops import OpKind, attention_ops, dense_ffn_ops, embedding_ops
from twin.costs.profile import default_profile, profile_from_json


def _names(ops):
    return [op.name for op in ops]


def test_megatron_gpt_specs_carry_megatrons_defaults_and_others_keep_rope_without_dropout():
    for size in ("1.7b", "7.1b", "16b", "32b", "70b", "119b", "177b", "314b", "462b"):
        m = get_model(f"megatron-gpt-{size}")
        assert (m.position_embedding, m.attention_dropout, m.hidden_dropout) == ("learned", 0.1, 0.1)
    for name in ("deepseek-v3", "llama3-8b", "llama3-405b", "mixtral-8x7b"):
        m = get_model(name)
        assert (m.position_embedding, m.attention_dropout, m.hidden_dropout) == ("rope", 0.0, 0.0)


def test_learned_positions_drop_rope_from_the_block_and_add_one_lookup_at_the_embedding():
    gpt, llama = get_model("megatron-gpt-1.7b"), get_model("llama3-8b")
    assert "rope" not in _names(attention_ops(gpt, 1, 4096))
    assert "rope" in _names(attention_ops(llama, 1, 4096))
    assert _names(embedding_ops(gpt, 4096)) == ["embedding", "position_embedding"]
    assert _names(embedding_ops(llama, 4096)) == ["embedding"]
    pos = embedding_ops(gpt, 4096)[1]
    assert pos.kind == OpKind.MEMORY and pos.bytes == 3 * 4096 * 2048 * 2


def test_dropout_runs_in_training_only():
    gpt = get_model("megatron-gpt-1.7b")
    core = [op for op in attention_ops(gpt, 1, 4096, training=True) if op.kind == OpKind.ATTENTION][0]
    assert core.dropout == 0.1
    assert all(op.dropout == 0 for op in attention_ops(gpt, 1, 4096))   # serving: none
    trained = attention_ops(gpt, 1, 4096, training=True) + dense_ffn_ops(gpt, 4096, training=True)
    drops = [op for op in trained if op.name == "hidden_dropout"]
    assert [op.part for op in drops] == ["attn", "mlp"]
    T, D = 4096, 2048   # 1-byte mask written forward; read with the 2-byte gradient in and out backward
    assert all(op.bytes == T * D and op.bwd_bytes == 5 * T * D for op in drops)
    assert "hidden_dropout" not in _names(dense_ffn_ops(gpt, 4096))
    no_drop = dataclasses.replace(gpt, hidden_dropout=0.0)
    assert "hidden_dropout" not in _names(dense_ffn_ops(no_drop, 4096, training=True))


def test_attention_dropout_is_costed_by_the_measured_slowdown_of_the_curves_kernel():
    gpt = get_model("megatron-gpt-1.7b")
    core = [op for op in attention_ops(gpt, 1, 4096, training=True) if op.kind == OpKind.ATTENTION][0]
    plain = dataclasses.replace(core, dropout=0.0)
    gpu = get_gpu("h100")
    base = default_profile()
    prof = dataclasses.replace(base, attention_dropout={"cudnn": {"fwd": 1.5, "bwd": 1.2}, "fa2": {"fwd": 1.1, "bwd": 1.3}})

    def core_s(op, p, d):
        return compute.attention_time_s(op, d, gpu, p) - p.launch_s
    assert core_s(core, base, "fwd") == pytest.approx(core_s(plain, base, "fwd"))   # unmeasured: not costed
    assert core_s(core, prof, "fwd") == pytest.approx(1.5 * core_s(plain, prof, "fwd"))
    assert core_s(core, prof, "bwd") == pytest.approx(1.2 * core_s(plain, prof, "bwd"))
    fa2 = prof.with_attention_kernel("fa2")
    assert core_s(core, fa2, "bwd") == pytest.approx(1.3 * core_s(plain, fa2, "bwd"))
    assert profile_from_json(prof.to_json()).attention_dropout == prof.attention_dropout


@pytest.mark.parametrize("override, pattern", [
    ("model.position_embedding='alibi'", r"model.position_embedding.*alibi"),
    ("model.hidden_dropout=1.5", r"model.hidden_dropout"),
])
def test_bad_position_embedding_or_dropout_names_the_field(override, pattern):
    with pytest.raises(ScenarioError, match=pattern):
        load_scenario(overrides=[override])

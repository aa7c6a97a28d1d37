"""real/model.py GQA (attention = "gqa"): the block against an explicit-softmax reference, a
training step of a GQA MoE model on the CPU, and its serving path (KV cache: prefill + decode = one forward)."""

import dataclasses
import math

import pytest
import torch

from real.configs import get_spec
from real.infer import generate, prefill
from real.model import GQA, apply_rope, build_model, repeat_kv, rope_tables
from real.train import MasterAdamW, train_step


def _reference(attn: GQA, x_BSD, cos_SA, sin_SA):
    """The same attention written out: per query head h, kv head h // (H/V); scores q.k/sqrt(A)
    with future keys masked to -inf, softmax, weights times values, then W_o."""
    B, S, _ = x_BSD.shape
    H, V, A = attn.H, attn.V, attn.A
    q = (x_BSD @ attn.wq_XD.T).view(B, S, H, A)
    k = (x_BSD @ attn.wk_ZD.T).view(B, S, V, A)
    v = (x_BSD @ attn.wv_ZD.T).view(B, S, V, A)
    if attn.q_norm is not None:
        q, k = attn.q_norm(q), attn.k_norm(k)
    q, k = apply_rope(q, cos_SA, sin_SA), apply_rope(k, cos_SA, sin_SA)
    out = torch.empty(B, S, H, A)
    future = torch.triu(torch.ones(S, S, dtype=torch.bool), diagonal=1)
    for h in range(H):
        g = h // (H // V)
        scores = torch.einsum("bsa,bla->bsl", q[:, :, h], k[:, :, g]) / math.sqrt(A)
        p = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
        out[:, :, h] = torch.einsum("bsl,bla->bsa", p, v[:, :, g])
    return out.flatten(2) @ attn.wo_DX.T


@pytest.mark.parametrize("qk_norm", [False, True])
def test_gqa_matches_explicit_softmax_attention(qk_norm):
    spec = dataclasses.replace(get_spec("tiny-gqa"), qk_norm=qk_norm)
    torch.manual_seed(0)
    attn = GQA(spec)
    if qk_norm:   # non-trivial norm weights, so a missing norm would show
        attn.q_norm.weight.data.uniform_(0.5, 1.5)
        attn.k_norm.weight.data.uniform_(0.5, 1.5)
    x_BSD = torch.randn(2, 12, spec.hidden_size)
    cos_LA, sin_LA = rope_tables(spec.head_dim, 12)
    got = attn(x_BSD, cos_LA, sin_LA)
    torch.testing.assert_close(got, _reference(attn, x_BSD, cos_LA, sin_LA), rtol=1e-5, atol=1e-5)


def test_repeat_kv_maps_query_head_to_its_group():
    # 2 kv heads repeated 3 times: query heads 0,1,2 read kv head 0 and 3,4,5 kv head 1
    x = torch.arange(2.0).view(1, 1, 2, 1)
    assert repeat_kv(x, 3).flatten().tolist() == [0, 0, 0, 1, 1, 1]


def test_gqa_model_trains_on_cpu():
    """tiny-gqa (a dense layer, then an MoE layer): loss finite and falling over a few steps,
    every parameter of the attention gets a gradient."""
    spec = get_spec("tiny-gqa")
    torch.manual_seed(0)
    model = build_model(spec, "cpu", torch.float32, max_seq_len=32)
    assert isinstance(model.layers[0].attn, GQA)
    opt = MasterAdamW(model.parameters(), lr=3e-3)
    tokens = torch.randint(0, spec.vocab_size, (2, 32))
    losses = []
    for _ in range(4):
        loss, counts = train_step(model, opt, tokens, torch.roll(tokens, -1, 1))
        losses.append(loss)
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert [int(c.sum()) for c in counts] == [2 * 32 * spec.top_k]


@pytest.mark.parametrize("qk_norm", [False, True])
def test_gqa_cache_prefill_then_decode_matches_one_forward(qk_norm):
    """Prefill of 8 positions into a GQACache, then 5 decode steps of one token each (and one of
    two tokens, the masked path): the logits equal one cache-free forward over all 15 positions."""
    torch.manual_seed(0)
    spec = dataclasses.replace(get_spec("tiny-gqa"), qk_norm=qk_norm)
    model = build_model(spec, "cpu", torch.float32, max_seq_len=32).eval()
    tokens = torch.randint(0, spec.vocab_size, (2, 15))
    with torch.no_grad():
        full = model(tokens)
        caches = model.new_caches(2, 32)
        assert caches[0].k_BVLA.shape == (2, spec.num_kv_heads, 32, spec.head_dim)
        got = [model(tokens[:, :8], caches=caches, start_pos=0)]
        for pos in range(8, 13):
            got.append(model(tokens[:, pos:pos + 1], caches=caches, start_pos=pos))
        got.append(model(tokens[:, 13:15], caches=caches, start_pos=13))
    torch.testing.assert_close(torch.cat(got, dim=1), full, rtol=1e-4, atol=1e-4)


def test_gqa_generate_runs_infer_path():
    """real/infer.py generate (prefill in chunks of the batch, then decode) on a GQA model gives the
    tokens a cache-free greedy loop gives."""
    torch.manual_seed(1)
    model = build_model(get_spec("tiny-gqa"), "cpu", torch.float32, max_seq_len=32).eval()
    prompt = torch.randint(0, model.spec.vocab_size, (3, 6))
    out = generate(model, prompt, 4)
    seq = prompt
    with torch.no_grad():
        for _ in range(4):
            seq = torch.cat([seq, model(seq)[:, -1:].argmax(-1)], dim=1)
    assert torch.equal(out, seq[:, 6:])
    caches = model.new_caches(3, 10)
    assert torch.equal(prefill(model, prompt, caches, max_batch=2), seq[:, 6:7])


def test_gqa_forward_past_zero_needs_a_cache():
    model = build_model(get_spec("tiny-gqa"), "cpu", torch.float32, max_seq_len=32)
    with pytest.raises(ValueError, match="needs the KV cache"):
        model(torch.zeros(1, 1, dtype=torch.long), start_pos=3)

"""Model shapes, parameter accounting, the MLA compressed cache, training and inference."""

import dataclasses

import pytest
import torch

from real.infer import generate, prefill
from real.model import MLA, MoE, Transformer, build_model, group_offsets, num_params, rope_tables
from real.train import MasterAdamW, synthetic_batch, train_step
from twin.costs.flops import param_counts


def test_forward_shapes_and_loss(tiny):
    model = Transformer(tiny, max_seq_len=32)
    tokens = torch.randint(0, tiny.vocab_size, (2, 16))
    assert model(tokens).shape == (2, 16, tiny.vocab_size)
    loss = model.loss(tokens, torch.roll(tokens, -1, 1))
    # untrained: cross entropy near ln(vocab) = ln(256) = 5.55, plus 0.3 x the same for MTP
    assert 1.3 * 5.0 < loss.item() < 1.3 * 6.2


def test_parameter_count_matches_twin_formula(tiny):
    """real/ and the twin count the same parameters (main model + MTP modules)."""
    counts = param_counts(tiny)
    assert num_params(Transformer(tiny)) == counts["total_params"] + counts["mtp_params"]


def test_mla_shapes(tiny):
    mla = MLA(tiny)
    cos, sin = rope_tables(tiny.qk_rope_head_dim, 8)
    assert mla(torch.randn(3, 8, tiny.hidden_size), cos, sin).shape == (3, 8, tiny.hidden_size)
    no_q_lora = dataclasses.replace(tiny, q_lora_rank=0)
    assert MLA(no_q_lora)(torch.randn(1, 8, tiny.hidden_size), cos, sin).shape == (1, 8, tiny.hidden_size)


def test_decode_with_compressed_cache_equals_full_recompute(tiny):
    """Prefill 8 tokens, then decode 8 one at a time over the latent cache with absorbed
    up-projections: logits equal a full forward over all 16 tokens."""
    model = Transformer(tiny, max_seq_len=32).eval()
    tokens = torch.randint(0, tiny.vocab_size, (2, 16))
    with torch.no_grad():
        full = model(tokens)
        caches = model.new_caches(2, 16)
        steps = [model(tokens[:, :8], caches=caches, start_pos=0)]
        steps += [model(tokens[:, i:i + 1], caches=caches, start_pos=i) for i in range(8, 16)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=1e-4, atol=1e-4)
    # the cache holds C + R values per token and layer
    assert caches[0].c_BLC.shape == (2, 16, tiny.kv_lora_rank)
    assert caches[0].kpe_BLR.shape == (2, 16, tiny.qk_rope_head_dim)


def test_chunked_prefill_fills_the_same_cache(tiny):
    model = Transformer(tiny, max_seq_len=32).eval()
    prompt = torch.randint(0, tiny.vocab_size, (4, 8))
    a, b = model.new_caches(4, 8), model.new_caches(4, 8)
    ta, tb = prefill(model, prompt, a), prefill(model, prompt, b, max_batch=3)
    assert torch.equal(ta, tb)
    torch.testing.assert_close(a[1].c_BLC, b[1].c_BLC)


def test_generate_greedy_matches_argmax_of_full_forward(tiny):
    model = Transformer(tiny, max_seq_len=32).eval()
    prompt = torch.randint(0, tiny.vocab_size, (2, 6))
    out = generate(model, prompt, gen_len=4)
    with torch.no_grad():
        seq = torch.cat([prompt, out[:, :-1]], dim=1)
        expected = model(seq)[:, 5:].argmax(-1)
    assert torch.equal(out, expected)


def test_training_reduces_loss_and_keeps_bf16_weights(tiny):
    model = build_model(tiny, "cpu", torch.bfloat16, max_seq_len=32)
    opt = MasterAdamW(model.parameters(), lr=3e-3)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    assert all(m.dtype == torch.float32 for m in opt.masters)
    assert model.moe_layers()[0].gate.bias_E.dtype == torch.float32
    tokens, targets = synthetic_batch(tiny.vocab_size, 8, 32, generator=torch.Generator().manual_seed(0))
    losses = [train_step(model, opt, tokens, targets)[0] for _ in range(12)]
    assert losses[-1] < losses[0] - 1.0, losses


def test_group_offsets_pad_each_expert_to_16_rows():
    # experts 0, 1, 2 get 3, 0, 17 rows -> padded blocks 16, 0, 32 -> ends 16, 16, 48
    counts = torch.tensor([3, 0, 17])
    expert_of_row = torch.repeat_interleave(torch.arange(3), counts)
    pos, offs, capacity = group_offsets(expert_of_row, counts)
    assert offs.tolist() == [16, 16, 48]
    assert pos[:3].tolist() == [0, 1, 2] and pos[3:].tolist() == list(range(16, 33))
    assert capacity >= 48 and capacity % 16 == 0


def test_moe_matches_per_expert_loop(tiny):
    """The grouped-GEMM MoE equals a plain loop over tokens and their experts."""
    moe = MoE(tiny)
    x = torch.randn(10, tiny.hidden_size)
    y = moe(x)
    w, ids = moe.gate(x)
    ref = moe.shared(x)
    for t in range(10):
        for j in range(tiny.top_k):
            e = ids[t, j]
            a, b = (moe.w13_E2FD[e] @ x[t]).chunk(2)
            ref[t] += w[t, j] * (moe.w2_EDF[e] @ (torch.nn.functional.silu(a) * b))
    torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-5)


def test_unknown_attention_is_rejected_with_a_clear_message():
    """real/ builds MLA and GQA (tests/real/test_real_gqa.py); any other kind is refused by name."""
    from real.configs import get_spec

    with pytest.raises(ValueError, match=r"MLA and GQA attention; tiny uses 'mha'"):
        Transformer(dataclasses.replace(get_spec("tiny"), attention="mha"))

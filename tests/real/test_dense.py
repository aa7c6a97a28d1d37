"""real/dense.py against straightforward float64 references (tiny shapes, CPU), and the s8dense
campaign's CPU dry run (real/campaigns/s8dense.sh -> real/bench/dense_block.py)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch

from real.bench.records import DIST_ENV_COLS, ENV_COLS, SHAPE_COLS, STAT_COLS
from real.dense import (DenseShape, GPTBlock, LlamaBlock, LMHead, attention_core, repeat_kv, rope_freqs_cis,
                        slice_of)
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]
LLAMA = DenseShape("llama", hidden_size=16, num_heads=4, num_kv_heads=2, head_dim=4, ffn=24, vocab=11)
GPT = DenseShape("gpt", hidden_size=16, num_heads=4, num_kv_heads=4, head_dim=4, ffn=64, vocab=11)


def _ref_attention(q, k, v):
    """Causal softmax attention written out: q (B,S,H,K), k/v (B,S,G,K); query head h reads K/V
    head h // (H/G)."""
    B, S, H, K = q.shape
    rep = H // k.shape[2]
    out = torch.zeros_like(q)
    for h in range(H):
        scores = q[:, :, h] @ k[:, :, h // rep].transpose(1, 2) / math.sqrt(K)      # (B, S, S)
        scores = scores.masked_fill(torch.ones(S, S, dtype=torch.bool).triu(1), float("-inf"))
        out[:, :, h] = scores.softmax(-1) @ v[:, :, h // rep]
    return out


def _ref_rope(x, theta=500000.0):
    """Pairs (x[2i], x[2i+1]) at position p rotated by p * theta^(-2i/K)."""
    B, S, H, K = x.shape
    out = x.clone()
    for i in range(K // 2):
        angle = torch.arange(S, dtype=x.dtype) * theta ** (-2 * i / K)
        c, s = angle.cos()[None, :, None], angle.sin()[None, :, None]
        a, b = x[..., 2 * i], x[..., 2 * i + 1]
        out[..., 2 * i], out[..., 2 * i + 1] = a * c - b * s, a * s + b * c
    return out


def _ref_llama(blk: LlamaBlock, x):
    p = {n: t.detach().double() for n, t in blk.named_parameters()}
    s = blk.shape
    B, S, _ = x.shape

    def rms(t, w):
        return t / torch.sqrt((t * t).mean(-1, keepdim=True) + s.norm_eps) * w
    h = rms(x, p["attention_norm.weight"])
    q = _ref_rope((h @ p["wq"].T).view(B, S, s.num_heads, s.head_dim))
    k = _ref_rope((h @ p["wk"].T).view(B, S, s.num_kv_heads, s.head_dim))
    v = (h @ p["wv"].T).view(B, S, s.num_kv_heads, s.head_dim)
    x = x + _ref_attention(q, k, v).reshape(B, S, -1) @ p["wo"].T
    h = rms(x, p["ffn_norm.weight"])
    a = h @ p["w1"].T
    return x + ((a / (1 + torch.exp(-a))) * (h @ p["w3"].T)) @ p["w2"].T


def _ref_gpt(blk: GPTBlock, x):
    p = {n: t.detach().double() for n, t in blk.named_parameters()}
    s = blk.shape
    B, S, _ = x.shape

    def ln(t, w, b):
        mu = t.mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(((t - mu) ** 2).mean(-1, keepdim=True) + s.norm_eps) * w + b
    qkv = (ln(x, p["input_layernorm.weight"], p["input_layernorm.bias"]) @ p["w_qkv"].T + p["b_qkv"])
    q, k, v = qkv.view(B, S, 3, s.num_heads, s.head_dim).unbind(2)
    x = x + _ref_attention(q, k, v).reshape(B, S, -1) @ p["w_proj"].T + p["b_proj"]
    a = ln(x, p["pre_mlp_layernorm.weight"], p["pre_mlp_layernorm.bias"]) @ p["w_fc1"].T + p["b_fc1"]
    gelu = 0.5 * a * (1 + torch.erf(a / math.sqrt(2)))
    return x + gelu @ p["w_fc2"].T + p["b_fc2"]


def _perturbed(block):
    """Norm weights and biases away from 1 / 0, so the reference checks they are applied."""
    torch.manual_seed(1)
    with torch.no_grad():
        for n, t in block.named_parameters():
            if t.dim() == 1:
                t.add_(0.3 * torch.randn_like(t))
    return block


@pytest.mark.parametrize("gqa", ["repeat_kv", "enable_gqa"])
def test_llama_block_is_the_written_out_gqa_block(gqa):
    torch.manual_seed(0)
    blk = _perturbed(LlamaBlock(LLAMA, gqa))
    x = torch.randn(2, 6, 16)
    got = blk(x, rope_freqs_cis(LLAMA.head_dim, 6))
    assert torch.allclose(got.double(), _ref_llama(blk, x.double()), atol=1e-5)


def test_gpt_block_is_the_written_out_megatron_layer():
    torch.manual_seed(0)
    blk = _perturbed(GPTBlock(GPT))
    x = torch.randn(2, 5, 16)
    assert torch.allclose(blk(x).double(), _ref_gpt(blk, x.double()), atol=1e-5)


def test_repeat_kv_copies_each_kv_head_to_its_query_heads():
    x = torch.arange(2 * 3 * 2 * 1.0).view(1, 3, 2, 2)    # heads 0, 1
    r = repeat_kv(x, 3)
    assert r.shape == (1, 3, 6, 2)
    assert [torch.equal(r[:, :, h], x[:, :, h // 3]) for h in range(6)] == [True] * 6


def test_attention_core_enable_gqa_equals_repeat_kv_and_the_reference():
    torch.manual_seed(0)
    q, k, v = torch.randn(1, 7, 4, 8), torch.randn(1, 7, 2, 8), torch.randn(1, 7, 2, 8)
    a, b = attention_core(q, k, v, "repeat_kv"), attention_core(q, k, v, "enable_gqa")
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(a, _ref_attention(q, k, v), atol=1e-5)
    with pytest.raises(ValueError, match="gqa 'broadcast'"):
        attention_core(q, k, v, "broadcast")


def test_lm_head_is_norm_projection_and_fp32_cross_entropy():
    torch.manual_seed(0)
    head = LMHead(LLAMA).to(torch.bfloat16)
    x = torch.randn(2, 3, 16, dtype=torch.bfloat16)
    labels = torch.randint(0, LLAMA.vocab, (2, 3))
    loss = head(x, labels)
    assert loss.dtype == torch.float32            # the loss on FP32 logits (torchtitan's loss_fn)
    logits = head.output.detach().float() @ head.norm(x).float().flatten(0, 1).T       # (Y, T)
    ref = -(logits.T.log_softmax(-1).gather(1, labels.view(-1, 1))).mean()
    assert torch.allclose(loss, ref, atol=2e-2)


def test_a_tp_slice_divides_heads_ffn_and_vocab_and_keeps_one_kv_head():
    s = slice_of("llama", 8192, 64, 8, 128, 28672, 128256, 8)
    assert (s.hidden_size, s.num_heads, s.num_kv_heads, s.ffn, s.vocab) == (8192, 8, 1, 3584, 16032)
    assert slice_of("llama", 16384, 128, 8, 128, 53248, 128256, 16).num_kv_heads == 1   # replicated
    with pytest.raises(ValueError, match="ffn 100 not divisible by tp 8"):
        slice_of("gpt", 64, 8, 8, 8, 100, 64, 8)
    with pytest.raises(ValueError, match="kind 'moe'"):
        DenseShape("moe", 8, 2, 2, 4, 8, 8)


def test_s8dense_campaign_cpu_dry_run(tmp_path):
    """real/campaigns/s8dense.sh with tiny shapes: every part writes rows (block, head, attention,
    compile through dynamo), each with its environment, split and one profiled repetition's ops;
    the backends a CPU lacks (cuDNN, memory-efficient) are logged as not run, never a failure."""
    env = {**os.environ, "PYTHON": FORKED_PY, "S8DENSE_QUICK": "1", "PYTHONPATH": str(REPO)}
    subprocess.run(["bash", str(REPO / "real/campaigns/s8dense.sh"), str(tmp_path)], cwd=REPO, env=env,
                   check=True, capture_output=True, timeout=240)
    d = tmp_path / "s8dense"
    assert json.loads((d / "env.json").read_text())["failures"] == []
    for family in ("dense_block", "dense_kernels"):
        with (d / f"{family}.csv").open() as f:
            assert next(csv.reader(f)) == SHAPE_COLS[family] + STAT_COLS + ENV_COLS + DIST_ENV_COLS
    rows = list(csv.DictReader((d / "dense_block.csv").open()))
    assert {r["bench"] for r in rows} == {"block_fwd", "block_fwd_bwd", "head_fwd", "head_fwd_bwd", "attn_fwd",
                                          "attn_fwd_bwd", "gemm_wq", "gemm_wk", "gemm_wo", "gemm_w1", "gemm_w2",
                                          "gemm_qkv", "gemm_proj", "gemm_fc1", "gemm_fc2"}
    assert {(r["model"], r["split"]) for r in rows} == {("tiny-llama", "fit"), ("megatron-gpt-70b", "holdout")}
    assert {r["compiled"] for r in rows if r["bench"] == "block_fwd"} == {"no", "aot_eager"}
    assert {r["gqa"] for r in rows if r["bench"] == "attn_fwd" and r["model"] == "tiny-llama"} == {
        "repeat_kv", "enable_gqa"}
    assert all(float(r["time_s"]) > 0 and r["num_gpus"] == "1" and r["torch_version"] for r in rows)
    kernels = list(csv.DictReader((d / "dense_kernels.csv").open()))
    profiled = {(r["bench"], r["model"], r["compiled"]) for r in kernels}
    assert ("block_fwd_bwd", "tiny-llama", "no") in profiled and ("head_fwd_bwd", "megatron-gpt-70b", "no") in profiled
    assert any("linear" in r["kernel"] or "mm" in r["kernel"] for r in kernels)
    assert "cudnn repeat_kv: not run" in (d / "log.txt").read_text()
    # the twin predicts every row of a backend it has a curve for (calibration.dense_block)
    from calibration import dense_block as db
    from calibration.predict import gpu_spec
    from twin.costs.profile import fitted_profile
    spec, prof = gpu_spec("h100"), fitted_profile("h100")
    for r in rows:
        comp = db.predicted_components_s(r, spec, prof)
        assert (comp is None) == (r["sdpa_backend"] == "efficient") and (comp is None or sum(comp.values()) > 0)

"""Dense transformer blocks as torchtitan and Megatron-LM run them (issue 14, session s8dense):
what the published runs beyond DeepSeek execute per layer, measured by real/bench/dense_block.py
against the twin's dense-block costs (calibration/dense_block.py).

- `LlamaBlock`: torchtitan's Llama 3 TransformerBlock (torchtitan/models/llama/model.py @ 9dec370):
  RMSNorm computed in FP32, GQA attention (wq/wk/wv, RoPE as a complex multiply, K/V heads
  repeated by `repeat_kv` before scaled_dot_product_attention, or SDPA's own `enable_gqa`), wo;
  RMSNorm, SwiGLU FFN w2(silu(w1 x) * w3 x). No biases.
- `GPTBlock`: Megatron-LM's GPT layer with its defaults (megatron/core/transformer, add_bias_linear
  True, activation F.gelu, LayerNorm): LayerNorm, fused QKV projection with bias, multi-head
  attention, output projection with bias; LayerNorm, fc1 (4h) with bias, GeLU, fc2 with bias.
  Position embeddings are added at the embedding (learned absolute), not in the block.
- `LMHead`: the final norm, the output projection to the vocabulary and cross-entropy on FP32
  logits, as torchtitan's train.py loss_fn (`cross_entropy(pred.flatten(0, 1).float(), labels)`).

A block built with `tp` > 1 is one GPU's slice under tensor parallelism (heads, K/V heads and FFN
width divided by tp, the hidden size whole), without the collectives: the compute one GPU runs.
`attention_core` takes the SDPA backend from the caller's `torch.nn.attention.sdpa_kernel` context.

Shape legend (suffixes on tensor names)
    B batch    S positions    D hidden_size    H query heads (this slice)    G K/V heads (this slice)
    K head_dim    F FFN width (this slice)    Y vocabulary (this slice)    T tokens (= B*S)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from real.fp8 import tensorwise_linear


@dataclass(frozen=True)
class DenseShape:
    """One GPU's block: the full hidden size, the heads / K/V heads / FFN width / vocabulary of
    this GPU's tensor-parallel slice (the model's divided by tp)."""

    kind: str            # "llama" (RMSNorm, GQA, RoPE, SwiGLU) | "gpt" (LayerNorm, MHA, GeLU, biases)
    hidden_size: int
    num_heads: int       # query heads of the slice
    num_kv_heads: int    # K/V heads of the slice
    head_dim: int
    ffn: int             # FFN width of the slice (SwiGLU: w1/w3 width; GPT: fc1 width)
    vocab: int           # output projection width of the slice (vocabulary / tp)
    norm_eps: float = 1e-5

    def __post_init__(self):
        if self.kind not in ("llama", "gpt"):
            raise ValueError(f"DenseShape.kind {self.kind!r}: 'llama' or 'gpt'")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"DenseShape: {self.num_heads} heads not a multiple of {self.num_kv_heads} K/V heads")


def slice_of(kind: str, hidden_size: int, num_heads: int, num_kv_heads: int, head_dim: int, ffn: int,
             vocab: int, tp: int) -> DenseShape:
    """One GPU's slice of a model under tensor parallelism tp (K/V heads at least one per GPU, as
    torchtitan and Megatron replicate them when tp exceeds their count)."""
    for name, v in (("num_heads", num_heads), ("ffn", ffn), ("vocab", vocab)):
        if v % tp:
            raise ValueError(f"slice_of: {name} {v} not divisible by tp {tp}")
    return DenseShape(kind, hidden_size, num_heads // tp, max(1, num_kv_heads // tp), head_dim, ffn // tp,
                      vocab // tp)


def _param(*shape: int, std: float = 0.02) -> nn.Parameter:
    return nn.Parameter(torch.randn(*shape) * std)


class RMSNorm(nn.Module):
    """torchtitan's RMSNorm (models/norms.py @ 9dec370): normalised in FP32, cast back, scaled."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x_xD: torch.Tensor) -> torch.Tensor:
        xf = x_xD.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x_xD) * self.weight


def rope_freqs_cis(head_dim: int, seq_len: int, theta: float = 500000.0) -> torch.Tensor:
    """freqs_cis_SK2 (complex, S x K/2) as torchtitan's precompute_freqs_cis (Llama 3 theta 5e5;
    without Llama 3.1's frequency scaling, which changes the values, not the work)."""
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles_SK2 = torch.outer(torch.arange(seq_len).float(), freqs)
    return torch.polar(torch.ones_like(angles_SK2), angles_SK2)


def apply_rope(x_BSHK: torch.Tensor, freqs_cis_SK2: torch.Tensor) -> torch.Tensor:
    """torchtitan's apply_rotary_emb: adjacent pairs as complex numbers, times freqs_cis."""
    x_c = torch.view_as_complex(x_BSHK.float().reshape(*x_BSHK.shape[:-1], -1, 2))
    out = torch.view_as_real(x_c * freqs_cis_SK2[None, :, None, :]).flatten(3)
    return out.type_as(x_BSHK)


def repeat_kv(x_BSGK: torch.Tensor, n_rep: int) -> torch.Tensor:
    """torchtitan's repeat_kv: each K/V head repeated n_rep times (a copy: expand + reshape)."""
    B, S, G, K = x_BSGK.shape
    if n_rep == 1:
        return x_BSGK
    return x_BSGK[:, :, :, None, :].expand(B, S, G, n_rep, K).reshape(B, S, G * n_rep, K)


def attention_core(q_BSHK: torch.Tensor, k_BSGK: torch.Tensor, v_BSGK: torch.Tensor, gqa: str,
                   dropout_p: float = 0.0) -> torch.Tensor:
    """Causal attention of (B, S, heads, K) tensors -> o_BSHK. gqa 'repeat_kv' copies the K/V
    heads first (torchtitan @ 9dec370); 'enable_gqa' lets SDPA broadcast them. dropout_p: dropout
    on the attention probabilities inside the SDPA kernel (Megatron's attention_dropout)."""
    n_rep = q_BSHK.shape[2] // k_BSGK.shape[2]
    if gqa == "repeat_kv":
        k_BSGK, v_BSGK = repeat_kv(k_BSGK, n_rep), repeat_kv(v_BSGK, n_rep)
    elif gqa != "enable_gqa":
        raise ValueError(f"gqa {gqa!r}: 'repeat_kv' or 'enable_gqa'")
    o_BHSK = F.scaled_dot_product_attention(q_BSHK.transpose(1, 2), k_BSGK.transpose(1, 2), v_BSGK.transpose(1, 2),
                                            dropout_p=dropout_p, is_causal=True,
                                            enable_gqa=(gqa == "enable_gqa" and n_rep > 1))
    return o_BHSK.transpose(1, 2)


class LlamaBlock(nn.Module):
    """float8: every linear as torchao's tensorwise Float8Linear (real.fp8.tensorwise_linear), as
    torchtitan's Float8 rows convert every nn.Linear of the blocks (float8.py @ 9dec370)."""

    def __init__(self, shape: DenseShape, gqa: str = "repeat_kv", float8: bool = False):
        super().__init__()
        D, H, G, K, Fw = shape.hidden_size, shape.num_heads, shape.num_kv_heads, shape.head_dim, shape.ffn
        self.shape, self.gqa, self.float8 = shape, gqa, float8
        self.attention_norm, self.ffn_norm = RMSNorm(D, shape.norm_eps), RMSNorm(D, shape.norm_eps)
        self.wq, self.wk, self.wv = _param(H * K, D), _param(G * K, D), _param(G * K, D)
        self.wo = _param(D, H * K)
        self.w1, self.w3, self.w2 = _param(Fw, D), _param(Fw, D), _param(D, Fw)

    def attention(self, x_BSD: torch.Tensor, freqs_cis_SK2: torch.Tensor) -> torch.Tensor:
        B, S, _ = x_BSD.shape
        s = self.shape
        q_BSHK = self.linear(x_BSD, self.wq).view(B, S, s.num_heads, s.head_dim)
        k_BSGK = self.linear(x_BSD, self.wk).view(B, S, s.num_kv_heads, s.head_dim)
        v_BSGK = self.linear(x_BSD, self.wv).view(B, S, s.num_kv_heads, s.head_dim)
        q_BSHK, k_BSGK = apply_rope(q_BSHK, freqs_cis_SK2), apply_rope(k_BSGK, freqs_cis_SK2)
        o_BSHK = attention_core(q_BSHK, k_BSGK, v_BSGK, self.gqa)
        return self.linear(o_BSHK.contiguous().view(B, S, -1), self.wo)

    def feed_forward(self, x_BSD: torch.Tensor) -> torch.Tensor:
        return self.linear(F.silu(self.linear(x_BSD, self.w1)) * self.linear(x_BSD, self.w3), self.w2)

    def linear(self, x_xD: torch.Tensor, w_ND: torch.Tensor) -> torch.Tensor:
        return tensorwise_linear(x_xD, w_ND) if self.float8 else F.linear(x_xD, w_ND)

    def forward(self, x_BSD: torch.Tensor, freqs_cis_SK2: torch.Tensor) -> torch.Tensor:
        h_BSD = x_BSD + self.attention(self.attention_norm(x_BSD), freqs_cis_SK2)
        return h_BSD + self.feed_forward(self.ffn_norm(h_BSD))


class GPTBlock(nn.Module):
    """attention_dropout / hidden_dropout: Megatron's dropout probabilities (its defaults are 0.1
    and 0.1, arguments.py @ core_r0.8.0): the first inside the SDPA kernel on the attention
    probabilities, the second after each of the two output projections (with its bias), before
    the residual add, as Megatron's bias_dropout_add. 0.0 (the default here) runs no dropout."""

    def __init__(self, shape: DenseShape, attention_dropout: float = 0.0, hidden_dropout: float = 0.0):
        super().__init__()
        self.attention_dropout, self.hidden_dropout = attention_dropout, hidden_dropout
        if shape.num_kv_heads != shape.num_heads:
            raise ValueError("GPTBlock: multi-head attention (num_kv_heads == num_heads)")
        D, H, K, Fw = shape.hidden_size, shape.num_heads, shape.head_dim, shape.ffn
        self.shape = shape
        self.input_layernorm = nn.LayerNorm(D, eps=shape.norm_eps)
        self.pre_mlp_layernorm = nn.LayerNorm(D, eps=shape.norm_eps)
        self.w_qkv, self.b_qkv = _param(3 * H * K, D), nn.Parameter(torch.zeros(3 * H * K))
        self.w_proj, self.b_proj = _param(D, H * K), nn.Parameter(torch.zeros(D))
        self.w_fc1, self.b_fc1 = _param(Fw, D), nn.Parameter(torch.zeros(Fw))
        self.w_fc2, self.b_fc2 = _param(D, Fw), nn.Parameter(torch.zeros(D))

    def forward(self, x_BSD: torch.Tensor, freqs_cis_SK2: torch.Tensor | None = None) -> torch.Tensor:
        B, S, _ = x_BSD.shape
        H, K = self.shape.num_heads, self.shape.head_dim
        qkv_BS3HK = F.linear(self.input_layernorm(x_BSD), self.w_qkv, self.b_qkv).view(B, S, 3, H, K)
        q_BSHK, k_BSHK, v_BSHK = qkv_BS3HK.unbind(2)
        o_BSHK = attention_core(q_BSHK, k_BSHK, v_BSHK, "repeat_kv", self._p(self.attention_dropout))
        h_BSD = x_BSD + self._drop(F.linear(o_BSHK.contiguous().view(B, S, H * K), self.w_proj, self.b_proj))
        mlp_BSF = F.gelu(F.linear(self.pre_mlp_layernorm(h_BSD), self.w_fc1, self.b_fc1))
        return h_BSD + self._drop(F.linear(mlp_BSF, self.w_fc2, self.b_fc2))

    def _p(self, p: float) -> float:
        return p if self.training else 0.0

    def _drop(self, x_BSD: torch.Tensor) -> torch.Tensor:
        p = self._p(self.hidden_dropout)
        return F.dropout(x_BSD, p, training=True) if p > 0 else x_BSD


class LMHead(nn.Module):
    """Final norm, output projection and FP32 cross-entropy (torchtitan's Transformer.forward tail
    and train.py loss_fn @ 9dec370)."""

    def __init__(self, shape: DenseShape):
        super().__init__()
        D = shape.hidden_size
        self.norm = RMSNorm(D, shape.norm_eps) if shape.kind == "llama" else nn.LayerNorm(D, eps=shape.norm_eps)
        self.output = _param(shape.vocab, D)

    def forward(self, x_BSD: torch.Tensor, labels_BS: torch.Tensor) -> torch.Tensor:
        logits_BSY = F.linear(self.norm(x_BSD), self.output)
        return F.cross_entropy(logits_BSY.flatten(0, 1).float(), labels_BS.flatten(0, 1))


def build_block(shape: DenseShape, gqa: str = "repeat_kv", attention_dropout: float = 0.0,
                hidden_dropout: float = 0.0, float8: bool = False) -> nn.Module:
    if shape.kind == "llama":
        if attention_dropout or hidden_dropout:
            raise ValueError("build_block: dropout is modelled on the GPT block only")
        return LlamaBlock(shape, gqa, float8)
    if float8:
        raise ValueError("build_block: Float8 linears are modelled on the Llama block only")
    return GPTBlock(shape, attention_dropout, hidden_dropout)

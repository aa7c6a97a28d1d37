"""Parameter, FLOP and byte accounting: the one definition used by the twin and by real/'s MFU.

Conventions
- A GEMM `(m, n, k)` multiplies an (m x k) activation by a (k x n) weight: 2*m*n*k FLOPs.
- Training FLOPs per token follow the usual "6N + attention" count (Kaplan et al. 2020; Narayanan
  et al. 2021): every matmul weight costs 2 FLOPs forward and 4 backward per token; the attention
  score and value products cost 2*(d_qk + d_v) per head per attended key forward, 3x for training.
  With causal masking half the keys are attended. For DeepSeek-V3 at 4K this gives ~250 GFLOP per
  token causal, matching the 250 GFLOP/token of DeepSeek's ISCA'25 paper (Table 2).
- Embedding lookups cost no FLOPs; the output head is a matmul. MTP modules are excluded from the
  MFU basis (as DeepSeek's published MFU is) but simulated as work.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum

from twin.core.specs import ModelSpec

BF16_BYTES = 2
FP8_BYTES = 1
FP32_BYTES = 4
FP8_TILE = 128  # 1x128 activation tiles / 128x128 weight blocks, one FP32 scale each (V3 report §3.3)
# HBM bytes per element of the FP8 cast kernels of DeepSeek's stack (V3 §3.5.2): a 1x128 cast,
# plain or into the transposed 128x1 layout, reads BF16 and writes FP8 plus one FP32 scale per
# tile; re-quantizing a cached FP8 tensor reads and writes FP8 and both tensors' scales.
CAST_BYTES_PER_ELEM = {"cast": BF16_BYTES + FP8_BYTES + FP32_BYTES / FP8_TILE,
                       "cast_transpose": BF16_BYTES + FP8_BYTES + FP32_BYTES / FP8_TILE,
                       "requant_transpose": 2 * (FP8_BYTES + FP32_BYTES / FP8_TILE)}


def gemm_flops(m: int, n: int, k: int) -> float:
    return 2.0 * m * n * k


def gemm_bytes(m: int, n: int, k: int, in_bytes: float, out_bytes: float = BF16_BYTES) -> float:
    """HBM traffic of one GEMM if each operand is read once and the output written once."""
    return (m * k + k * n) * in_bytes + m * n * out_bytes


def attention_pairs(seq_len: int, causal: bool, kv_len: int = 0) -> float:
    """(query, key) pairs one sequence's attention scores: `seq_len` queries over `kv_len` keys
    (0: self-attention, kv_len = seq_len). Causal with kv_len > seq_len: the queries are the last
    seq_len of the kv_len positions (the mask aligned to the bottom right), so each sees every
    earlier key: seq_len x kv_len - seq_len^2 / 2 (a causal square at kv_len = seq_len)."""
    kv = kv_len or seq_len
    return seq_len * kv - (0.5 * seq_len * seq_len if causal else 0.0)


def attention_flops(batch: int, seq_len: int, heads: int, qk_dim: int, v_dim: int, causal: bool,
                    kv_len: int = 0) -> float:
    """Forward FLOPs of the attention core (scores and weighted values): seq_len queries over
    kv_len keys (0: self-attention)."""
    return 2.0 * batch * heads * attention_pairs(seq_len, causal, kv_len) * (qk_dim + v_dim)


def attention_bwd_flops(batch: int, seq_len: int, heads: int, qk_dim: int, v_dim: int, causal: bool,
                        kv_len: int = 0) -> float:
    """Backward of the attention core as flash-attention runs it: the two forward products are
    recomputed-or-reused and four more are added (dQ, dK, dV, dP) -> 2.5x forward."""
    return 2.5 * attention_flops(batch, seq_len, heads, qk_dim, v_dim, causal, kv_len)


# ---------------------------------------------------------------------------------------------
# Parameters


def attention_params(m: ModelSpec) -> int:
    d, h = m.hidden_size, m.num_heads
    if m.attention == "mla":
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        q = d * m.q_lora_rank + m.q_lora_rank + m.q_lora_rank * h * qk if m.q_lora_rank else d * h * qk
        kv = d * (m.kv_lora_rank + m.qk_rope_head_dim) + m.kv_lora_rank + m.kv_lora_rank * h * (m.qk_nope_head_dim + m.v_head_dim)
        return q + kv + h * m.v_head_dim * d
    return d * (h + 2 * m.num_kv_heads) * m.head_dim + h * m.head_dim * d


def ffn_params(d: int, inner: int) -> int:
    """SwiGLU: gate, up and down projections."""
    return 3 * d * inner


def layer_params(m: ModelSpec, dense: bool) -> tuple[int, int]:
    """(total, active per token) parameters of one transformer block, norms included."""
    attn = attention_params(m) + 2 * m.hidden_size
    if dense:
        p = attn + ffn_params(m.hidden_size, m.intermediate_size)
        return p, p
    expert = ffn_params(m.hidden_size, m.moe_intermediate_size)
    router = m.num_routed_experts * m.hidden_size
    total = attn + router + (m.num_routed_experts + m.num_shared_experts) * expert
    active = attn + router + (m.top_k + m.num_shared_experts) * expert
    return total, active


def param_counts(m: ModelSpec) -> dict:
    """Total and activated parameters of the main model and of its MTP modules."""
    dense_t, dense_a = layer_params(m, dense=True) if m.num_dense_layers else (0, 0)
    moe_t, moe_a = layer_params(m, dense=False) if m.is_moe else (0, 0)
    n_moe = m.num_layers - m.num_dense_layers
    embed = m.vocab_size * m.hidden_size
    head = 0 if m.tie_embeddings else embed
    blocks_t = m.num_dense_layers * dense_t + n_moe * moe_t
    blocks_a = m.num_dense_layers * dense_a + n_moe * moe_a
    # an MTP module: two RMSNorms, a 2d->d projection and one block (MoE if the model is MoE)
    mtp_block_t, mtp_block_a = (moe_t, moe_a) if m.is_moe else (dense_t, dense_a)
    mtp_extra = 2 * m.hidden_size + 2 * m.hidden_size * m.hidden_size
    return {
        "total_params": blocks_t + embed + head + m.hidden_size,
        "active_params": blocks_a + embed + head + m.hidden_size,
        "embedding_params": embed,
        "head_params": head,
        "mtp_params": m.num_mtp_modules * (mtp_block_t + mtp_extra),
        "mtp_active_params": m.num_mtp_modules * (mtp_block_a + mtp_extra),
    }


def matmul_params_per_token(m: ModelSpec) -> int:
    """Activated weights that a token multiplies with (no embedding lookup, no norms)."""
    counts = param_counts(m)
    norms = m.num_layers * 2 * m.hidden_size + m.hidden_size
    return counts["active_params"] - counts["embedding_params"] - norms


def attention_flops_per_token(m: ModelSpec, seq_len: int, causal: bool = True) -> float:
    """Forward attention-core FLOPs per token, averaged over a sequence."""
    return m.num_layers * attention_flops(1, seq_len, m.num_heads, m.qk_head_dim, m.attn_v_head_dim, causal) / seq_len


def train_flops_per_token(m: ModelSpec, seq_len: int, causal: bool = True) -> float:
    """Model FLOPs per trained token (the MFU basis): 6 x matmul weights + 3 x attention core."""
    return 6.0 * matmul_params_per_token(m) + 3.0 * attention_flops_per_token(m, seq_len, causal)


def forward_flops_per_token(m: ModelSpec, seq_len: int, causal: bool = True) -> float:
    return 2.0 * matmul_params_per_token(m) + attention_flops_per_token(m, seq_len, causal)


def kv_cache_bytes_per_token(m: ModelSpec, bytes_per_elem: float = BF16_BYTES) -> float:
    """Decode cache per token over all layers: MLA keeps the compressed latent plus the shared
    RoPE key (d_c + d_rope per layer, V2/V3 reports); GQA keeps K and V per KV head."""
    if m.attention == "mla":
        per_layer = m.kv_lora_rank + m.qk_rope_head_dim
    else:
        per_layer = 2 * m.num_kv_heads * m.head_dim
    return m.num_layers * per_layer * bytes_per_elem


# ---------------------------------------------------------------------------------------------
# Per-op shapes of one transformer block on one GPU, for the cost functions and the benchmark


class OpKind(StrEnum):
    """What an Op is, and so which cost function times it: twin.costs.compute for the compute
    kinds, twin.costs.comm for the all-to-alls. A StrEnum: a kind compares and serializes as its
    string ("gemm", ...)."""

    GEMM = "gemm"                   # one GEMM (m, n, k)
    GROUPED_GEMM = "grouped_gemm"   # `groups` GEMMs of m rows each, (n, k): the routed experts
    ATTENTION = "attention"         # the attention core (scores and weighted values), flash-style
    MEMORY = "memory"               # bandwidth-bound elementwise/norm/permute work, `bytes`
    DISPATCH = "dispatch"           # expert-parallel all-to-all to the experts
    COMBINE = "combine"             # expert-parallel all-to-all back to the tokens


GEMM_KINDS = frozenset({OpKind.GEMM, OpKind.GROUPED_GEMM})
ALL_TO_ALL_KINDS = frozenset({OpKind.DISPATCH, OpKind.COMBINE})


@dataclass(frozen=True)
class Op:
    """One kernel-level operation of a block's forward pass on one GPU.

    kind: an OpKind; "dispatch"/"combine" carry `bytes` sent per GPU, split into `nvlink_bytes`
    and `ib_bytes`.
    part: "attn" or "mlp" - DualPipe splits a block into these two compute components.
    recompute: re-run in the backward pass under selective recomputation (V3 §3.3.3).
    bwd_bytes, launches, bwd_launches: a "memory" op's backward bytes (None: 1.5 x `bytes`, the
    saved input and the output gradient read, the input gradient written) and its kernel launches
    forward and backward (eager_ops: torch eager runs an elementwise op as several kernels).
    fp8_input: a GEMM whose input arrives already quantized to FP8 (the routed experts' rows,
    cast before an FP8 dispatch, V3 §3.3.3), so no cast kernel precedes its forward.
    shared_input: a GEMM reading the same input as the GEMM before it (unfused_linear_ops: wk and
    wv after wq, w3 after w1), whose FP8 cast of that input, and transposed copy for the weight
    gradient, are the first one's.
    precision: the precision the op runs in whatever the job's GEMM precision: "bf16" for the
    router (V3 §3.3: the gating network is not in FP8) and the attention core (V3 keeps attention
    in BF16); None = the job's precision.
    """

    name: str
    kind: OpKind
    part: str
    m: int = 0
    n: int = 0
    k: int = 0
    groups: int = 1
    bytes: float = 0.0
    bwd_bytes: float | None = None
    launches: int = 1
    bwd_launches: int = 1
    nvlink_bytes: float = 0.0
    ib_bytes: float = 0.0
    batch: int = 0
    seq_len: int = 0
    heads: int = 0
    qk_dim: int = 0
    v_dim: int = 0
    causal: bool = True
    kv_len: int = 0       # keys each attention sequence attends; 0 = seq_len (self-attention)
    fp8_input: bool = False
    shared_input: bool = False
    recompute: bool = False
    precision: str | None = None
    eager: bool = False   # a "memory" op torch eager runs (eager_ops): Profile.eager_elementwise_eff
    # a memory op, or an FP8 GEMM's cast kernels, inside a torch.compile'd block (compiled_ops; plan.kernels
    # 'fused_blocks'): compute.COMPILED_ELEMENTWISE_RATIO under compute.ADOPT_COMPILED_ELEMENTWISE_EFF
    compiled: bool = False
    dropout: float = 0.0  # an attention core's dropout probability (training): Profile.attention_dropout
    # a GEMM's alignment class (compute.ADOPT_GEMM_ALIGNMENT): 0 = from its widths n and k
    # (twin.costs.gemm_alignment.align_class); 8 = aligned whatever its widths (a stand-in width
    # the run it models does not execute: ModelSpec.ffn_width_stand_in)
    align: int = 0

    def __post_init__(self):
        object.__setattr__(self, "kind", OpKind(self.kind))   # a plain string names its kind; unknown ones raise

    @property
    def flops(self) -> float:
        if self.kind == OpKind.GEMM:
            return gemm_flops(self.m, self.n, self.k)
        if self.kind == OpKind.GROUPED_GEMM:
            return self.groups * gemm_flops(self.m, self.n, self.k)
        if self.kind == OpKind.ATTENTION:
            return attention_flops(self.batch, self.seq_len, self.heads, self.qk_dim, self.v_dim, self.causal,
                                   self.kv_len)
        return 0.0


def _norm(name: str, part: str, tokens: int, width: int, recompute: bool = False) -> Op:
    # RMSNorm reads and writes BF16 activations
    return Op(name, OpKind.MEMORY, part, bytes=2 * tokens * width * BF16_BYTES, recompute=recompute)


def attention_ops(m: ModelSpec, batch: int, seq_len: int, tp: int = 1, causal: bool = True,
                  kv_repeat: bool = False, training: bool = False) -> list[Op]:
    """Attention half of a block on one GPU (heads split over TP ranks). `kv_repeat`: GQA keys and
    values are copied out to every query head before the attention kernel (torchtitan's Llama
    `repeat_kv`, torchtitan/models/llama/model.py @ 9dec370: unsqueeze, expand, reshape): a copy
    reading the K/V heads and writing the query heads' width, its backward the sum back.
    A GQA model with learned absolute positions (m.position_embedding 'learned') runs no RoPE here
    (its positions are added once at the embedding: embedding_ops). `training`: the model's
    dropout runs (m.attention_dropout inside the attention kernel, m.hidden_dropout after o_proj:
    hidden_dropout_op)."""
    t, d = batch * seq_len, m.hidden_size
    h = m.num_heads // tp
    ops = [_norm("attn_norm", "attn", t, d, recompute=True)]
    if m.attention == "mla":
        qk = m.qk_nope_head_dim + m.qk_rope_head_dim
        if m.q_lora_rank:
            ops += [Op("q_down", OpKind.GEMM, "attn", t, m.q_lora_rank, d),
                    _norm("q_norm", "attn", t, m.q_lora_rank, recompute=True),
                    Op("q_up", OpKind.GEMM, "attn", t, h * qk, m.q_lora_rank, recompute=True)]
        else:
            ops.append(Op("q_proj", OpKind.GEMM, "attn", t, h * qk, d))
        ops += [Op("kv_down", OpKind.GEMM, "attn", t, m.kv_lora_rank + m.qk_rope_head_dim, d),
                _norm("kv_norm", "attn", t, m.kv_lora_rank, recompute=True),
                Op("kv_up", OpKind.GEMM, "attn", t, h * (m.qk_nope_head_dim + m.v_head_dim), m.kv_lora_rank, recompute=True),
                Op("rope", OpKind.MEMORY, "attn", bytes=2 * t * h * m.qk_rope_head_dim * BF16_BYTES * 2)]
        qk_dim, v_dim = qk, m.v_head_dim
    else:
        kvh = max(1, m.num_kv_heads // tp)
        ops.append(Op("qkv_proj", OpKind.GEMM, "attn", t, (h + 2 * kvh) * m.head_dim, d))
        if m.position_embedding == "rope":
            ops.append(Op("rope", OpKind.MEMORY, "attn", bytes=2 * t * (h + kvh) * m.head_dim * BF16_BYTES))
        if kv_repeat and kvh < h:   # K and V: read kvh heads, write h heads (backward: the reverse)
            copy = 2 * t * (kvh + h) * m.head_dim * BF16_BYTES
            ops.append(Op("repeat_kv", OpKind.MEMORY, "attn", bytes=copy, bwd_bytes=copy, bwd_launches=2, launches=2))
        qk_dim = v_dim = m.head_dim
    ops += [Op("attn_core", OpKind.ATTENTION, "attn", batch=batch, seq_len=seq_len, heads=h, qk_dim=qk_dim, v_dim=v_dim,
               causal=causal, precision="bf16", dropout=m.attention_dropout if training else 0.0),
            Op("o_proj", OpKind.GEMM, "attn", t, d, h * v_dim),
            *hidden_dropout_ops(m, "attn", t, training),
            Op("residual_add", OpKind.MEMORY, "attn", bytes=3 * t * d * BF16_BYTES)]
    return ops


def hidden_dropout_ops(m: ModelSpec, part: str, tokens: int, training: bool) -> list[Op]:
    """Megatron-LM's hidden dropout after an output projection, fused with the bias and the
    residual add (bias_dropout_add_fused_train, megatron/core/fusions/fused_bias_dropout.py @
    core_r0.8.0): beyond the add's bytes (residual_add) the forward writes a 1-byte keep mask per
    element, the backward reads it and scales the output gradient (2 B read, 2 B written). None
    when not training or m.hidden_dropout is 0. The activation memory of the masks is not charged."""
    if not training or m.hidden_dropout <= 0:
        return []
    elems = tokens * m.hidden_size
    return [Op("hidden_dropout", OpKind.MEMORY, part, bytes=elems * 1.0, bwd_bytes=elems * (1.0 + 2 * BF16_BYTES))]


def dense_ffn_ops(m: ModelSpec, tokens: int, tp: int = 1, training: bool = False) -> list[Op]:
    d, inner = m.hidden_size, m.intermediate_size // tp
    align = 8 if m.ffn_width_stand_in else 0
    return [_norm("ffn_norm", "mlp", tokens, d, recompute=True),
            Op("ffn_gate_up", OpKind.GEMM, "mlp", tokens, 2 * inner, d, align=align),
            Op("swiglu", OpKind.MEMORY, "mlp", bytes=3 * tokens * inner * BF16_BYTES),
            Op("ffn_down", OpKind.GEMM, "mlp", tokens, d, inner, align=align),
            *hidden_dropout_ops(m, "mlp", tokens, training),
            Op("residual_add", OpKind.MEMORY, "mlp", bytes=3 * tokens * d * BF16_BYTES)]


# torch eager's elementwise kernels as torchtitan's Llama code issues them (@ 9dec370), as multiples
# of the fused op's forward bytes above (a norm reads and writes its BF16 row: 4 B per element; RoPE
# likewise; SwiGLU reads two and writes one: 6 B per inner element; the cross-entropy 12 B per
# logit), forward and backward, with their kernel counts. Counted kernel by kernel from the code,
# each tensor read or written once per kernel (BF16 2 B, FP32 4 B per element):
# - RMSNorm (torchtitan/models/norms.py RMSNorm: `(x.float() * rsqrt(x.float().pow(2).mean(-1) +
#   eps)).type_as(x) * weight`): forward float 6, pow 8, mean 4, mul 8, type_as 6, * weight 4 = 36 B
#   per element (9 x 4) in 8 kernels; backward through autograd: * weight 4 and its weight gradient
#   12, to-float 6, mul 8 and its reduction 16, mean 4, pow 28, the sum of the two input gradients
#   12, to-bf16 6 = 96 B (24 x 4) in 14 kernels.
# - RoPE (model.py apply_rotary_emb: view_as_complex(x.float()) * freqs_cis, type_as): float 6,
#   complex mul 8, type_as 6 = 20 B per element (5 x 4) in 3 kernels for each of q and k; the
#   backward the same 20 B.
# - SwiGLU (model.py FeedForward: silu(w1(x)) * w3(x)): silu 4, mul 6 = 10 B per inner element in 2
#   kernels; backward: the two products' gradients 6 + 6, silu_backward 6 = 18 B in 3 kernels.
# - Cross-entropy (train.py loss_fn: cross_entropy(pred.float(), labels)): to-float 6, log_softmax
#   12 = 18 B per logit in 3 kernels (with nll_loss); backward nll 4, log_softmax 16, to-bf16 6 =
#   26 B in 3 kernels.
# Residual adds and the embedding are one kernel either way. torch.compile fuses these chains into
# kernels of the fused byte counts (the default, plan.kernels = "fused").
EAGER_ELEMENTWISE = {   # class -> (forward bytes, backward bytes as multiples of the fused forward; kernels fwd, bwd)
    "norm": (36 / 4, 96 / 4, 8, 14),
    "rope": (20 / 4, 20 / 4, 6, 6),
    "swiglu": (10 / 6, 18 / 6, 2, 3),
    "cross_entropy": (18 / 12, 26 / 12, 3, 3),
}
EAGER_CLASS = {"attn_norm": "norm", "ffn_norm": "norm", "q_norm": "norm", "kv_norm": "norm", "final_norm": "norm",
               "rope": "rope", "swiglu": "swiglu", "shared_swiglu": "swiglu", "experts_swiglu": "swiglu",
               "cross_entropy": "cross_entropy"}


# Megatron-LM's unfused vocab-parallel cross-entropy (megatron/core/tensor_parallel/cross_entropy.py
# @ f2e5db4, the default: --cross-entropy-loss-fusion is off unless set), per logit of the rank's
# vocabulary shard, as a multiple of the fused op's 12 B: forward .float() 6, max 4, in-place
# - max 8, exp 8, sum 4, in-place / sum 8 = 38 B in 6 kernels (and small per-token ones); backward
# the saved softmax scaled in place (mul_) 8 and the gradient cast back to BF16 6 = 14 B in 2.
MEGATRON_CROSS_ENTROPY = (38 / 12, 14 / 12, 6, 2)


def megatron_loss_ops(ops: list[Op]) -> list[Op]:
    """The ops with the cross-entropy as Megatron-LM's unfused vocab-parallel chain
    (plan.loss_kernel = "megatron_unfused"; MEGATRON_CROSS_ENTROPY)."""
    fwd, bwd, k_fwd, k_bwd = MEGATRON_CROSS_ENTROPY
    return [dataclasses.replace(op, bytes=op.bytes * fwd, bwd_bytes=op.bytes * bwd, launches=k_fwd, bwd_launches=k_bwd)
            if op.name == "cross_entropy" and op.kind == OpKind.MEMORY else op for op in ops]


def eager_ops(ops: list[Op]) -> list[Op]:
    """The ops as torch eager runs them (plan.kernels = "eager"): each elementwise chain of
    EAGER_CLASS at its eager bytes and kernel count, every memory op marked `eager` (its kernels
    run at the profile's eager_elementwise_eff); GEMMs and attention unchanged."""
    out = []
    for op in ops:
        cls = EAGER_CLASS.get(op.name) if op.kind == OpKind.MEMORY else None
        if cls is None:   # GEMMs and attention unchanged; residual adds, copies: one eager kernel each
            out.append(dataclasses.replace(op, eager=True) if op.kind == OpKind.MEMORY else op)
            continue
        fwd, bwd, k_fwd, k_bwd = EAGER_ELEMENTWISE[cls]
        out.append(dataclasses.replace(op, bytes=op.bytes * fwd, bwd_bytes=op.bytes * bwd, launches=k_fwd,
                                       bwd_launches=k_bwd, eager=True))
    return out


def compiled_ops(ops: list[Op]) -> list[Op]:
    """The ops of a torch.compile'd block (plan.kernels = "fused_blocks": torchtitan's apply_compile): every
    memory op and GEMM marked `compiled`, so that its elementwise kernels (a GEMM's: its FP8 casts) can be priced
    at the compiled blocks' measured rate (compute.ADOPT_COMPILED_ELEMENTWISE_EFF, docs/notes/s31pub_rule.md);
    bytes, kernel counts and attention unchanged."""
    return [dataclasses.replace(op, compiled=True) if op.kind == OpKind.MEMORY or op.kind in GEMM_KINDS else op
            for op in ops]


def _unfused_linears(op: Op, m: ModelSpec, tp: int) -> list[Op]:
    """A GEMM op as the separate linears an unfused PyTorch model issues (torchtitan's Llama:
    wq, wk, wv for qkv_proj; w1, w3 for ffn_gate_up and shared_gate_up), in forward order."""
    if op.name == "qkv_proj":
        h, kvh = m.num_heads // tp, max(1, m.num_kv_heads // tp)
        return [dataclasses.replace(op, n=w * m.head_dim) for w in (h, kvh, kvh)]
    if op.name in ("ffn_gate_up", "shared_gate_up"):
        return [dataclasses.replace(op, n=op.n // 2)] * 2
    return [op]


# the fused GEMMs unfused_linear_ops splits, and the names of the linears they become
UNFUSED_NAMES = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "ffn_gate_up": ("ffn_gate", "ffn_up")}


def unfused_linear_ops(ops: list[Op], m: ModelSpec, tp: int, eager: bool) -> list[Op]:
    """The block's ops with the fused QKV and gate/up GEMMs as the separate linears an unfused
    PyTorch model issues (plan.unfused_linears; torchtitan's Llama, models/llama/model.py @
    9dec370: wq, wk, wv and w1, w3 are separate nn.Linear on the same input). Each linear is its
    own GEMM kernel reading the whole input (on a TP rank wk and wv are 128 columns wide per
    K/V head); the input's FP8 cast is shared (`shared_input`). In the backward the linears'
    input gradients, each tokens x d, are summed before they leave the part (`*_dgrad_sum`, no
    forward work): torch.compile (`eager` False) adds them in one fused kernel (read n, write 1),
    torch eager's autograd accumulates them pairwise (n - 1 adds, each reading 2 and writing 1)."""
    out = []
    for op in ops:
        names = UNFUSED_NAMES.get(op.name) if op.kind == OpKind.GEMM else None
        if names is None:
            out.append(op)
            continue
        linears = _unfused_linears(op, m, tp)
        out += [dataclasses.replace(lin, name=name, shared_input=i > 0) for i, (name, lin) in enumerate(zip(names, linears))]
        n, grad_bytes = len(linears), op.m * op.k * BF16_BYTES
        out.append(Op(f"{op.name.removesuffix('_proj')}_dgrad_sum", OpKind.MEMORY, op.part, bytes=0.0, launches=0,
                      bwd_bytes=(n - 1) * 3 * grad_bytes if eager else (n + 1) * grad_bytes,
                      bwd_launches=n - 1 if eager else 1))
    return out


def op_sac_recompute(ops: list[Op], m: ModelSpec, tp: int) -> list[tuple[Op, Op]]:
    """What torchtitan's per-op selective activation checkpointing (activation_checkpoint.mode
    'selective', selective_ac_option 'op') recomputes in the backward of one block, as
    (op of the block, the part of it recomputed) pairs. The policy (torchtitan
    torchtitan/parallelisms/parallelize_llama.py @ 9dec370, `_save_list` and `_custom_policy`, one
    checkpoint region per TransformerBlock) saves the outputs of aten.mm, the SDPA attention
    kernels, reduce-scatter and abs/max, except every second aten.mm of the region, and
    recomputes every other op. So: the attention core is kept; elementwise ops (norms, RoPE,
    SwiGLU, residual adds) are recomputed; of the linears, counted in forward order as the
    unfused model issues them, the 2nd, 4th, ... are recomputed, FP8 ones as BF16 ones: torchao's
    Float8Linear (torchao/float8/float8_linear.py @ eab345c, Dec 2024,
    manual_float8_matmul_with_args_in_float8.forward) calls torch.mm on its Float8Tensor operands,
    and the checkpoint's dispatch mode (torch.utils.checkpoint _CachingTorchDispatchMode) sees that
    aten.mm before the subclass's __torch_dispatch__ turns it into torch._scaled_mm, which runs with
    the mode off (a mode precedes a subclass; benchmarks/sac_policy_ops.py shows the policy seeing
    aten.mm on a wrapper subclass and never the op inside). The saved output is the BF16 result.
    Grouped GEMMs are all recomputed."""
    out, mm_count = [], 0
    for op in ops:
        if op.kind == OpKind.MEMORY:
            out.append((op, op))
        elif op.kind == OpKind.GROUPED_GEMM:
            out.append((op, op))
        elif op.kind == OpKind.GEMM:
            parts = []
            for lin in _unfused_linears(op, m, tp):
                mm_count += 1
                if mm_count % 2 == 0:
                    parts.append(lin)
            if parts:
                out.append((op, dataclasses.replace(op, n=sum(p.n for p in parts))))
    return out


def ep_nodes(ep: int, gpus_per_node: int) -> int:
    return max(1, -(-ep // gpus_per_node))


def expected_nodes_per_token(top_k: int, num_nodes: int, max_nodes: int) -> float:
    """Distinct nodes a token's top-k experts land on, under uniform routing, capped by
    node-limited routing (V3 §3.2.2: each token goes to at most M nodes)."""
    if num_nodes <= 1:
        return 1.0
    uniform = num_nodes * (1.0 - (1.0 - 1.0 / num_nodes) ** top_k)
    return min(float(max_nodes), uniform)


@dataclass(frozen=True)
class ExpertLoad:
    """Per-rank expert load of one MoE layer, as ratios to balanced routing (1 = balanced).

    rows_frac: routed rows received by the most loaded EP rank over the mean (the straggler).
    gemm_rows_frac: rows its grouped expert GEMMs process over the mean (rows_frac plus any tile
        padding of uneven groups; see twin/moe/validate.py).
    ib_frac: IB bytes of the rank with the most IB traffic (max of sent and received) over the
        balanced figure.
    nodes_per_token: distinct nodes a token's experts span (None = uniform routing's closed form).
    Built by twin.moe.placement from a load model; a bare float r means ExpertLoad(r, r, r).
    """

    rows_frac: float = 1.0
    gemm_rows_frac: float = 1.0
    ib_frac: float = 1.0
    nodes_per_token: float | None = None

    @classmethod
    def of(cls, load: "float | ExpertLoad") -> "ExpertLoad":
        return load if isinstance(load, ExpertLoad) else cls(float(load), float(load), float(load))


def router_op(m: ModelSpec, tokens: int) -> Op:
    """The gating GEMM: `tokens` tokens scored against every routed expert, in BF16 whatever the
    job's GEMM precision (V3 §3.3: the gating network is not in FP8)."""
    return Op("router", OpKind.GEMM, "mlp", tokens, m.num_routed_experts, m.hidden_size, precision="bf16")


def moe_ops(m: ModelSpec, tokens: int, ep: int, gpus_per_node: int, max_nodes_per_token: int,
            routing_imbalance: "float | ExpertLoad" = 1.0, dispatch_bytes_per_elem: float = FP8_BYTES) -> list[Op]:
    """MoE half of a block on one GPU of an EP group: router, dispatch, shared and routed
    experts (grouped GEMMs over the local experts), combine.

    Each GPU sends `tokens * top_k` expert rows; balanced routing gives each GPU as many rows back.
    `routing_imbalance` is either a max-over-mean ratio (scales the most loaded GPU's rows and IB
    bytes alike) or an ExpertLoad with per-rank figures from a load model and placement
    (twin.moe.placement). Dispatch sends a token once per node its experts span over RDMA (DeepEP
    forwards within the node over NVLink).
    """
    load = ExpertLoad.of(routing_imbalance)
    d, e_inner = m.hidden_size, m.moe_intermediate_size
    local_experts = m.num_routed_experts // ep
    rows = tokens * m.top_k * load.rows_frac
    rows_per_expert = max(1, round(tokens * m.top_k * load.gemm_rows_frac / local_experts))
    nodes = ep_nodes(ep, gpus_per_node)
    nodes_per_token = (expected_nodes_per_token(m.top_k, nodes, max_nodes_per_token)
                       if load.nodes_per_token is None else min(float(max_nodes_per_token), load.nodes_per_token))
    # RDMA: DeepEP's internode kernels send a token once to each node its experts span, and its
    # published rates are "logical bandwidth" over all such pairs, the sender's own node included
    # (tests/test_internode.py `num_rdma_token_sent`; the current README says so). With the V3-era
    # kernels (README @ebfe47e) node-local pairs cost the same time: EP16, half of whose pairs are
    # node-local, runs at 43 GB/s against EP64's 46. The catalog's achieved rate applies to these bytes.
    rdma_nodes = nodes_per_token if nodes > 1 else 0.0
    gpus_in_node = min(ep, gpus_per_node)
    scale_bytes = FP32_BYTES / FP8_TILE if dispatch_bytes_per_elem == FP8_BYTES else 0.0
    row_bytes = d * (dispatch_bytes_per_elem + scale_bytes)
    # NVLink: rows for other GPUs of this node plus forwarding of rows that arrived over RDMA to
    # their target GPU in the destination node.
    ib = tokens * rdma_nodes * row_bytes
    nvl = rows * row_bytes * (gpus_in_node - 1) / gpus_in_node
    comb_row = d * BF16_BYTES
    ops = [_norm("ffn_norm", "mlp", tokens, d, recompute=True),
           router_op(m, tokens),
           Op("router_topk", OpKind.MEMORY, "mlp", bytes=tokens * m.num_routed_experts * FP32_BYTES * 3)]
    if scale_bytes and ep > 1:   # an FP8 dispatch sends tokens cast to FP8 first (V3 §3.3.3; read BF16, write FP8 + scales)
        ops += [Op("dispatch_cast", OpKind.MEMORY, "mlp", bytes=tokens * d * CAST_BYTES_PER_ELEM["cast"])]
    ops += [Op("dispatch", OpKind.DISPATCH, "mlp", bytes=ib + nvl, ib_bytes=ib * load.ib_frac, nvlink_bytes=nvl)]
    if m.num_shared_experts:
        s_inner = m.num_shared_experts * e_inner
        ops += [Op("shared_gate_up", OpKind.GEMM, "mlp", tokens, 2 * s_inner, d),
                Op("shared_swiglu", OpKind.MEMORY, "mlp", bytes=3 * tokens * s_inner * BF16_BYTES),
                Op("shared_down", OpKind.GEMM, "mlp", tokens, d, s_inner)]
    ops += [Op("permute", OpKind.MEMORY, "mlp", bytes=2 * rows * d * BF16_BYTES),
            Op("experts_gate_up", OpKind.GROUPED_GEMM, "mlp", rows_per_expert, 2 * e_inner, d, groups=local_experts,
               fp8_input=dispatch_bytes_per_elem == FP8_BYTES),
            Op("experts_swiglu", OpKind.MEMORY, "mlp", bytes=3 * rows * e_inner * BF16_BYTES),
            Op("experts_down", OpKind.GROUPED_GEMM, "mlp", rows_per_expert, d, e_inner, groups=local_experts),
            Op("unpermute", OpKind.MEMORY, "mlp", bytes=2 * rows * d * BF16_BYTES),
            Op("combine", OpKind.COMBINE, "mlp", bytes=(ib / row_bytes + nvl / row_bytes) * comb_row,
               ib_bytes=ib / row_bytes * comb_row * load.ib_frac, nvlink_bytes=nvl / row_bytes * comb_row),
            Op("residual_add", OpKind.MEMORY, "mlp", bytes=3 * tokens * d * BF16_BYTES)]
    return ops


def head_ops(m: ModelSpec, tokens: int, tp: int = 1, head_precision: str | None = None) -> list[Op]:
    """Final norm, output head and the cross-entropy (softmax over the vocabulary).
    `head_precision` pins the output projection's GEMM (None: the job's precision)."""
    v = m.vocab_size // tp
    return [_norm("final_norm", "mlp", tokens, m.hidden_size),
            Op("lm_head", OpKind.GEMM, "mlp", tokens, v, m.hidden_size, precision=head_precision),
            Op("cross_entropy", OpKind.MEMORY, "mlp", bytes=3 * tokens * v * FP32_BYTES)]


def embedding_ops(m: ModelSpec, tokens: int) -> list[Op]:
    """The token embedding lookup; with learned absolute positions (m.position_embedding 'learned',
    Megatron-LM's LanguageModelEmbedding) the position table's rows looked up and added: one add
    reading two BF16 rows and writing one per token."""
    ops = [Op("embedding", OpKind.MEMORY, "attn", bytes=2 * tokens * m.hidden_size * BF16_BYTES)]
    if m.position_embedding == "learned":
        ops.append(Op("position_embedding", OpKind.MEMORY, "attn", bytes=3 * tokens * m.hidden_size * BF16_BYTES))
    return ops

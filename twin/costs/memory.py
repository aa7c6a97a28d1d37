"""Memory per GPU: parameters, gradients, optimizer state, activations, communication buffers.

Pure functions of (model, plan, layers held by a rank, in-flight activation count). Byte widths:
BF16 weights for compute, FP32 gradients (V3 §3.3.3 keeps gradients for accumulation in FP32),
optimizer state per `plan.optimizer_bytes_per_param` (FP32 master + two FP32 Adam moments = 12;
V3 keeps the moments in BF16 -> 8). ZeRO shards optimizer state (stage >= 1), gradients (>= 2)
and parameters (3) over the data-parallel replicas of each parameter: dp for dense parameters,
dp * tp / ep for routed experts.
"""

from __future__ import annotations

from dataclasses import dataclass

from twin.costs.flops import BF16_BYTES, FP8_BYTES, FP32_BYTES, attention_params, ffn_params
from twin.specs import ModelSpec, ParallelPlan

WEIGHT_BYTES = BF16_BYTES
GRAD_BYTES = FP32_BYTES


@dataclass(frozen=True)
class RankParams:
    """Parameters held by one GPU, split by how they are replicated."""

    dense: float    # replicated over dp (attention, dense FFN, shared experts, router, embeddings)
    expert: float   # routed experts, replicated over dp * tp / ep

    @property
    def total(self) -> float:
        return self.dense + self.expert


def block_params_on_gpu(m: ModelSpec, dense_layer: bool, tp: int, ep: int) -> RankParams:
    attn = attention_params(m) / tp + 2 * m.hidden_size
    if dense_layer:
        return RankParams(attn + ffn_params(m.hidden_size, m.intermediate_size) / tp, 0.0)
    expert = ffn_params(m.hidden_size, m.moe_intermediate_size)
    dense = attn + m.num_routed_experts * m.hidden_size + m.num_shared_experts * expert
    return RankParams(dense, m.num_routed_experts * expert / ep)


def activation_bytes_per_token(m: ModelSpec, dense_layer: bool, plan: ParallelPlan) -> float:
    """Bytes one token leaves behind in one block for its backward pass.

    'selective' follows V3 §3.3.3: RMSNorms and MLA up-projections are recomputed, so only the
    block input and the compressed latents are kept for attention; with FP8 the inputs of MoE
    up-projections and SwiGLU are cached in FP8 and the SwiGLU output is recomputed. The combine's
    expert outputs are assumed recomputed (the report does not say). 'full' keeps only the block
    input; 'none' keeps every intermediate in BF16.
    """
    d, tp = m.hidden_size, plan.tp
    if plan.recompute == "full":
        return d * BF16_BYTES
    keep_all = plan.recompute == "none"
    fp8 = plan.gemm_precision == "fp8"
    h = m.num_heads // tp
    act = d * BF16_BYTES  # block input
    if m.attention == "mla":
        act += (m.q_lora_rank + m.kv_lora_rank + m.qk_rope_head_dim) * BF16_BYTES
        if keep_all:
            act += (d + m.q_lora_rank + m.kv_lora_rank) * BF16_BYTES                      # norm outputs
            act += h * (2 * (m.qk_nope_head_dim + m.qk_rope_head_dim) + m.v_head_dim) * BF16_BYTES  # q, k, v
    else:
        kvh = max(1, m.num_kv_heads // tp)
        act += (h + 2 * kvh) * m.head_dim * BF16_BYTES + (d * BF16_BYTES if keep_all else 0)
    act += h * m.attn_v_head_dim * BF16_BYTES + h * FP32_BYTES   # attention output and softmax stats
    act += d * BF16_BYTES                                          # FFN input (residual stream)
    lin = FP8_BYTES if fp8 else BF16_BYTES
    if keep_all:
        act += d * BF16_BYTES
    if dense_layer:
        inner = m.intermediate_size / tp
        act += d * lin + 2 * inner * lin + (0 if fp8 else inner * BF16_BYTES)
        return act
    e = m.moe_intermediate_size
    rows = m.top_k + m.num_shared_experts
    act += m.num_routed_experts * FP32_BYTES                       # router scores
    act += rows * (d * lin + 2 * e * lin + (0 if fp8 else e * BF16_BYTES))
    return act


def optimizer_shards(zero_stage: int, stage_min: int, replicas: float) -> float:
    return replicas if zero_stage >= stage_min else 1.0


def memory_breakdown(params: RankParams, activation_bytes: float, comm_buffer_bytes: float,
                     plan: ParallelPlan, dp: int) -> dict:
    """Bytes per GPU by component."""
    expert_replicas = max(1.0, dp * plan.tp / plan.ep)
    def sharded(bytes_per_param: float, stage_min: int) -> float:
        return bytes_per_param * (params.dense / optimizer_shards(plan.zero_stage, stage_min, dp)
                                  + params.expert / optimizer_shards(plan.zero_stage, stage_min, expert_replicas))
    return {
        "weights": sharded(WEIGHT_BYTES, 3),
        "gradients": sharded(GRAD_BYTES, 2),
        "optimizer": sharded(plan.optimizer_bytes_per_param, 1),
        "activations": activation_bytes,
        "comm_buffers": comm_buffer_bytes,
    }

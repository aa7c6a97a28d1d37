"""Memory per GPU: parameters, gradients, optimizer state, activations, communication buffers.

Pure functions of (model, plan, layers held by a rank, in-flight activation count). Byte widths:
BF16 weights for compute, FP32 gradients (V3 §3.3.3 keeps gradients for accumulation in FP32),
optimizer state per `plan.optimizer_bytes_per_param` (FP32 master + two FP32 Adam moments = 12;
V3 keeps the moments in BF16 -> 8). ZeRO shards optimizer state (stage >= 1), gradients (>= 2;
ZeRO-2 under pipeline parallelism accumulates them unsharded: gradients_sharded) and parameters (3) over the data-parallel replicas of each parameter: dp for dense parameters,
dp * tp / ep for routed experts.

Serving (the second half): weights as served (FP8 with 128x128 block scales, BF16 embeddings, head,
norms and router, the MTP module when the model has one), the KV cache (paged in 64-token blocks;
MLA's latent is replicated over TP ranks), activations and logits of one step, and a runtime
reserve. A deployment that does not fit raises InfeasiblePlan with the breakdown.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from twin.core.errors import InfeasiblePlan
from twin.core.serve_specs import ServeSpec
from twin.core.specs import GPUSpec, ModelSpec, ParallelPlan, serving_tables
from twin.core.units import GIB
from twin.costs.flops import (BF16_BYTES, FP8_BYTES, FP8_TILE, FP32_BYTES, Op, OpKind, attention_ops, attention_params,
                              dense_ffn_ops, ffn_params, kv_cache_bytes_per_token, op_sac_recompute, param_counts)

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
    """Bytes one token leaves behind in one block for its backward pass, on one GPU that holds
    every token of its micro-batch shard (tp = 1). `activation_bytes` splits them over TP ranks."""
    return sum(_activation_parts(m, dense_layer, plan).values())


def _activation_parts(m: ModelSpec, dense_layer: bool, plan: ParallelPlan) -> dict[str, float]:
    """Per-token bytes of one block by how they split over tensor-parallel ranks:
    'hidden' (width d: block and FFN inputs, norm outputs): split only with sequence parallelism
        (or in an MoE block, whose tokens are shared out over the TP ranks for the experts);
    'heads' (per attention head, dense FFN inner width): already per TP rank;
    'latent' (MLA's compressed latents, from replicated down-projections): on every TP rank;
    'routed' (router scores, expert rows): per token share of the MoE, split over TP.

    'selective' follows V3 §3.3.3: RMSNorms and MLA up-projections are recomputed, so only the
    block input and the compressed latents are kept for attention; with FP8 the inputs of MoE
    up-projections and SwiGLU are cached in FP8 and the SwiGLU output is recomputed. The combine's
    expert outputs are assumed recomputed (the report does not say). 'full' keeps only the block
    input; 'none' keeps every intermediate in BF16. 'megatron_selective' (Megatron-LM's selective
    recomputation of the core attention) keeps what 'none' keeps but the attention kernel's softmax
    statistics: its inputs (q, k, v) and its output (the output projection's input) stay saved.
    """
    d, tp = m.hidden_size, plan.tp
    parts = {"hidden": d * BF16_BYTES, "heads": 0.0, "latent": 0.0, "routed": 0.0}   # block input
    if plan.recompute == "full":
        return parts
    if plan.recompute == "selective_op":
        return _op_sac_parts(m, dense_layer, plan, parts)
    keep_all = plan.recompute in ("none", "megatron_selective")
    fp8 = plan.gemm_precision == "fp8"
    h = m.num_heads // tp
    if m.attention == "mla":
        parts["latent"] += (m.q_lora_rank + m.kv_lora_rank + m.qk_rope_head_dim) * BF16_BYTES
        if keep_all:
            parts["hidden"] += d * BF16_BYTES                                              # attention norm output
            parts["latent"] += (m.q_lora_rank + m.kv_lora_rank) * BF16_BYTES               # latent norm outputs
            parts["heads"] += h * (2 * (m.qk_nope_head_dim + m.qk_rope_head_dim) + m.v_head_dim) * BF16_BYTES  # q, k, v
    else:
        kvh = max(1, m.num_kv_heads // tp)
        parts["heads"] += (h + 2 * kvh) * m.head_dim * BF16_BYTES
        parts["hidden"] += d * BF16_BYTES if keep_all else 0
    parts["heads"] += h * m.attn_v_head_dim * BF16_BYTES                    # attention output
    if plan.recompute != "megatron_selective":
        parts["heads"] += h * FP32_BYTES                                     # softmax stats (recomputed there)
    parts["hidden"] += d * BF16_BYTES                                       # FFN input (residual stream)
    lin = FP8_BYTES if fp8 else BF16_BYTES
    if dense_layer:
        inner = m.intermediate_size / tp
        # the FFN norm's output is the up-projection's input: one tensor, counted once (Korthikanti
        # et al. 2022 count four hidden-width tensors a block: two norm inputs, two linear inputs);
        # in FP8 the GEMM keeps its FP8 copy and the norm's backward needs only its input
        parts["hidden"] += d * lin                                           # FFN up-projection input
        parts["heads"] += 2 * inner * lin + (0 if fp8 else inner * BF16_BYTES)
        return parts
    if keep_all:
        parts["hidden"] += d * BF16_BYTES                                    # FFN norm output: router and dispatch input
    e = m.moe_intermediate_size
    rows = m.top_k + m.num_shared_experts
    parts["routed"] += m.num_routed_experts * FP32_BYTES                      # router scores
    parts["routed"] += rows * (d * lin + 2 * e * lin + (0 if fp8 else e * BF16_BYTES))
    return parts


# Adopted (docs/notes/s28tt_rule.md: C1 and C2 hold, campaign s28tt, one H200, calibration/s28tt_judgement.json:
# four compiled 8B blocks keep 55,424.06 B a token a block against 55,424 counted, eager 63,616.06 against 63,616):
# under torch.compile
# of each block (plan.kernels 'fused_blocks', torchtitan's apply_compile after apply_ac) per-op SAC keeps only
# what the backward reads. Eager SAC's dispatch mode
# (torch.utils.checkpoint _CachingTorchDispatchMode) stores every MUST_SAVE op's output whether or not the
# backward needs it; a compiled block's SAC is applied by AOT autograd's partitioner to the joint graph, which
# saves only tensors the backward graph reads (CPU trace, torch 2.13, aot_eager / min-cut / inductor alike:
# the FFN down projection's output is not saved). The linears whose output goes only into the residual add
# (whose backward reads neither operand) keep nothing.
ADOPT_COMPILED_SAC_NEEDED_ONLY = True
RESIDUAL_ONLY_GEMMS = ("o_proj", "ffn_down", "shared_down")


def _op_sac_parts(m: ModelSpec, dense_layer: bool, plan: ParallelPlan, parts: dict) -> dict:
    """plan.recompute 'selective_op' (torchtitan's per-op policy, flops.op_sac_recompute): the
    block input, the attention output and its softmax statistics, and the BF16 outputs of the
    linears the policy saves (per TP rank; the replicated router's on every rank). An MoE block's
    routed experts are grouped GEMMs, all recomputed; its router and shared experts count as
    linears. Under ADOPT_COMPILED_SAC_NEEDED_ONLY a compiled block ('fused_blocks') keeps nothing of the linears
    whose output only the residual add reads (RESIDUAL_ONLY_GEMMS)."""
    needed_only = ADOPT_COMPILED_SAC_NEEDED_ONLY and plan.kernels == "fused_blocks"
    tp = plan.tp
    ops = attention_ops(m, 1, 1, tp)
    if dense_layer:
        ops += dense_ffn_ops(m, 1, tp)
    else:
        ops.append(Op("router", OpKind.GEMM, "mlp", 1, m.num_routed_experts, m.hidden_size, precision="bf16"))
        if m.num_shared_experts:
            s_inner = m.num_shared_experts * m.moe_intermediate_size // tp
            ops += [Op("shared_gate_up", OpKind.GEMM, "mlp", 1, 2 * s_inner, m.hidden_size),
                    Op("shared_down", OpKind.GEMM, "mlp", 1, m.hidden_size, s_inner)]
    again = {id(op): r.n for op, r in op_sac_recompute(ops, m, tp) if op.kind == OpKind.GEMM}
    for op in ops:
        if op.kind == OpKind.GEMM:
            kept = 0.0 if needed_only and op.name in RESIDUAL_ONLY_GEMMS else (op.n - again.get(id(op), 0)) * BF16_BYTES
            parts["latent" if op.name == "router" else "heads"] += kept
        elif op.kind == OpKind.ATTENTION:
            parts["heads"] += op.heads * op.v_dim * BF16_BYTES + op.heads * FP32_BYTES
    return parts


def activation_bytes(m: ModelSpec, dense_layer: bool, plan: ParallelPlan, tokens: float) -> float:
    """Bytes one block keeps for the backward of `tokens` tokens (a micro-batch's share on one
    context-parallel rank: micro_batch_seqs x seq_len / cp), on one TP rank. Hidden-width parts
    split over TP ranks with sequence parallelism (Korthikanti et al. 2022, "Reducing Activation
    Recomputation in Large Transformer Models": sbh(10 + 24/t) -> sbh(34/t)) and in MoE blocks
    (their tokens are shared out over the TP ranks); per-head parts are per rank already; MLA's
    latents are on every rank. With tp = 1 every part counts whole."""
    tp = plan.tp
    parts = _activation_parts(m, dense_layer, plan)
    hidden_split = tp if (plan.sequence_parallel or not dense_layer) else 1
    return tokens * (parts["hidden"] / hidden_split + parts["heads"] + parts["latent"] + parts["routed"] / tp)


def recompute_working_bytes(m: ModelSpec, dense_layer: bool, plan: ParallelPlan, tokens: float) -> float:
    """Bytes a block's backward re-creates when it recomputes its forward (any plan.recompute but
    'none'): what 'none' keeps less what the plan keeps, for `tokens` tokens on one TP rank. They
    live beside every saved activation from the recomputation until the block's backward ends
    (torch.utils.checkpoint, Megatron's and DeepSeek's recomputation alike), one block at a time."""
    if plan.recompute == "none":
        return 0.0
    return activation_bytes(m, dense_layer, replace(plan, recompute="none"), tokens) - activation_bytes(m, dense_layer, plan, tokens)


def kv_exchange_bytes_per_token(m: ModelSpec, tp: int, kv_repeat: bool = False) -> float:
    """Key and value bytes per token that context-parallel attention exchanges, on one TP rank:
    GQA's K and V heads (every query head's, where the model repeats them before the attention
    kernel: plan.kv_repeat); MLA's per-head keys (with the shared RoPE part) and values after the
    up-projection, as Megatron/TransformerEngine's context parallelism passes them (BF16)."""
    if m.attention == "mla":
        h = m.num_heads // tp
        return h * (m.qk_nope_head_dim + m.qk_rope_head_dim + m.v_head_dim) * BF16_BYTES
    heads = m.num_heads // tp if kv_repeat else max(1, m.num_kv_heads // tp)
    return 2 * heads * m.head_dim * BF16_BYTES


# The cross-entropy's working set: bytes per logit of the rank's vocabulary shard alive at the loss's
# peak, on top of the step's saved activations (at the start of the backward every one is alive), by
# how the loss runs:
# - torch eager (torchtitan train.py loss_fn @ 9dec370: cross_entropy(pred.flatten(0, 1).float(),
#   labels), left outside the compiled blocks: plan.kernels "eager" or "fused_blocks"): at
#   log_softmax's backward its saved FP32 output, nll_loss's dense FP32 input gradient and
#   log_softmax's own FP32 input gradient, 4 + 4 + 4 = 12 (the forward holds fewer: the BF16 logits,
#   their FP32 copy and log_softmax's output, 2 + 4 + 4; train.py frees the logits before the
#   backward, `del pred`);
# - torch's loss parallel (torch/distributed/tensor/parallel/loss.py, which torchtitan enters whenever
#   TP > 1: train.py get_train_context, parallel_dims.loss_parallel_enabled @ 9dec370): its forward
#   (_log_softmax, the decomposition with all-reduces) holds the BF16 logits, their FP32 copy, the FP32
#   `shifted` and `exp(shifted)`, 2 + 4 + 4 + 4 = 14; its backward (_nll_loss_and_log_softmax_backward,
#   nll_loss and log_softmax fused) computes `(grad_input + torch.exp(x)) * grad_output` with
#   log_softmax's saved FP32 output x and the FP32 grad_input alive: x, grad_input, exp(x) and their
#   sum, then the sum and the product, 4 x 4 = 16;
# - Megatron-LM's unfused vocab-parallel cross-entropy (megatron/core/tensor_parallel/cross_entropy.py
#   @ f2e5db4, plan.loss_kernel "megatron_unfused"): the forward's FP32 copy, turned in place into the
#   saved softmax, beside the BF16 logits (2 + 4); the backward turns the softmax in place into the
#   gradient and autograd casts it to BF16 (4 + 2): 6.
# A fused loss kernel (the default, DeepSeek's) is not counted: its working set is not published.
LOSS_BYTES_PER_LOGIT = {"torch_eager": 12.0, "torch_loss_parallel": 16.0, "megatron_unfused": 6.0}


def loss_kind(plan: ParallelPlan) -> str | None:
    """How a plan's cross-entropy runs, for its memory (LOSS_BYTES_PER_LOGIT), as the step costs it:
    torch's eager loss under loss parallel wherever the logits are split over TP ranks."""
    if plan.loss_kernel == "megatron_unfused":
        return "megatron_unfused"
    if plan.kernels not in ("eager", "fused_blocks"):
        return None
    return "torch_loss_parallel" if plan.tp > 1 else "torch_eager"


def loss_working_bytes(m: ModelSpec, plan: ParallelPlan, tokens: float) -> float:
    """Bytes the cross-entropy of one micro-batch (`tokens` on this rank) holds at its peak, on one
    TP rank (the logits split over the vocabulary: loss parallel); 0 for a fused loss."""
    kind = loss_kind(plan)
    return 0.0 if kind is None else tokens * m.vocab_size / plan.tp * LOSS_BYTES_PER_LOGIT[kind]


def optimizer_shards(zero_stage: int, stage_min: int, replicas: float) -> float:
    return replicas if zero_stage >= stage_min else 1.0


def gradients_sharded(plan: ParallelPlan) -> bool:
    """Whether a rank's gradients are held sharded through the step. ZeRO-2 shards them only by
    reduce-scattering every micro-batch's gradients, as its sources do without pipeline parallelism
    (DeepSpeed's ZeRO-2 reduces each backward's gradients into the rank's partition; torch FSDP2
    reduce-scatters after every backward unless gradient sync is turned off, and torchtitan's
    gradient accumulation leaves it on: trainer.py train_step). Under pipeline parallelism
    torch.distributed.pipelining turns gradient sync off for every backward but a stage's last
    (stage.py backward_maybe_with_nosync, PyTorch #134052), so FSDP2 accumulates each stage's
    gradients unsharded, in FP32 with torchtitan's reduce dtype, until one reduce-scatter; DeepSpeed
    refuses ZeRO-2 with its pipeline engine (runtime/pipe/engine.py PipelineEngine.__init__ asserts
    zero stage < 2). ZeRO-3 holds them sharded (its unsharded FP32 accumulation under PP is counted
    with the gathered stage: fsdp_working_set_bytes). plan.pp_grad_sync 'every_backward' keeps
    ZeRO-2's sync on every backward under pipeline parallelism too (the Llama 3 paper's FSDP "shards
    optimizer states and gradients"): sharded, the gradients waiting for their reduce-scatter
    counted apart (twin.training.step.grad_sync_queue)."""
    return plan.zero_stage >= 3 or (plan.zero_stage == 2 and (plan.pp == 1 or plan.pp_grad_sync == "every_backward"))


# torch FSDP keeps each parameter's shard in FP32 only: FSDP2 (torch/distributed/fsdp/_fully_shard/
# _fsdp_param.py) holds `_sharded_param_data` in the parameter's own dtype and, under a
# MixedPrecisionPolicy, casts it into the all-gather's input each time (all_gather_inputs:
# `_to_dtype_if_needed(sharded_param_data, param_dtype)`); FSDP1 frees its low-precision shard after
# each all-gather. The FP32 shard is the optimizer's master (optimizer_bytes_per_param), so ZeRO-3 ("FSDP")
# holds no BF16 shard beside it when this is on (docs/notes/s27mlm2_rule.md, candidate A). The step's time
# is not re-costed: the fused optimizer's BF16 write stays priced (step.dp_tail_s).
ADOPT_FSDP_NO_BF16_SHARD = True


def keeps_bf16_shard(plan: ParallelPlan) -> bool:
    """Whether a rank holds its parameters' BF16 shard beside the optimizer's FP32 master."""
    return not (ADOPT_FSDP_NO_BF16_SHARD and plan.zero_stage >= 3)


def weight_params(breakdown: dict, plan: ParallelPlan) -> float:
    """The parameters whose weights a rank holds (its ZeRO shard where parameters are sharded), from its memory
    breakdown: under ZeRO-3 the optimizer's state is sharded as the parameters are (memory_breakdown), so
    it does not depend on whether the BF16 shard is counted (keeps_bf16_shard)."""
    if plan.zero_stage >= 3:
        return breakdown["optimizer"] / plan.optimizer_bytes_per_param
    return breakdown["weights"] / WEIGHT_BYTES


def memory_breakdown(params: RankParams, activation_bytes: float, comm_buffer_bytes: float,
                     plan: ParallelPlan, dp: int, gathered_param_bytes: float = 0.0, loss_bytes: float = 0.0,
                     recompute_bytes: float = 0.0) -> dict:
    """Bytes per GPU by component. `dp`: the data-parallel replicas of a dense parameter (data x
    context-parallel ranks); `gathered_param_bytes`: ZeRO-3's working set of unsharded blocks
    (fsdp_working_set_bytes), shown as its own component; `recompute_bytes`: the block being
    recomputed in the backward (recompute_working_bytes), beside the rank's peak of saved
    activations; `loss_bytes`: what the cross-entropy's working set (loss_working_bytes) adds to
    that peak beyond the recomputed block's (the two are not alive together)."""
    expert_replicas = max(1.0, dp * plan.tp / plan.ep)
    def sharded(bytes_per_param: float, stage_min: int) -> float:
        return bytes_per_param * (params.dense / optimizer_shards(plan.zero_stage, stage_min, dp)
                                  + params.expert / optimizer_shards(plan.zero_stage, stage_min, expert_replicas))
    return {
        "weights": sharded(WEIGHT_BYTES, 3) if keeps_bf16_shard(plan) else 0.0,
        "gradients": sharded(GRAD_BYTES, 2) if gradients_sharded(plan) else GRAD_BYTES * params.total,
        "optimizer": sharded(plan.optimizer_bytes_per_param, 1),
        "activations": activation_bytes,
        "comm_buffers": comm_buffer_bytes,
        **({"fsdp_gathered": gathered_param_bytes} if plan.zero_stage >= 3 else {}),
        **({"recompute": recompute_bytes} if recompute_bytes else {}),
        **({"loss": loss_bytes} if loss_bytes else {}),
    }


# FSDP2 (torch.distributed.fsdp.fully_shard) prefetches one block ahead: the block computing and
# the next one's gathered parameters are resident, and in the backward one block's unsharded
# gradients wait for their reduce-scatter (FP32: torchtitan's default mixed_precision_reduce)
FSDP_RESIDENT_BLOCKS = 2


def fsdp_working_set_bytes(params: RankParams, resident_blocks: int = FSDP_RESIDENT_BLOCKS) -> float:
    """ZeRO-3's unsharded working set: `resident_blocks` copies of `params` (the largest block; or
    with pipeline parallelism, where a stage stays gathered through the step, all of the rank's
    blocks once) in BF16 as this rank holds them after the all-gather (its TP/EP share), plus
    their unsharded FP32 gradients (one block's; with PP the stage's, accumulated until the last
    micro-batch's reduce-scatter)."""
    return params.total * (resident_blocks * WEIGHT_BYTES + GRAD_BYTES)


# ---------------------------------------------------------------------------------------------
# Serving

KV_BLOCK_TOKENS = 64  # FlashMLA paged KV cache block (deepseek_claims.yaml flashmla.block)


def weight_bytes_per_param(precision: str) -> float:
    """FP8 weights carry one FP32 scale per 128x128 block (V3 §3.3)."""
    return FP8_BYTES + FP32_BYTES / (FP8_TILE * FP8_TILE) if precision == "fp8" else BF16_BYTES


def kv_bytes_per_token(m: ModelSpec, precision: str, include_mtp: bool = True) -> float:
    """KV cache per token over all layers (plus the MTP modules' layers when loaded). BF16 equals
    flops.kv_cache_bytes_per_token (70,272 B for V3's 61 layers). FP8 (FlashMLA's format): the
    latent in FP8 with an FP32 scale per 128 values, the RoPE key in BF16."""
    layers = m.num_layers + (m.num_mtp_modules if include_mtp else 0)
    if precision == "bf16":
        return kv_cache_bytes_per_token(m) / m.num_layers * layers
    if m.attention == "mla":
        per_layer = m.kv_lora_rank * (FP8_BYTES + serving_tables()["flashmla"]["fp8_kv_bytes_per_128"] / FP8_TILE) + m.qk_rope_head_dim * BF16_BYTES
    else:
        per_layer = 2 * m.num_kv_heads * m.head_dim * (FP8_BYTES + FP32_BYTES / FP8_TILE)
    return layers * per_layer


def weight_breakdown(m: ModelSpec, s: ServeSpec) -> dict:
    """Weight bytes of the whole model (instance) and per GPU."""
    pc = param_counts(m)
    expert = 3 * m.hidden_size * m.moe_intermediate_size
    mtp = m.num_mtp_modules
    routed_layers = m.num_moe_layers + (mtp if m.is_moe else 0)
    routed = routed_layers * m.num_routed_experts * expert
    bf16_params = (pc["embedding_params"] + pc["head_params"]
                   + (m.num_layers + mtp) * (2 * m.hidden_size + m.q_lora_rank + m.kv_lora_rank) + m.hidden_size
                   + routed_layers * m.num_routed_experts * m.hidden_size)          # embeddings, head, norms, router
    total = pc["total_params"] + pc["mtp_params"]
    matmul_dense = total - routed - bf16_params
    wb = weight_bytes_per_param(s.weight_precision)
    slots = m.num_routed_experts + s.redundant_experts
    routed_gpu = routed * (slots / max(m.num_routed_experts, 1)) / s.ep * wb if m.is_moe else 0.0
    dense_gpu = matmul_dense / s.tp * wb + bf16_params / s.tp * BF16_BYTES
    return {
        "params_total": float(total),
        "weight_bytes_total": float(routed * wb + matmul_dense * wb + bf16_params * BF16_BYTES),
        "routed_expert_bytes_per_gpu": float(routed_gpu),
        "dense_bytes_per_gpu": float(dense_gpu),
        "weights_per_gpu_bytes": float(routed_gpu + dense_gpu),
    }


def requests_per_attention_group(s: ServeSpec, batch: int) -> int:
    return -(-batch // s.attention_dp)


def memory_per_gpu(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, batch: int, phase: str = "decode") -> dict:
    """Bytes per GPU by component for `batch` concurrent requests of one instance."""
    w = weight_breakdown(m, s)
    reqs = requests_per_attention_group(s, batch)
    ctx = -(-(s.input_len + s.output_len) // KV_BLOCK_TOKENS) * KV_BLOCK_TOKENS
    kv_share = 1.0 if m.attention == "mla" else 1.0 / min(s.tp, m.num_kv_heads)   # MLA latent replicated over TP
    kv = reqs * ctx * kv_bytes_per_token(m, s.kv_precision, include_mtp=s.mtp_draft_tokens > 0) * kv_share
    q = 1 + s.mtp_draft_tokens
    tokens = reqs * q if phase == "decode" else s.prefill_chunk_tokens
    h = m.num_heads // s.tp
    width = 6 * m.hidden_size + 2 * h * (m.qk_head_dim + m.attn_v_head_dim) + m.top_k * (m.hidden_size + 2 * m.moe_intermediate_size)
    act = tokens * width * BF16_BYTES + reqs * m.vocab_size / s.tp * FP32_BYTES
    out = {
        "weights": w["weights_per_gpu_bytes"],
        "kv_cache": float(kv),
        "activations": float(act),
        "runtime_reserved": s.runtime_reserved_bytes,
    }
    out["total"] = float(sum(out.values()))
    out["capacity"] = gpu.hbm_bytes
    return out


def max_batch_by_memory(m: ModelSpec, gpu: GPUSpec, s: ServeSpec) -> int:
    """Largest concurrency per instance whose decode memory fits (0 if not even one request)."""
    lo, hi = 0, 1
    while memory_per_gpu(m, gpu, s, hi)["total"] <= gpu.hbm_bytes:
        lo, hi = hi, hi * 2
        if hi > 1 << 24:
            return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if memory_per_gpu(m, gpu, s, mid)["total"] <= gpu.hbm_bytes:
            lo = mid
        else:
            hi = mid
    return lo


def check_memory(m: ModelSpec, gpu: GPUSpec, s: ServeSpec, batch: int) -> dict:
    mem = memory_per_gpu(m, gpu, s, batch)
    if mem["total"] > gpu.hbm_bytes:
        parts = ", ".join(f"{k} {v / GIB:.1f} GiB" for k, v in mem.items() if k not in ("total", "capacity"))
        raise InfeasiblePlan(
            f"{m.name} at batch {batch} needs {mem['total'] / GIB:.1f} GiB per GPU ({parts}) "
            f"> {gpu.hbm_bytes / GIB:.1f} GiB of {gpu.name}; instance of {s.ep} GPUs has "
            f"{s.ep * gpu.hbm_bytes / GIB:.0f} GiB for {weight_breakdown(m, s)['weight_bytes_total'] / GIB:.0f} GiB of weights",
            {k: float(v) for k, v in mem.items()})
    return mem

"""Frozen specs: model, GPU, cluster, parallel plan and training workload.

Specs hold inputs only; derived quantities are properties. Sweeps make variants with
`dataclasses.replace`. Field metadata (unit, allowed range, meaning) drives both the strict
scenario loader and docs/scenario.md.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import tomllib
from dataclasses import dataclass
from importlib import resources

from twin.core.errors import ScenarioError
from twin.core.fields import build, spec_field
from twin.core.schedules import SCHEDULE_NAMES

# Upper bounds of counts and sizes (the loader refuses larger values, naming the field). Each is
# far beyond any model or cluster built so far (DeepSeek-V3: 61 layers, width 7,168, 256 experts,
# 2,048 GPUs; Llama 3 405B: 126 layers, 16,384 GPUs), yet small enough that a typo cannot start hours of
# simulation or an allocation of terabytes. How much a training step simulates is bounded
# separately, by the work estimate in Scenario.check.
MAX_LAYERS = 1_000             # transformer blocks
MAX_WIDTH = 1_000_000          # hidden sizes, ranks and head dimensions
MAX_VOCAB = 10_000_000         # vocabulary entries
MAX_HEADS = 4_096              # attention heads
MAX_EXPERTS = 1_024            # routed experts per layer (Monte Carlo routing draws tokens x experts)
MAX_MTP_MODULES = 16           # multi-token-prediction modules (each one more block on the last stage)
MAX_GPUS = 1_000_000           # GPUs, and degrees or node counts drawn from them
MAX_DEGREE = 1_024             # tensor- and pipeline-parallel degrees
MAX_SMS = 1_024                # streaming multiprocessors
MAX_SEQ_LEN = 10_000_000       # tokens per sequence
MAX_BATCH_SEQS = 10_000_000    # sequences per step or micro-batch
MAX_IMBALANCE = 1_000.0        # max/mean routing load (a rank cannot exceed EP x the mean)
MAX_BYTES_PER_PARAM = 1_024.0  # optimizer or checkpoint bytes per parameter
MAX_SEED = 2**32 - 1           # random seeds (numpy accepts any; 32 bits suffice)

# s21mem (docs/notes/s21mem_rule.md): a GPU's memory capacity is what a process is given
# (torch.cuda.get_device_properties().total_memory), where the catalog holds it as usable_hbm_bytes,
# instead of the datasheet's "141 GB" / "80 GB" read as 1e9 bytes. Off: hbm_bytes as the catalog
# states it. ADOPT_USABLE_HBM: where the figure is our own reading (the H200);
# ADOPT_USABLE_HBM_INFERRED: where it is carried from the same memory part's reading
# (usable_hbm_inferred: the H800, from the H100), judged apart by the rule.
ADOPT_USABLE_HBM = True
ADOPT_USABLE_HBM_INFERRED = False
# FlashAttention-2's factor under a card's power limit from its speed held inside the rows' own training block
# rather than alone (session s30tt, docs/notes/s30tt_rule.md; judge `python -m calibration.block_hold`): a card
# row's `attention_clock_fracs_in_block` replaces its `attention_clock_fracs` when on. Off until the rule adopts.
ADOPT_FA2_IN_BLOCK_HELD = False

ATTENTION_KINDS = ("mla", "gqa")
POSITION_EMBEDDINGS = ("rope", "learned")
PRECISIONS = ("fp8", "bf16")
RECOMPUTE = ("none", "selective", "selective_op", "full", "megatron_selective")
CP_KINDS = ("ring", "allgather", "torch_allgather")
KERNEL_STACKS = ("fused", "eager", "fused_blocks")   # twin.costs.flops.eager_ops
ATTENTION_KERNELS = ("cudnn", "fa2")   # twin.costs.profile.Profile.with_attention_kernel
OPTIMIZER_KERNELS = ("fused", "foreach", "none")   # twin.training.step.dp_tail_s
GRAD_REDUCE_DTYPES = ("bf16", "fp32")   # twin.training.step.GRAD_REDUCE_BYTES
GRAD_ACCUMULATES = ("fused", "autograd")   # twin.training.step.autograd_accumulate_s
GRAD_REDUCE_GROUPS = ("dense_and_expert", "by_group")   # twin.training.step.grad_ring_s, real_reductions_s
GRAD_BUCKETS = ("every_chunk", "megatron")   # twin.training.step.dp_reduce_after_s
PP_GRAD_SYNCS = ("last_backward", "every_backward")   # twin.costs.memory.gradients_sharded
PP_RUNTIMES = ("dataflow", "torch_pipelining")   # twin.training.step.runtime_needs
LOSS_KERNELS = ("as_kernels", "megatron_unfused")   # twin.costs.flops.megatron_loss_ops
FP8_RECIPES = ("blockwise", "tensorwise")   # twin.costs.profile.Profile.with_fp8_recipe
STAGE_CUTS = ("even", "balanced")   # twin.training.step.stage_layers, balanced_stage_layers
TP_OVERLAP_KINDS = ("te_userbuffers", "torch_async_tp", "ideal")   # twin.training.step.StepCosts._tp_task
PARAM_GATHER_KINDS = ("ideal", "megatron_chained")   # twin.training.step.param_gather_release_s
# SMs held for expert-parallel communication when the plan leaves plan.comm_sms out: V3's 20 of 132
# (V3 report §3.2.2) with expert parallelism, none without (nothing runs DeepEP kernels)
EP_COMM_SMS_DEFAULT = 20
# SMs that saturate both legs of the expert-parallel all-to-all: V3 report §3.2.2, "only 20 SMs are
# sufficient to fully utilize the bandwidths of IB and NVLink" (DeepEP V1 runs 24: docs/legacy.md's
# Buffer.set_num_sms(24), at the links' ceilings). The lowest per-SM rate that claim allows is each
# link's achieved bandwidth / 20: fewer SMs move proportionally less (twin.costs.comm.a2a_link_share,
# docs/notes/s23csm_rule.md)
A2A_SMS_SATURATING = 20


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A transformer, dense or MoE, with MLA or GQA attention (DeepSeek-V3, Mixtral, Llama 3)."""

    name: str = spec_field("custom", doc="Model name (a catalog key, or any label for an inline model)")
    num_layers: int = spec_field(unit="count", ge=1, le=MAX_LAYERS, doc="Transformer blocks of the main model")
    hidden_size: int = spec_field(unit="count", ge=1, le=MAX_WIDTH, doc="Model width d")
    vocab_size: int = spec_field(unit="count", ge=1, le=MAX_VOCAB, doc="Vocabulary size")
    num_heads: int = spec_field(unit="count", ge=1, le=MAX_HEADS, doc="Query heads")
    attention: str = spec_field("mla", choices=ATTENTION_KINDS, doc="Multi-head latent attention or grouped-query attention")
    q_lora_rank: int = spec_field(0, unit="count", ge=0, le=MAX_WIDTH, doc="MLA query compression rank (0 = no compression)")
    kv_lora_rank: int = spec_field(0, unit="count", ge=0, le=MAX_WIDTH, doc="MLA key-value compression rank d_c")
    qk_nope_head_dim: int = spec_field(0, unit="count", ge=0, le=MAX_WIDTH, doc="MLA per-head query/key dimension without RoPE")
    qk_rope_head_dim: int = spec_field(0, unit="count", ge=0, le=MAX_WIDTH, doc="MLA decoupled RoPE dimension (shared key)")
    v_head_dim: int = spec_field(0, unit="count", ge=0, le=MAX_WIDTH, doc="MLA per-head value dimension")
    num_kv_heads: int = spec_field(0, unit="count", ge=0, le=MAX_HEADS, doc="GQA key-value heads")
    head_dim: int = spec_field(0, unit="count", ge=0, le=MAX_WIDTH, doc="GQA head dimension")
    qk_norm: bool = spec_field(False, doc="GQA: an RMSNorm over each query and key head before RoPE (Qwen3's q_norm, k_norm)")
    intermediate_size: int = spec_field(0, unit="count", ge=0, le=MAX_WIDTH, doc="Dense SwiGLU FFN hidden size")
    ffn_width_stand_in: bool = spec_field(False, doc="intermediate_size stands in for another FFN of the same parameters and FLOPs (Megatron's GeLU 4 x hidden as an 8 x hidden / 3 SwiGLU): its GEMMs are costed as aligned to 8 elements whatever the stand-in width (the published runs' widths are)")
    num_dense_layers: int = spec_field(0, unit="count", ge=0, le=MAX_LAYERS, doc="The first k blocks use the dense FFN (all of them for a dense model)")
    num_routed_experts: int = spec_field(0, unit="count", ge=0, le=MAX_EXPERTS, doc="Routed experts per MoE layer (0 = dense model)")
    num_shared_experts: int = spec_field(0, unit="count", ge=0, le=MAX_EXPERTS, doc="Always-active shared experts per MoE layer")
    moe_intermediate_size: int = spec_field(0, unit="count", ge=0, le=MAX_WIDTH, doc="Hidden size of one expert's SwiGLU FFN")
    top_k: int = spec_field(0, unit="count", ge=0, le=MAX_EXPERTS, doc="Routed experts per token")
    num_expert_groups: int = spec_field(1, unit="count", ge=1, le=MAX_EXPERTS, doc="Expert groups for group-limited routing")
    top_k_groups: int = spec_field(1, unit="count", ge=1, le=MAX_EXPERTS, doc="Groups a token may route to")
    route_scale: float = spec_field(1.0, gt=0, doc="Scale applied to the normalised routing weights")
    num_mtp_modules: int = spec_field(0, unit="count", ge=0, le=MAX_MTP_MODULES, doc="Multi-token-prediction modules (each one extra MoE block)")
    tie_embeddings: bool = spec_field(False, doc="Output head shares the embedding matrix")
    position_embedding: str = spec_field("rope", choices=POSITION_EMBEDDINGS, doc="Rotary embeddings applied to q and k in every block ('rope'), or a learned absolute table looked up and added once at the embedding ('learned', Megatron-LM's default)")
    attention_dropout: float = spec_field(0.0, ge=0, le=0.9, doc="Training dropout on the attention probabilities, inside the attention kernel (Megatron-LM's default 0.1); 0 = none")
    hidden_dropout: float = spec_field(0.0, ge=0, le=0.9, doc="Training dropout after each block's attention and FFN output projections, before the residual add (Megatron-LM's default 0.1); 0 = none")

    def check(self, path: str = "model", source: str | None = None) -> None:
        if self.attention == "mla":
            for name in ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim"):
                if getattr(self, name) < 1:
                    raise ScenarioError(f"{path}.{name}", getattr(self, name), "integer >= 1 for attention = 'mla'", source)
        else:
            if self.num_kv_heads < 1 or self.head_dim < 1:
                raise ScenarioError(f"{path}.num_kv_heads", self.num_kv_heads, "num_kv_heads and head_dim >= 1 for attention = 'gqa'", source)
            if self.num_heads % self.num_kv_heads:
                raise ScenarioError(f"{path}.num_kv_heads", self.num_kv_heads, f"a divisor of num_heads = {self.num_heads}", source)
        if self.num_dense_layers > self.num_layers:
            raise ScenarioError(f"{path}.num_dense_layers", self.num_dense_layers, f"<= num_layers = {self.num_layers}", source)
        if self.num_dense_layers < self.num_layers and self.num_routed_experts == 0:
            raise ScenarioError(f"{path}.num_routed_experts", 0, "integer >= 1 when num_dense_layers < num_layers", source)
        if self.num_routed_experts:
            if not 1 <= self.top_k <= self.num_routed_experts:
                raise ScenarioError(f"{path}.top_k", self.top_k, f"1..num_routed_experts = {self.num_routed_experts}", source)
            if self.moe_intermediate_size < 1:
                raise ScenarioError(f"{path}.moe_intermediate_size", self.moe_intermediate_size, "integer >= 1 for an MoE model", source)
            if self.num_routed_experts % self.num_expert_groups:
                raise ScenarioError(f"{path}.num_expert_groups", self.num_expert_groups, f"a divisor of num_routed_experts = {self.num_routed_experts}", source)
            if self.top_k_groups > self.num_expert_groups:
                raise ScenarioError(f"{path}.top_k_groups", self.top_k_groups, f"<= num_expert_groups = {self.num_expert_groups}", source)
        if self.num_dense_layers and self.intermediate_size < 1:
            raise ScenarioError(f"{path}.intermediate_size", self.intermediate_size, "integer >= 1 when there are dense layers", source)

    @property
    def is_moe(self) -> bool:
        return self.num_routed_experts > 0

    @property
    def num_moe_layers(self) -> int:
        return self.num_layers - self.num_dense_layers if self.is_moe else 0

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_head_dim + self.qk_rope_head_dim if self.attention == "mla" else self.head_dim

    @property
    def attn_v_head_dim(self) -> int:
        return self.v_head_dim if self.attention == "mla" else self.head_dim


@dataclass(frozen=True)
class GPUSpec:
    """One GPU type's peaks and links (SI units). Loaded from twin/data/hardware.toml."""

    name: str
    peak_bf16_flops_per_s: float
    peak_fp8_flops_per_s: float
    num_sms: int
    hbm_bytes: float
    hbm_bytes_per_s: float
    nvlink_bytes_per_s: float
    nvlink_achieved_bytes_per_s: float
    scale_out_bytes_per_s: float
    scale_out_achieved_bytes_per_s: float
    nvlink_latency_s: float
    scale_out_latency_s: float
    gpus_per_node: int
    tdp_w: float
    calibrated_as: str
    rental_usd_per_gpu_hour: float   # default rental price (cluster.price_usd_per_gpu_hour overrides)
    sources: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)
    # A card run below the power limit its profile (calibrated_as) was measured at: its limit, and
    # the sustained SM clock there over the clock at the measured limit (calibration/power_cap.py
    # derives it from our power and clock records); compute-bound kernels slow by it
    power_limit_w: float = 0.0       # 0: the limit the profile was measured at
    clock_frac: float = 1.0
    # The attention kernels' own factor under this card's limit, where their own draw was measured
    # (a kernel drawing less than a GEMM at a given clock keeps more of its speed under the limit):
    # their speed here over their speed in the profile's sustained-load curves. 0: clock_frac.
    # attention_clock_fracs, where the factor was measured to depend on the pass and call length:
    # ((direction "fwd"|"bwd", seq_len, factor), ...), interpolated in log length, held at the ends
    attention_clock_frac: float = 0.0
    attention_clock_fracs: tuple = ()

    def peak_flops_per_s(self, precision: str) -> float:
        """Tensor-core rate the kernels see: the nominal peak at this card's sustained clock
        (MFU keeps the nominal peak_bf16_flops_per_s as its basis, as published MFUs do)."""
        peak = self.peak_fp8_flops_per_s if precision == "fp8" else self.peak_bf16_flops_per_s
        return peak * self.clock_frac

    def attention_flops_per_s(self, direction: str = "fwd", seq_len: float = 0.0) -> float:
        """BF16 tensor-core rate the attention kernels see: the nominal peak at their own factor
        under this card's limit (attention_clock_fracs for this pass and call length, else
        attention_clock_frac), else at the GEMMs' (clock_frac)."""
        points = sorted((n, f) for d, n, f in self.attention_clock_fracs if d == direction)
        if points:
            return self.peak_bf16_flops_per_s * _log_interp(points, seq_len)
        return self.peak_bf16_flops_per_s * (self.attention_clock_frac or self.clock_frac)


def _log_interp(points: list[tuple[float, float]], x: float) -> float:
    """y at x on the (x, y) points sorted by x: linear in log x between them, held at the ends."""
    if x <= points[0][0]:
        return points[0][1]
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        if x <= x1:
            return y0 + (y1 - y0) * math.log(x / x0) / math.log(x1 / x0)
    return points[-1][1]


@functools.cache
def _catalog(filename: str) -> dict:
    """A TOML catalog shipped as package data (twin/data): models, GPUs, claims, failures."""
    with resources.files("twin.data").joinpath(filename).open("rb") as fh:
        return tomllib.load(fh)


def serving_tables() -> dict:
    """Published serving kernel tables and figures (twin/data/serving_claims.toml): FlashMLA's
    rates, DeepEP's low-latency bandwidths by EP size, and the serving claims."""
    return _catalog("serving_claims.toml")


@functools.cache
def serve_engines() -> dict:
    """Fitted engine costs of real/serve (twin/data/serve_engines.toml, written by
    calibration/serve_engine_fit.py from the fit-split load runs), by name."""
    return _catalog("serve_engines.toml")


def serving_claims() -> dict:
    """Published serving figures by id (twin/data/serving_claims.toml), compared against, never fitted."""
    return serving_tables()["claims"]


def training_claims() -> tuple[dict, ...]:
    """Published training figures (twin/data/claims.toml), compared against, never fitted."""
    return tuple(_catalog("claims.toml")["claims"])


def model_names() -> list[str]:
    return sorted(_catalog("models.toml")["models"])


def gpu_names() -> list[str]:
    return sorted(_catalog("hardware.toml")["gpus"])


def get_model(name: str) -> ModelSpec:
    """A named model from the catalog (`twin model --list` shows them)."""
    table = _catalog("models.toml")["models"]
    if name not in table:
        raise ScenarioError("model.name", name, "one of " + ", ".join(sorted(table)))
    return build(ModelSpec, {"name": name, **table[name]}, "model", "twin/data/models.toml")


def get_gpu(name: str) -> GPUSpec:
    table = _catalog("hardware.toml")["gpus"]
    if name not in table:
        raise ScenarioError("cluster.gpu", name, "one of " + ", ".join(sorted(table)))
    row = dict(table[name])
    usable_bytes = row.pop("usable_hbm_bytes", None)
    inferred = row.pop("usable_hbm_inferred", False)
    if usable_bytes and (ADOPT_USABLE_HBM_INFERRED if inferred else ADOPT_USABLE_HBM):
        row["hbm_bytes"] = float(usable_bytes)
        row["sources"] = {**row.get("sources", {}), "hbm_bytes": row["sources"]["usable_hbm_bytes"]}
    in_block = row.pop("attention_clock_fracs_in_block", None)
    if in_block and ADOPT_FA2_IN_BLOCK_HELD:
        row["attention_clock_fracs"] = in_block
        row["sources"] = {**row.get("sources", {}),
                          "attention_clock_fracs": row["sources"]["attention_clock_fracs_in_block"]}
    if "attention_clock_fracs" in row:   # TOML arrays -> tuples: the spec stays hashable
        row["attention_clock_fracs"] = tuple((str(d), float(n), float(f)) for d, n, f in row["attention_clock_fracs"])
    return GPUSpec(**row)


@dataclass(frozen=True)
class ClusterSpec:
    gpu: str = spec_field("h800", doc="GPU type, a key of twin/data/hardware.toml")
    num_gpus: int = spec_field(2048, unit="count", ge=1, le=MAX_GPUS, doc="GPUs in the job")
    price_usd_per_gpu_hour: float | None = spec_field(None, unit="USD/GPU-hour", ge=0, doc="Rental price; absent = the GPU type's catalog price (twin/data/hardware.toml rental_usd_per_gpu_hour: H800 $2 as the DeepSeek-V3 report assumes, H100 $2.95, H200 $3.50, B200 $4.89, sourced there)")

    def resolved(self) -> "ClusterSpec":
        """With the price filled in from the GPU catalog where the scenario leaves it out."""
        if self.price_usd_per_gpu_hour is not None:
            return self
        return dataclasses.replace(self, price_usd_per_gpu_hour=get_gpu(self.gpu).rental_usd_per_gpu_hour)

    def check(self, path: str = "cluster", source: str | None = None) -> None:
        get_gpu_checked(self.gpu, f"{path}.gpu", source)

    @property
    def spec(self) -> GPUSpec:
        return get_gpu(self.gpu)


def get_gpu_checked(name: str, path: str, source: str | None) -> GPUSpec:
    if name not in _catalog("hardware.toml")["gpus"]:
        raise ScenarioError(path, name, "one of " + ", ".join(gpu_names()), source)
    return get_gpu(name)


@dataclass(frozen=True)
class ParallelPlan:
    tp: int = spec_field(1, unit="count", ge=1, le=MAX_DEGREE, doc="Tensor-parallel degree (attention and dense layers)")
    sequence_parallel: bool = spec_field(False, doc="Megatron sequence parallelism (needs tp > 1): each block's tensor-parallel all-reduces become all-gather + reduce-scatter, and norms, residuals and their activations are split over the TP ranks")
    tp_comm_overlap: bool = spec_field(False, doc="Overlap tensor-parallel collectives with the GEMMs beside them (needs tp > 1), as plan.tp_overlap_kind says. False: every TP collective waits in line with the block's computation")
    sp_input_regather: bool = spec_field(True, doc="Where a block part's input is all-gathered over the TP ranks (sequence parallelism, or an MoE block's attention) and plan.tp_comm_overlap is off: the column-parallel linear keeps only its input's sequence shard and all-gathers it again in the backward for its weight gradient, launched before the input-gradient GEMM and waited before the weight-gradient GEMM (Megatron-LM core_r0.8.0 megatron/core/tensor_parallel/layers.py LinearWithGradAccumulationAndAsyncCommunication.backward; TransformerEngine's Linear alike), so only what outlasts that GEMM is exposed (`tp_all_gather_input_bwd`); the activation memory counts the shard (Korthikanti et al. 2022). False (needs plan.recompute 'full'): the backward uses the gathered input of the recomputed forward, as DTensor's sequence parallelism under torchtitan's full activation checkpointing does")
    tp_overlap_kind: str = spec_field("te_userbuffers", choices=TP_OVERLAP_KINDS, doc="How plan.tp_comm_overlap overlaps (needs it true): 'te_userbuffers' (Megatron-LM --tp-comm-overlap on TransformerEngine's userbuffers with its default configuration, twin/costs/tp_overlap.py: the column-parallel all-gathers and the backward's output-gradient all-gathers pipelined ring-exchange style with the GEMM in tp chunks over copy-engine transfers; each forward reduce-scatter in 4 chunks, the GEMM chunks slowed by the 16-SM reduce-scatter kernel beside them (the measured untold slowdown) and the last chunk's exposed; in the backward the layer input re-gathered beside the input-gradient GEMM and the input gradient reduce-scattered beside the weight-gradient GEMM, each on 16 SMs; all-reduces (no sequence parallelism) wait in line); 'torch_async_tp' (PyTorch's micro-pipelined TP as torchtitan enables it, torch/_inductor/fx_passes/micro_pipeline_tp.py: an all-gather is pipelined with the GEMMs that consume it and a reduce-scatter with the one GEMM that produces it, its partial sums then added by a reduction kernel on the compute stream; the input-gradient reduce-scatter of a part whose input feeds separate linears (Llama's wq/wk/wv, w1/w3) sums their GEMMs first, so it is not fused and waits in line); 'ideal' (a bound: every TP collective, all-reduces included, pipelined with the GEMM beside it at its whole-GEMM rate on all SMs, only the part longer than the GEMM exposed; for stacks that publish no TP overlap, e.g. Llama 3's)")
    cp: int = spec_field(1, unit="count", ge=1, le=MAX_DEGREE, doc="Context-parallel degree: each sequence is split over cp ranks (attention exchanges keys and values); data-parallel degree = num_gpus / (tp * cp * pp)")
    cp_kind: str = spec_field("ring", choices=CP_KINDS, doc="Context-parallel attention: 'ring' passes key/value chunks around the cp ranks, each transfer overlapped with the attention of the chunk in hand (Megatron/TransformerEngine); 'allgather' gathers the whole sequence's keys and values before attention and reduce-scatters their gradients (Llama 3); 'torch_allgather' is PyTorch's experimental context_parallel with rotate method 'allgather' as torchtitan runs it: cp attention calls per pass, K/V all-gathered behind the first, each output merged in FP32 by eager kernels, and in the backward dK/dV accumulated in FP32 and passed rank to rank after every call; with kernels 'fused_blocks' (torchtitan's compiled blocks) the pass is traced into torch.compile: every collective waited at issue (exposed), the merges fused by Inductor")
    pp: int = spec_field(16, unit="count", ge=1, le=MAX_DEGREE, doc="Pipeline-parallel degree (ranks in one pipeline)")
    ep: int = spec_field(64, unit="count", ge=1, le=MAX_GPUS, doc="Expert-parallel degree (ranks sharing one layer's routed experts; drawn from the data-parallel ranks; 1 for a dense model where the scenario does not say)")
    zero_stage: int = spec_field(1, unit="count", choices=(0, 1, 2, 3), doc="ZeRO stage: 1 shards optimizer state, 2 also gradients (by reduce-scattering every micro-batch's, as DeepSpeed's ZeRO-2 and FSDP2 with gradient sync on do; with pipeline parallelism, as FSDP2 under torch.distributed.pipelining runs it, accumulated unsharded in FP32 after every backward and reduce-scattered once: ZeRO-1's gradient memory; twin.costs.memory.gradients_sharded), 3 also parameters (FSDP: each block's parameters all-gathered before its forward and backward, its gradients reduce-scattered after, prefetched one block ahead; with pipeline parallelism, as torch.distributed.pipelining runs it, a stage gathered at its first forward and its gradients reduce-scattered once its last backward is done), over the data-parallel (x context-parallel) ranks")
    micro_batch_seqs: int = spec_field(1, unit="sequences", ge=1, le=MAX_BATCH_SEQS, doc="Sequences per micro-batch per pipeline")
    schedule: str = spec_field("dualpipe", choices=SCHEDULE_NAMES, doc="Pipeline schedule")
    virtual_stages: int = spec_field(1, unit="count", ge=1, le=MAX_DEGREE, doc="Model chunks per pipeline rank for schedule 'interleaved-1f1b' (>= 2 there; 1 for every other schedule)")
    stage_cut: str = spec_field("even", choices=STAGE_CUTS, doc="How the blocks are cut into pipeline model stages: 'even' by block count, the spare blocks to middle stages so the first (embedding) and last (head, MTP) stages carry fewer (what frameworks do with no layout given: torchtitan, Megatron-LM without --pipeline-model-parallel-layout, this project's real/ pipeline); 'balanced' cuts the blocks in order so the costliest stage's compute (forward + input and weight gradients, the embedding, output head and MTP modules included) is least, the other stages as even as that allows, as a planner that knows its stage costs lays them out (Megatron-Bridge's DeepSeek-V3 recipe gives its last of 16 stages one block beside the MTP module and the loss)")
    comm_sms: int | None = spec_field(None, unit="count", ge=0, le=MAX_SMS, doc=f"SMs reserved for EP communication kernels; absent = {EP_COMM_SMS_DEFAULT} with expert parallelism (ep > 1, V3 report §3.2.2: 20 of 132), 0 without. They take SMs from compute and set the all-to-all's bandwidth: each link at min(1, SMs / {A2A_SMS_SATURATING}) of its achieved figure ({A2A_SMS_SATURATING} saturate IB and NVLink, V3 §3.2.2; twin.costs.comm.a2a_link_share); >= 1 with expert parallelism")
    comm_sms_told: bool = spec_field(True, doc="Compute kernels are told the SMs left to them (DeepGEMM's SM count, as in V3): they slow by the SM share. False: they launch for every SM and run beside the communication kernels holding comm_sms, at the slowdown measured in sm_reserve.csv (Profile.sm_reserve)")
    max_nodes_per_token: int = spec_field(4, unit="count", ge=1, le=MAX_GPUS, doc="Node-limited routing: a token's experts span at most this many nodes (V3: 4)")
    recompute: str = spec_field("selective", choices=RECOMPUTE, doc="Activation recomputation: 'selective' recomputes RMSNorm and MLA up-projections as in V3 §3.3.3; 'selective_op' is torchtitan's per-op policy (selective_ac_option 'op': every elementwise op and every second linear recomputed, BF16 or torchao Float8 alike, attention kept; twin.costs.flops.op_sac_recompute); 'full' recomputes whole layers; 'megatron_selective' is Megatron-LM's --recompute-activations (recompute_granularity 'selective': the core attention re-run in the backward, megatron/core/transformer/attention.py checkpoint_core_attention @ core_r0.8.0; Korthikanti et al. 2022), every other activation kept")
    gemm_precision: str = spec_field("fp8", choices=PRECISIONS, doc="Precision of the large GEMMs (attention core stays BF16)")
    attention_kernel: str = spec_field("cudnn", choices=ATTENTION_KERNELS, doc="The attention kernel the job's stack runs: 'cudnn' is the one the profile's records measured (PyTorch 2.11's SDPA on Hopper: cuDNN's fused flash kernels); 'fa2' is FlashAttention-2, which PyTorch's SDPA ran on H100 before cuDNN became its default there (pytorch/pytorch#142132, #138522), at 0.62 of cuDNN's speed (FlashAttention-3 paper, H100 head dim 128; twin.costs.profile.FA2_OVER_CUDNN)")
    fp8_recipe: str = spec_field("blockwise", choices=FP8_RECIPES, doc="Scaling of the FP8 GEMMs (gemm_precision 'fp8'): 'blockwise' is DeepSeek-V3's (1x128 activation tiles, 128x128 weight blocks; weight gradients with 1x128 scales on both operands, at their measured slowdown); 'tensorwise' is torchao's Float8Linear as torchtitan trains (one scale per tensor, all three GEMMs at the measured tensorwise torch._scaled_mm rate; twin.costs.profile.Profile.with_fp8_recipe; the output projection left in BF16 as torchtitan's float8 filter leaves it)")
    kernels: str = spec_field("fused", choices=KERNEL_STACKS, doc="How the elementwise work of a block runs: 'fused' (torch.compile, TransformerEngine, DeepSeek's kernels: each norm, RoPE, SwiGLU, cross-entropy one kernel reading and writing its tensors once); 'eager' (plain PyTorch eager as torchtitan's Llama code issues it: RMSNorm and RoPE through FP32 copies, SwiGLU in two kernels, the loss on an FP32 copy of the logits; twin.costs.flops.EAGER_ELEMENTWISE); 'fused_blocks' (torch.compile applied to each transformer block only, as torchtitan's apply_compile @ 9dec370: the blocks fused, the final norm and the loss on FP32 logits eager)")
    loss_kernel: str = spec_field("as_kernels", choices=LOSS_KERNELS, doc="How the cross-entropy over the vocabulary runs: 'as_kernels' (as plan.kernels says: one fused kernel, or torch's cross_entropy on FP32 logits where the head runs eager); 'megatron_unfused' (Megatron-LM's default vocab-parallel cross-entropy: FP32 copy, max, subtract, exp, sum and divide as separate kernels, 38 bytes per logit forward, 14 backward; twin.costs.flops.MEGATRON_CROSS_ENTROPY)")
    unfused_linears: bool = spec_field(False, doc="The QKV and gate/up projections as separate linears, as an unfused PyTorch model issues them (torchtitan's Llama @ 9dec370: wq, wk, wv and w1, w3, each nn.Linear on the same input): one GEMM kernel each, every one reading the whole input (on a TP rank wk and wv are one K/V head wide), and in the backward their input gradients summed (twin.costs.flops.unfused_linear_ops). False: one fused GEMM each (Megatron, TransformerEngine, DeepSeek)")
    kv_repeat: bool = spec_field(False, doc="GQA keys and values copied out to every query head before the attention kernel (torchtitan's Llama repeat_kv @ 9dec370): the copy and its backward are costed, and context parallelism exchanges the repeated keys and values (GQA models only)")
    optimizer_kernel: str = spec_field("fused", choices=OPTIMIZER_KERNELS, doc="How Adam's update runs: 'fused' (one kernel reading the gradient, master weight and moments and writing them back with the BF16 weights: Apex FusedAdam in Megatron, DeepSeek's); 'foreach' (torch.optim.AdamW's multi-tensor implementation, torchtitan's default: eight passes over the FP32 state, 84 bytes per parameter; twin.training.step.FOREACH_ADAMW_BYTES_PER_PARAM); 'none' (no update timed: a benchmark's step of forward, backward and gradient reduction, as real/pipeline times its steps without --sgd-lr and `twin scenario from-bench` writes them; needs plan.zero_stage 0; memory still counts the state optimizer_bytes_per_param names)")
    grad_reduce_groups: str = spec_field("dense_and_expert", choices=GRAD_REDUCE_GROUPS, doc="How the data-parallel gradient reduction groups a rank's gradients (ZeRO 0-2): 'dense_and_expert' (each over the ranks holding the same parameters, as Megatron-LM's dense and expert buffers, torchtitan's edp mesh and DeepSeek-V3's layout have it: the dense gradients over the data- and context-parallel ranks, then the routed experts' over their expert-data-parallel group of DP x CP x TP / EP ranks, G / EP of them a node; twin.training.step.dp_tail_s, grad_ring_s, docs/notes/s27egrad_rule.md; with ADOPT_EXPERT_GRAD_GROUP off, the earlier rule: one buffer of both over the data- and context-parallel ranks); 'by_group' (real/pipeline/engine.py's: DualPipe's two copies of a stage summed over their rank pair first, then the non-expert gradients over the dp ranks and the routed experts' over the dp / ep ranks holding the same experts, each flattened into a BF16 buffer and copied back around an all-reduce; twin.training.step.real_reductions_s; needs plan.zero_stage 0)")
    grad_accumulate: str = spec_field("fused", choices=GRAD_ACCUMULATES, doc="How a micro-batch's weight gradients are added to the step's: 'fused' (not priced: the weight-gradient GEMM accumulates into the gradient buffer, Megatron-LM's gradient_accumulation_fusion, DeepSeek's); 'autograd' (real/pipeline's eager engine: torch autograd's AccumulateGrad after each backward, the first of each stage copy stealing or cloning its gradients, the later ones adding (read two, write one, BF16); routed experts' dW arrives transposed from real/wgrad.py's grouped GEMM, so it is copied through a transposed view at the profile's measured rate (Profile.eager transpose_copy_eff); the embedding's, norms' and router's in the B op, the rest in W; twin.training.step.autograd_accumulate_s, as calibration.pipeline.accumulate_grads prices it; needs plan.zero_stage 0)")
    optimizer_bytes_per_param: float = spec_field(12.0, unit="bytes", gt=0, le=MAX_BYTES_PER_PARAM, doc="Optimizer state per parameter before ZeRO sharding: FP32 master + two FP32 Adam moments = 12 (V3 keeps BF16 moments: 8)")
    overlap_dp_comm: bool = spec_field(True, doc="Overlap data-parallel gradient reduce-scatter/all-gather with the pipeline (DualPipe/ZeRO)")
    param_gather_kind: str = spec_field("ideal", choices=PARAM_GATHER_KINDS, doc="How the ZeRO-1/2 parameter all-gather after the optimizer step is overlapped while plan.overlap_dp_comm is true: 'ideal' (hidden whole: nothing charged); 'megatron_chained' (Megatron-LM core_r0.8.0 --overlap-param-gather, distrib_optimizer.py: the BF16 parameters gathered over the data-parallel ranks bucket by bucket, max(40M, 1M x DP) parameters a bucket taken from the model's end, the first bucket launched at the step's start (zero_grad) and each next one only once the forward reaches the module waiting on the one before (_finish_param_sync_helper), so the first forward waits on every gather its computation does not cover; pipeline ranks after the first hold one bucket (distributed_data_parallel.py), gathered from the step's start before their first forward; under interleaving each later model chunk is one bucket, its gather launched in the rank's first forward of the chunk before and waited for by its own first forward; twin.training.step.param_gather_release_s, later_chunk_gathers). Needs plan.overlap_grad_reduce (Megatron asserts it) and zero_stage 1 or 2")
    grad_reduce_dtype: str = spec_field("bf16", choices=GRAD_REDUCE_DTYPES, doc="Precision of the data-parallel gradient reduce-scatter after the pipeline (ZeRO 0-2): 'bf16' (an assumption: the V3 report does not say how gradients are sent); 'fp32' (Megatron-LM reduces BF16 training's gradients in FP32: arguments.py sets accumulate_allreduce_grads_in_fp32 for bf16; Llama 3 section 3.3.2: 'reduce-scatter gradients in FP32 across data parallel workers')")
    overlap_grad_reduce: bool = spec_field(False, doc="The data-parallel gradient reduce-scatter (ZeRO 0-2) runs bucket by bucket beside each rank's last backward, as its gradients become final (Megatron-LM --overlap-grad-reduce; Llama 3's FSDP reduces gradients asynchronously): only the part longer than that backward is exposed. False: it starts after the rank's last computation")
    grad_buckets: str = spec_field("every_chunk", choices=GRAD_BUCKETS, doc="Which model chunks plan.overlap_grad_reduce reduces bucket by bucket (needs it true; megatron needs zero_stage 0-1): 'every_chunk' (each rank's gradients as they become final in its last backward); 'megatron' (Megatron-LM core_r0.8.0: only pipeline rank 0's first model chunk is bucketed, distributed_data_parallel.py sets bucket_size None on pipeline ranks > 0 and training.py get_model passes disable_bucketing for model chunks after the first; every other chunk is one bucket, reduce-scattered once its last backward is done, the chunks one after another on the rank's communication stream; under interleaved-1f1b as Megatron's default --delay-grad-reduce runs it, every chunk's buckets launched after a backward, chunk c of pipeline rank r after the rank's backward number last(c) + r, rank 0's first chunk included; twin.training.step.dp_reduce_after_s, megatron_delays_grad_sync; and, as Megatron's DDP, its whole gradient buffer zeroed on the compute stream at the step's start, before the first forward and the first parameter all-gather: train_step's zero_grad_buffer, twin.training.step.grad_buffer_zero_s; each bucket prepared on the compute stream before its reduce-scatter, a NaN-check norm and the 1/DP scaling, Bucket.start_grad_sync: twin.training.step.megatron_grad_prep_s)")
    pp_grad_sync: str = spec_field("last_backward", choices=PP_GRAD_SYNCS, doc="When ZeRO-2 under pipeline parallelism reduce-scatters its gradients (needs zero_stage 2 and pp > 1): 'last_backward' (as FSDP2 under torch.distributed.pipelining: each backward accumulates unsharded in FP32, one reduce-scatter after a stage's last backward); 'every_backward' (FSDP with gradient sync on every backward, as the Llama 3 paper section 3.3.2 was read before s33pub: it 'shards optimizer states and gradients' and reduces gradients 'asynchronously'; Meta's ISCA'25 paper says its ZeRO-1/2 reduce-scatter once a stage instead: each (micro-batch, chunk)'s gradients reduce-scattered after its backward, queued on the rank's data-parallel link beside the pipeline without the compute waiting, accumulated sharded; the gradients waiting in the queue are counted at their joint peak with the saved activations; twin.training.step.grad_sync_queue)")
    pp_runtime: str = spec_field("dataflow", choices=PP_RUNTIMES, doc="How the pipeline's ranks are driven (pp > 1): 'dataflow' (each op starts once the rank's previous op is done and its inputs have arrived: Megatron-LM's p2p, DeepSeek's DualPipe, and torch.distributed.pipelining's Schedule1F1B, whose own loop fuses each op's receive with the previous op's send and so waits on nothing its inputs do not); 'torch_pipelining' (torch.distributed.pipelining as at PyTorch 1963fc8, as torchtitan runs it: 1f1b as dataflow; interleaved-1f1b through PipelineScheduleMulti's time-step table, each step's compute followed by one batched send/receive with the neighbours' ops of the same step, waited before the next step, so a rank's next op waits for the neighbours it exchanges with to finish that step's op: twin.core.schedules.torch_lockstep_needs). Other schedules are not modelled under 'torch_pipelining'")

    @property
    def held_comm_sms(self) -> int:
        """SMs held for communication: plan.comm_sms where given, else the default that follows
        the plan (EP_COMM_SMS_DEFAULT with expert parallelism, none without)."""
        if self.comm_sms is not None:
            return self.comm_sms
        return EP_COMM_SMS_DEFAULT if self.ep > 1 else 0


@dataclass(frozen=True)
class Workload:
    seq_len: int = spec_field(4096, unit="tokens", ge=1, le=MAX_SEQ_LEN, doc="Sequence length")
    global_batch_seqs: int = spec_field(15360, unit="sequences", ge=1, le=MAX_BATCH_SEQS, doc="Sequences per optimizer step (V3: 15,360 after the batch ramp)")
    causal: bool = spec_field(True, doc="Causal attention (only half the score matrix is computed)")
    routing_imbalance: float = spec_field(1.0, ge=1.0, le=MAX_IMBALANCE, doc="Tokens on the most loaded EP rank over the mean (1 = balanced, as in DeepSeek's profile)")

    @property
    def tokens_per_step(self) -> int:
        return self.seq_len * self.global_batch_seqs

"""The [serve] scenario section: a deployment plan for serving a model (`twin serve`).

A serving scenario has [model], [cluster] and [serve] only (twin.core.scenario tells it from a
training scenario by its [serve] table); GPU type and count come from its [cluster]. One *instance* is `ep` GPUs that together hold every routed
expert once (plus `redundant_experts` EPLB replicas); the cluster runs num_gpus / ep instances.
Inside an instance attention runs data-parallel over ep / tp groups of `tp` GPUs each
(`dp_attention`, DeepSeek's deployment) or tensor-parallel over the whole instance (tp == ep).

`batch` is the concurrency of one instance (requests decoding together). 0 sweeps `batch_sweep`
and reports the point of highest throughput that fits in memory and meets `max_tpot_s`
("concurrency MAX").
"""

from __future__ import annotations

from dataclasses import dataclass

from twin.core.errors import ScenarioError
from twin.core.fields import spec_field
from twin.core.specs import MAX_DEGREE, MAX_EXPERTS, MAX_GPUS, MAX_SEQ_LEN, MAX_SMS, serving_claims

SERVE_PRECISIONS = ("fp8", "bf16")
LOAD_MODELS = ("balanced", "zipf", "dirichlet", "measured")
A2A_KINDS = ("auto", "nvlink", "deepep_ll")
MAX_REQUESTS = 1_000_000   # concurrent requests of one instance
MAX_SWEEP = 64             # concurrencies swept
MAX_CLAIMS = 64            # claims compared against
MAX_RESERVED_BYTES = 1e15  # per-GPU runtime reserve (1 PB: far beyond any GPU's memory)
DEFAULT_SWEEP = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)


@dataclass(frozen=True)
class ServeSpec:
    """Deployment plan for `twin serve`: instance size and parallelism, precisions, concurrency,
    request lengths, overlap and all-to-all kind, expert-load model, speculative decoding."""

    tp: int = spec_field(1, unit="count", ge=1, le=MAX_DEGREE, doc="Attention tensor-parallel degree inside an instance (MLA's latent KV cache is replicated over TP ranks)")
    ep: int = spec_field(8, unit="count", ge=1, le=MAX_GPUS, doc="GPUs of one serving instance, over which the routed experts are spread (expert parallelism)")
    redundant_experts: int = spec_field(0, unit="count", ge=0, le=MAX_EXPERTS, doc="Extra EPLB replicas of hot experts per MoE layer (DeepSeek: 32 in prefill and decode)")
    eplb: bool = spec_field(True, doc="Place experts with EPLB (twin.moe.eplb.rebalance_experts) from the load model; false = contiguous placement")
    dp_attention: bool = spec_field(True, doc="Attention data-parallel over ep / tp groups (DeepSeek); false = attention tensor-parallel over the whole instance (tp must equal ep)")
    weight_precision: str = spec_field("fp8", choices=SERVE_PRECISIONS, doc="Precision of the matmul weights (embeddings, head, norms and router stay BF16)")
    fp8_gemm_curve: str = spec_field("fp8-rowwise", choices=("fp8-rowwise", "fp8"), doc="Calibrated FP8 GEMM curve standing for DeepGEMM: 'fp8-rowwise' with the HBM roofline reproduces DeepGEMM's published m=64 rows (H800) within ~15%; 'fp8' is the profile's cuBLAS 1x128/128x128 blockwise curve, ~5x slower than DeepGEMM at m=64")
    kv_precision: str = spec_field("bf16", choices=SERVE_PRECISIONS, doc="KV-cache precision (FP8: FlashMLA's FP8 latent with per-128 scales, RoPE key kept BF16)")
    batch: int = spec_field(0, unit="requests", ge=0, le=MAX_REQUESTS, doc="Concurrent requests per instance; 0 = sweep batch_sweep and report the best feasible point")
    batch_sweep: tuple[int, ...] = spec_field(DEFAULT_SWEEP, unit="requests", ge=1, le=MAX_REQUESTS, max_items=MAX_SWEEP, doc="Concurrencies per instance swept when batch = 0")
    input_len: int = spec_field(1024, unit="tokens", ge=1, le=MAX_SEQ_LEN, doc="Prompt length (ISL)")
    output_len: int = spec_field(1024, unit="tokens", ge=1, le=MAX_SEQ_LEN, doc="Generated tokens per request (OSL)")
    prefill_chunk_tokens: int = spec_field(16384, unit="tokens", ge=1, le=MAX_SEQ_LEN, doc="Prompt tokens per GPU per prefill forward (DeepSeek's prefill profile: 16K per GPU)")
    num_microbatches: int = spec_field(2, unit="count", ge=1, le=MAX_DEGREE, doc="Micro-batches overlapped so that one computes while the other's all-to-all runs (DeepSeek: 2)")
    decode_a2a_uses_sms: bool = spec_field(False, doc="Decode all-to-all occupies SMs (false: DeepEP low-latency kernels free all SMs after issuing RDMA)")
    prefill_comm_sms: int = spec_field(20, unit="count", ge=0, le=MAX_SMS, doc="SMs the prefill all-to-all (DeepEP normal kernels) takes from computation (V3 §3.2.2: 20 of 132)")
    a2a: str = spec_field("auto", choices=A2A_KINDS, doc="Decode all-to-all model: 'nvlink' (one node), 'deepep_ll' (DeepEP low-latency table), 'auto' = nvlink inside a node else deepep_ll")
    max_nodes_per_token: int = spec_field(4, unit="count", ge=1, le=MAX_GPUS, doc="Node-limited routing in prefill (V3: 4)")
    load_model: str = spec_field("balanced", choices=LOAD_MODELS, doc="Expert-load model (twin.moe.load) for per-rank loads and EPLB")
    load_param: float = spec_field(0.0, ge=0, doc="Zipf s or Dirichlet alpha of the load model (0 with 'zipf'/'dirichlet' means the twin.core.moe_specs defaults)")
    mtp_draft_tokens: int = spec_field(0, unit="count", ge=0, le=4, doc="Speculative tokens drafted per step by the MTP module (V3 §5.4.3 uses 1)")
    mtp_acceptance_frac: float = spec_field(0.85, ge=0, le=1, doc="Acceptance of each drafted token (V3 §5.4.3: 0.85-0.90)")
    disaggregated: bool = spec_field(False, doc="Prefill and decode run on separate instances (DeepSeek); false = one instance does both, so prompt work shares the GPU time")
    host_overhead_s: float = spec_field(0.0, unit="s", ge=0, doc="Host/scheduler time per decode step not hidden by CUDA graphs and overlap scheduling")
    runtime_reserved_bytes: float = spec_field(4e9, unit="bytes", ge=0, le=MAX_RESERVED_BYTES, doc="Per-GPU memory outside weights/KV/activations: CUDA context, GEMM workspaces, CUDA graphs, DeepEP buffers (assumption)")
    max_tpot_s: float = spec_field(0.0, unit="s", ge=0, doc="Latency SLO on time per output token when picking the best sweep point (0 = none)")
    claims: tuple[str, ...] = spec_field((), max_items=MAX_CLAIMS, doc="Claim ids of twin/data/serving_claims.toml to compare against")

    def check(self, path: str = "serve", source: str | None = None) -> None:
        if self.ep % self.tp:
            raise ScenarioError(f"{path}.tp", self.tp, f"a divisor of {path}.ep = {self.ep}", source)
        if not self.dp_attention and self.tp != self.ep:
            raise ScenarioError(f"{path}.tp", self.tp, f"equal to {path}.ep = {self.ep} when {path}.dp_attention = false", source)
        if self.redundant_experts and not self.eplb:
            raise ScenarioError(f"{path}.redundant_experts", self.redundant_experts, f"0 when {path}.eplb = false (replicas are placed by EPLB)", source)
        if not self.batch_sweep:
            raise ScenarioError(f"{path}.batch_sweep", list(self.batch_sweep), "a non-empty list of integers >= 1", source)
        known = serving_claims()
        for i, cid in enumerate(self.claims):
            if cid not in known:
                raise ScenarioError(f"{path}.claims[{i}]", cid, "one of " + ", ".join(sorted(known)), source)

    def check_against(self, model, gpu, num_gpus: int, source: str | None = None) -> None:
        """Invariants that need the model and the cluster; each error prints the numbers."""
        if num_gpus % self.ep:
            raise ScenarioError("serve.ep", self.ep, f"a divisor of cluster.num_gpus = {num_gpus}", source)
        if model.num_heads % self.tp:
            raise ScenarioError("serve.tp", self.tp, f"a divisor of model.num_heads = {model.num_heads}", source)
        if self.tp > gpu.gpus_per_node:
            raise ScenarioError("serve.tp", self.tp, f"<= GPUs per node = {gpu.gpus_per_node} (TP stays inside a node)", source)
        if self.prefill_comm_sms >= gpu.num_sms:
            raise ScenarioError("serve.prefill_comm_sms", self.prefill_comm_sms, f"< the GPU's {gpu.num_sms} SMs", source)
        if model.is_moe:
            slots = model.num_routed_experts + self.redundant_experts
            if slots % self.ep:
                raise ScenarioError("serve.ep", self.ep,
                                    f"a divisor of routed + redundant experts = {model.num_routed_experts} + {self.redundant_experts} = {slots}", source)
        elif self.redundant_experts:
            raise ScenarioError("serve.redundant_experts", self.redundant_experts, "0 for a dense model", source)
        if self.mtp_draft_tokens > model.num_mtp_modules and model.num_mtp_modules == 0:
            raise ScenarioError("serve.mtp_draft_tokens", self.mtp_draft_tokens, f"0 for a model without MTP modules ({model.name})", source)
        if self.a2a == "nvlink" and self.ep > gpu.gpus_per_node:
            raise ScenarioError("serve.a2a", self.a2a, f"'auto' or 'deepep_ll' when serve.ep = {self.ep} spans more than one {gpu.gpus_per_node}-GPU node", source)

    @property
    def attention_dp(self) -> int:
        """Attention groups per instance."""
        return self.ep // self.tp if self.dp_attention else 1

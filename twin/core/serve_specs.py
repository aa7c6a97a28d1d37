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

import dataclasses
from dataclasses import dataclass

from twin.core.errors import ScenarioError
from twin.core.fields import spec_field
from twin.core.specs import MAX_DEGREE, MAX_EXPERTS, MAX_GPUS, MAX_SEQ_LEN, MAX_SMS, serving_claims

SERVE_PRECISIONS = ("fp8", "bf16")
LOAD_MODELS = ("balanced", "zipf", "dirichlet", "measured")
A2A_KINDS = ("auto", "nvlink", "deepep_ll")
FLASHMLA_KERNELS = ("2504", "2502")   # FlashMLA releases with published H800 figures (twin/data/serving_claims.toml [flashmla])
# decode's routed-expert grouped GEMM kernels: torch's (the profile's grouped curves) and DeepGEMM's masked
# kernel (twin/costs/masked_gemm.py, measured by s22dg)
ROUTED_GEMM_KERNELS = ("torch_grouped_mm", "deepgemm_masked")
MICROBATCH_POLICIES = ("auto", "always")
KV_ADMISSION = ("optimistic", "reserve")
DP_ROUTING = ("balanced", "round_robin")
ARRIVALS = ("poisson", "gamma", "closed", "trace")
LENGTH_DISTS = ("fixed", "uniform", "lognormal")
MAX_SIM_REQUESTS = 2_000_000  # requests of one simulation (100,000 run in well under a minute)
MAX_RATE = 1e7                # requests per second
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
    flashmla_kernel: str = spec_field("2504", choices=FLASHMLA_KERNELS, doc="FlashMLA decode kernel whose published H800 compute-bound figure prices the MLA core: '2504' the April 2025 kernel (660 TFLOPS), '2502' the first release (580 TFLOPS; DeepSeek's Feb-Mar 2025 profiles and production day ran it)")
    routed_gemm_kernel: str = spec_field("torch_grouped_mm", choices=ROUTED_GEMM_KERNELS, doc="Kernel of the routed experts' grouped GEMMs in decode: 'torch_grouped_mm' (torch._grouped_mm / _scaled_grouped_mm: the profile's grouped curves and row tile), 'deepgemm_masked' (DeepGEMM's masked grouped FP8 GEMM of Feb 2025, twin/costs/masked_gemm.py fitted on s22dg's records; DeepSeek's decode ran it: FP8 weights only)")
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
    # --- engine knobs of the request-level simulation (twin.serving.engine) ---
    moe_tp: int = spec_field(1, unit="count", ge=1, le=MAX_DEGREE, doc="Tensor-parallel degree of each routed expert inside the instance (MoE by TP: moe_tp = ep; by EP: 1; both: between). Experts are spread over ep / moe_tp groups")
    max_batch_tokens: int = spec_field(0, unit="tokens", ge=0, le=MAX_SEQ_LEN, doc="Prompt tokens one attention group takes into an iteration (chunked-prefill size: SGLang --chunked-prefill-size, vLLM max_num_batched_tokens); 0 = prefill_chunk_tokens x tp")
    mixed_batches: bool = spec_field(True, doc="Co-located: decode requests advance in the same iteration as a prefill chunk (vLLM V1, SGLang --enable-mixed-chunk); false = an iteration with prompt work stalls decode")
    microbatch_policy: str = spec_field("auto", choices=MICROBATCH_POLICIES, doc="Two-batch overlap (num_microbatches > 1): 'auto' splits an iteration only where it is faster (the engine's threshold; splitting re-reads weights per micro-batch); 'always' splits every iteration")
    cuda_graphs: bool = spec_field(True, doc="Decode iterations replay CUDA graphs (no per-kernel launch cost) up to cuda_graph_max_batch requests per attention group; false or beyond: eager launches")
    cuda_graph_max_batch: int = spec_field(512, unit="requests", ge=0, le=MAX_REQUESTS, doc="Largest decode batch per attention group captured in a CUDA graph (vLLM: 512, SGLang default 160-256)")
    kernel_launch_s: float = spec_field(5e-6, unit="s", ge=0, le=1.0, doc="Host time per eager kernel launch (assumption: a few microseconds, NVIDIA 'Getting started with CUDA Graphs')")
    kernels_per_layer: int = spec_field(24, unit="count", ge=0, le=10_000, doc="Kernels launched per transformer layer in an eager iteration (assumption: MLA ~12, MoE ~12)")
    dp_routing: str = spec_field("balanced", choices=DP_ROUTING, doc="Requests over an instance's attention-DP groups: 'balanced' = the groups taken as evenly loaded (DeepSeek balances them), one queue timed at the instance's total; 'round_robin' = request i to group i mod dp (a closed-loop client stays on its group), each group with its own queue, running cap (batch / dp), KV share and token budget, the groups stepping in lockstep at the busiest group's pace (real/serve's EP ranks)")
    token_budget_counts_decode: bool = spec_field(False, doc="The per-iteration token budget (max_batch_tokens) also counts the decode rows, prompts taking what they leave (vLLM's max_num_batched_tokens, real/serve); false = prompts alone")
    graph_batch_buckets: tuple[int, ...] = spec_field((), unit="requests", ge=1, le=MAX_REQUESTS, max_items=MAX_SWEEP, doc="Decode batches per attention group captured as CUDA graphs: a decode-only iteration runs the smallest bucket >= its batch, the rest padding rows (empty = every batch up to cuda_graph_max_batch, no padding)")
    graph_page_buckets: tuple[int, ...] = spec_field((), unit="pages", ge=1, le=MAX_SEQ_LEN, max_items=MAX_SWEEP, doc="Page-table widths captured as CUDA graphs (real/serve): the longest context's pages round up to the next bucket; beyond the last, eager (empty = no width limit)")
    kv_page_size: int = spec_field(1, unit="tokens", ge=1, le=MAX_SEQ_LEN, doc="Tokens per KV-cache page (page-table width = pages of the longest context)")
    engine_costs: str = spec_field("", doc="Engine costs beyond the kernels, by name in twin/data/serve_engines.toml (host time per iteration, eager launches, per-chunk attention, padded decode attention, fitted on that engine's fit-split load runs); '' = none (kernel_launch_s x kernels_per_layer for eager iterations)")
    host_launch_s: float = spec_field(0.0, unit="s", ge=0, le=1.0, doc="The serving host's measured speed: host seconds per small kernel launch (real/serve/hostspeed.py launch_s, measured beside the run); the engine table's host terms scale as (host_launch_s / its fit host's host_probe_launch_s) ^ host_probe_exponent (serve_engines.toml); 0 = the fit host's")
    engine_timing: bool = spec_field(False, doc="The engine ran with real/serve --timing (its per-iteration instrument between iterations; set from a record's per-iteration timing columns): under twin.serving.timing.ADOPT_TIMING_INSTRUMENT its iterations pay the engine table's timing_loop_s; false = the engine alone (every deployment)")
    host_stall_rate_per_s: float = spec_field(0.0, unit="1/s", ge=0, le=1e4, doc="The serving host's measured pauses: pauses per second of eager launching (real/serve/hostspeed.py pause_probe, measured beside the run); under twin.serving.engine.ADOPT_HOST_STALLS each eager iteration of d seconds pays Poisson(rate x d) pauses drawn (traffic.seed) from host_stall_sizes_s; 0 = none")
    host_stall_sizes_s: tuple[float, ...] = spec_field((), unit="s", ge=0, le=10.0, max_items=10_000, doc="The host's measured pause sizes (each a launch chain's excess over the probe's median chain), drawn with equal weight for each pause host_stall_rate_per_s gives")
    iteration_spread: bool = spec_field(True, doc="With engine_costs: each iteration's time is the fitted mean times a ratio drawn (traffic.seed) from that engine's measured spread (serve_engines.toml [<engine>.spread]: measured / predicted time of its fit iterations, by kind and predicted duration); false = the deterministic mean")
    kv_admission: str = spec_field("optimistic", choices=KV_ADMISSION, doc="KV admission: 'optimistic' admits a prompt when its tokens fit and preempts (recompute) the newest request when the cache fills (vLLM); 'reserve' also reserves every admitted request's full output (TensorRT-LLM GUARANTEED_NO_EVICT), never preempting")
    kv_capacity_tokens: int = spec_field(0, unit="tokens", ge=0, le=10**12, doc="KV tokens one instance holds, when the engine reports it (vLLM's GPU blocks x block size, a paged cache's pages x page size); 0 = from memory (what weights, activations and the reserve leave, times kv_memory_frac)")
    kv_memory_frac: float = spec_field(1.0, gt=0, le=1, doc="Share of the memory left after weights, activations and the runtime reserve given to the KV cache (vLLM gpu_memory_utilization, SGLang mem_fraction_static)")
    prefill_ep: int = spec_field(0, unit="count", ge=0, le=MAX_GPUS, doc="Disaggregated: GPUs of one prefill instance (0 = ep)")
    prefill_instances: int = spec_field(0, unit="count", ge=0, le=MAX_GPUS, doc="Disaggregated: prefill instances; their GPUs come out of cluster.num_gpus, the rest are decode instances of ep GPUs. 0 = the prefill pool is not simulated (each prompt is prefilled alone at once on a prefill instance of ep GPUs)")
    kv_transfer: bool = spec_field(True, doc="Disaggregated: a request's KV moves from its prefill GPU to its decode GPU over the scale-out link (one GPU's NIC) before it decodes")

    def check(self, path: str = "serve", source: str | None = None) -> None:
        if self.ep % self.tp:
            raise ScenarioError(f"{path}.tp", self.tp, f"a divisor of {path}.ep = {self.ep}", source)
        if not self.dp_attention and self.tp != self.ep:
            raise ScenarioError(f"{path}.tp", self.tp, f"equal to {path}.ep = {self.ep} when {path}.dp_attention = false", source)
        if self.redundant_experts and not self.eplb:
            raise ScenarioError(f"{path}.redundant_experts", self.redundant_experts, f"0 when {path}.eplb = false (replicas are placed by EPLB)", source)
        if not self.batch_sweep:
            raise ScenarioError(f"{path}.batch_sweep", list(self.batch_sweep), "a non-empty list of integers >= 1", source)
        if self.routed_gemm_kernel == "deepgemm_masked" and self.weight_precision != "fp8":
            raise ScenarioError(f"{path}.routed_gemm_kernel", self.routed_gemm_kernel,
                                f"'torch_grouped_mm' unless {path}.weight_precision = 'fp8' (DeepGEMM's kernel is FP8)", source)
        known = serving_claims()
        for i, cid in enumerate(self.claims):
            if cid not in known:
                raise ScenarioError(f"{path}.claims[{i}]", cid, "one of " + ", ".join(sorted(known)), source)

    def check_against(self, model, gpu, num_gpus: int, source: str | None = None) -> None:
        """Invariants that need the model and the cluster; each error prints the numbers."""
        if self.prefill_instances and not self.disaggregated:
            raise ScenarioError("serve.prefill_instances", self.prefill_instances, "0 unless serve.disaggregated = true", source)
        prefill_gpus = self.prefill_instances * self.prefill_gpus
        if prefill_gpus >= num_gpus:
            raise ScenarioError("serve.prefill_instances", self.prefill_instances,
                                f"fewer than cluster.num_gpus = {num_gpus} GPUs for prefill ({self.prefill_instances} x {self.prefill_gpus} = {prefill_gpus}), leaving decode GPUs", source)
        if (num_gpus - prefill_gpus) % self.ep:
            what = (f"the decode GPUs = cluster.num_gpus - prefill GPUs = {num_gpus} - {prefill_gpus}" if prefill_gpus
                    else f"cluster.num_gpus = {num_gpus}")
            raise ScenarioError("serve.ep", self.ep, f"a divisor of {what}", source)
        if self.ep % self.moe_tp:
            raise ScenarioError("serve.moe_tp", self.moe_tp, f"a divisor of serve.ep = {self.ep}", source)
        if self.prefill_ep and self.prefill_ep % self.tp:
            raise ScenarioError("serve.prefill_ep", self.prefill_ep, f"a multiple of serve.tp = {self.tp}", source)
        if model.num_heads % self.tp:
            raise ScenarioError("serve.tp", self.tp, f"a divisor of model.num_heads = {model.num_heads}", source)
        if self.tp > 2 * gpu.gpus_per_node:
            raise ScenarioError("serve.tp", self.tp, f"<= two nodes' GPUs = {2 * gpu.gpus_per_node} (TP16 spans two nodes at most)", source)
        if self.prefill_comm_sms >= gpu.num_sms:
            raise ScenarioError("serve.prefill_comm_sms", self.prefill_comm_sms, f"< the GPU's {gpu.num_sms} SMs", source)
        if model.is_moe:
            slots = model.num_routed_experts + self.redundant_experts
            if self.prefill_ep and slots % self.prefill_ep:
                raise ScenarioError("serve.prefill_ep", self.prefill_ep,
                                    f"a divisor of routed + redundant experts = {slots}", source)
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
    def prefill_gpus(self) -> int:
        """GPUs of one prefill instance (disaggregated)."""
        return self.prefill_ep or self.ep

    @property
    def token_budget(self) -> int:
        """Prompt tokens one attention group takes into an iteration."""
        return self.max_batch_tokens or self.prefill_chunk_tokens * self.tp

    @property
    def attention_dp(self) -> int:
        """Attention groups per instance."""
        return self.ep // self.tp if self.dp_attention else 1


@dataclass(frozen=True)
class TrafficSpec:
    """The load of a request-level serving simulation ([traffic]): how requests arrive, their lengths,
    their prefix-cache hits and the latency SLO. Lengths default to serve.input_len / output_len."""

    arrival: str = spec_field("closed", choices=ARRIVALS, doc="Arrivals: 'poisson' at rate_per_s; 'gamma' (bursty) at rate_per_s with inter-arrival CV arrival_cv; 'closed' = `concurrency` clients, each sending its next request when the last one finishes; 'trace' = trace_csv")
    rate_per_s: float = spec_field(1.0, unit="requests/s", gt=0, le=MAX_RATE, doc="Mean arrival rate of the whole cluster (poisson, gamma)")
    arrival_cv: float = spec_field(2.0, ge=0.05, le=100, doc="Coefficient of variation of gamma inter-arrival times (1 = Poisson; >1 bursty)")
    concurrency: int = spec_field(0, unit="requests", ge=0, le=MAX_REQUESTS, doc="Closed loop: clients in flight over the whole cluster (0 = serve.batch x instances, or the memory limit when serve.batch = 0)")
    target_tpot_s: float = spec_field(0.0, unit="s", ge=0, le=1000, doc="Closed loop with concurrency = 0: the largest concurrency per instance whose decode step at the mean context (input_len + output_len / 2) gives this time per output token, within memory (DeepSeek's service: 20-22 tokens/s per user); 0 = the memory limit")
    trace_csv: str = spec_field("", doc="CSV trace (arrival): columns arrival_s, input_len, output_len and optionally cached_len; one row per request. A relative path in a scenario file is read from that file's folder; given by --set, from the working directory")
    num_requests: int = spec_field(0, unit="requests", ge=0, le=MAX_SIM_REQUESTS, doc="Requests simulated (`twin serve --requests N`); 0 = 2,000, a closed loop at least 2 x its concurrency (the steady window then spans the second wave), a trace every row")
    input_dist: str = spec_field("fixed", choices=LENGTH_DISTS, doc="Prompt-length distribution around serve.input_len (mean): fixed, uniform over mean x (1 +- sqrt(3) cv), lognormal with CV input_cv")
    input_cv: float = spec_field(0.5, ge=0, le=10, doc="Coefficient of variation of prompt lengths (uniform, lognormal)")
    output_dist: str = spec_field("fixed", choices=LENGTH_DISTS, doc="Output-length distribution around serve.output_len (mean)")
    output_cv: float = spec_field(0.5, ge=0, le=10, doc="Coefficient of variation of output lengths (uniform, lognormal)")
    prefix_hit_frac: float = spec_field(0.0, ge=0, le=0.999, doc="Share of each prompt found in the prefix/KV cache (not recomputed; DeepSeek's service: 0.563 of input tokens hit its on-disk cache)")
    shared_prefix_tokens: int = spec_field(0, unit="tokens", ge=0, le=MAX_SEQ_LEN, doc="Tokens at the start of every prompt shared within its prefix group (a system prompt): computed once per instance, then hits")
    prefix_groups: int = spec_field(1, unit="count", ge=1, le=MAX_REQUESTS, doc="Distinct shared prefixes; request i uses prefix i mod prefix_groups")
    slo_ttft_s: float = spec_field(2.0, unit="s", gt=0, doc="SLO on time to first token, for goodput")
    slo_tpot_s: float = spec_field(0.1, unit="s", gt=0, doc="SLO on time per output token, for goodput")
    seed: int = spec_field(0, unit="count", ge=0, le=2**31 - 1, doc="Seed of arrivals and lengths")
    trace_iterations: int = spec_field(20000, unit="count", ge=0, le=1_000_000, doc="Iterations kept for the Chrome trace (the first ones)")

    def check(self, path: str = "traffic", source: str | None = None) -> None:
        if self.arrival == "trace" and not self.trace_csv:
            raise ScenarioError(f"{path}.trace_csv", self.trace_csv, f"a CSV path when {path}.arrival = 'trace'", source)
        # a rate or burstiness the arrivals never read is refused, not ignored: a sweep of
        # traffic.rate_per_s under the default closed loop gave the same figures at every rate (until s20ux)
        if self.rate_per_s != TRAFFIC_DEFAULTS["rate_per_s"] and self.arrival not in ("poisson", "gamma"):
            raise ScenarioError(f"{path}.rate_per_s", self.rate_per_s, f"{TRAFFIC_DEFAULTS['rate_per_s']:g} (the default) when "
                                f"{path}.arrival = {self.arrival!r} (only 'poisson' and 'gamma' arrivals have a rate: "
                                f"set {path}.arrival)", source)
        if self.arrival_cv != TRAFFIC_DEFAULTS["arrival_cv"] and self.arrival != "gamma":
            raise ScenarioError(f"{path}.arrival_cv", self.arrival_cv, f"{TRAFFIC_DEFAULTS['arrival_cv']:g} (the default) when "
                                f"{path}.arrival = {self.arrival!r} (only 'gamma' arrivals are bursty)", source)


# the defaults TrafficSpec.check compares with (a field left at its default is not a request)
TRAFFIC_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrafficSpec)}

"""What the serving twin returns: typed, unit-suffixed, JSON through twin.core.results.to_json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class SweepPoint:
    """One concurrency of the sweep: every instance serving `batch` requests at once."""

    batch: int
    feasible: bool
    output_tokens_per_s: float | None = None
    output_tokens_per_s_per_gpu: float | None = None
    output_tokens_per_s_per_node: float | None = None
    output_tokens_per_s_per_request: float | None = None
    tpot_s: float | None = None
    decode_step_s: float | None = None
    memory_per_gpu_bytes: float | None = None
    kv_cache_per_gpu_bytes: float | None = None
    rows_frac: float | None = None
    mla_core_bound: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class ServeClaim:
    """A published serving figure beside the twin's prediction (never fitted)."""

    id: str
    metric: str
    claimed: float
    predicted: float | None
    rel_error: float | None
    source: str
    conditions_note: str
    compared: bool = True   # the figure describes this run (model, GPU type, the claim's run conditions): twin.serving.run.claim_compared


@dataclass(frozen=True)
class Latency:
    """A latency distribution over requests, in seconds."""

    mean: float
    p50: float
    p90: float
    p99: float
    max: float


@dataclass(frozen=True)
class RequestSimResult:
    """What the request-level simulation measured (twin.serving.simulate): throughput in the steady
    window, latency distributions, goodput, cost, memory, KV and what the engine did."""

    simulated_requests: int
    arrival: str
    concurrency: int
    decode_instances: int
    decode_gpus: int
    prefill_gpus: int
    output_tokens_per_s: float
    output_tokens_per_s_per_gpu: float
    output_tokens_per_s_per_node: float
    input_tokens_per_s: float
    input_tokens_per_s_per_gpu: float
    input_tokens_per_s_per_node: float
    input_computed_tokens_per_s: float
    requests_per_s: float
    goodput_requests_per_s: float
    slo_attained_frac: float
    ttft_s: Latency
    tpot_s: Latency
    e2e_s: Latency
    output_tokens_per_s_per_request: float
    usd_per_million_output_tokens: float
    usd_per_million_input_tokens: float
    memory_per_gpu_bytes: float
    memory_breakdown_bytes: dict[str, float]
    kv_capacity_tokens_per_instance: float
    kv_peak_tokens_per_instance: float
    preemptions: int
    iterations: int
    grid_points: int
    prefill_time_frac: float
    kv_transfer_bytes: float
    makespan_s: float
    mean_in_system: float
    output_tokens_total: float
    decode_token_steps: float
    first_tokens: int
    steady: dict[str, float]
    ttft_cdf_s: list[float]
    tpot_cdf_s: list[float]
    e2e_cdf_s: list[float]
    requests: dict[str, Any] = field(default=None, metadata={"json": False})
    trace: tuple = field(default=(), metadata={"json": False})

    def per_request(self) -> dict[str, Any]:
        """Per-request columns (numpy arrays, in request order) as a load generator records them,
        with ttft_s, tpot_s (NaN for one-token outputs) and e2e_s."""
        r = dict(self.requests)
        out = r["output_len"].astype(float)
        r["ttft_s"] = r["first_token_s"] - r["arrival_s"]
        r["tpot_s"] = (r["finish_s"] - r["first_token_s"]) / (out - 1).clip(min=1) + 0 * out
        r["tpot_s"][out <= 1] = float("nan")
        r["e2e_s"] = r["finish_s"] - r["arrival_s"]
        return r


@dataclass(frozen=True)
class ServeResult:
    """A deployment under its traffic. The headline (throughput, latency percentiles, goodput,
    memory, cost) is the request-level simulation's (`simulation`); `batch`, `tpot_s`, `ttft_s`,
    `prefill`, `decode` and `sweep` are the analytic sweep over concurrency (no queueing), kept as
    the throughput-against-latency curve."""

    scenario: str
    model: str
    gpu: str
    gpu_name: str
    num_gpus: int
    instance_gpus: int
    instances: int
    profile: dict[str, Any]
    # --- the request simulation (headline)
    simulated_requests: int
    output_tokens_per_s: float
    output_tokens_per_s_per_gpu: float
    output_tokens_per_s_per_node: float
    input_tokens_per_s: float
    input_tokens_per_s_per_gpu: float
    input_tokens_per_s_per_node: float
    ttft_p50_s: float
    ttft_p90_s: float
    ttft_p99_s: float
    tpot_p50_s: float
    tpot_p90_s: float
    tpot_p99_s: float
    e2e_p50_s: float
    e2e_p90_s: float
    e2e_p99_s: float
    goodput_requests_per_s: float
    usd_per_million_output_tokens: float
    usd_per_million_input_tokens: float
    memory_per_gpu_bytes: float
    memory_breakdown_bytes: dict[str, float]
    simulation: RequestSimResult
    # --- the analytic sweep (every instance at a fixed concurrency, no queueing)
    batch: int
    max_batch_by_memory: int
    tpot_s: float
    ttft_s: float
    analytic_output_tokens_per_s_per_node: float
    prefill: dict[str, float | dict[str, float]]   # per_microbatch_groups_s: seconds by op group
    decode: dict[str, Any]
    weight_bytes: dict[str, float]
    kv_bytes_per_token: float
    sweep: tuple[SweepPoint, ...]
    claims: tuple[ServeClaim, ...]

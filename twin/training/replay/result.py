"""What a replay returns: typed, unit-suffixed, JSON through twin.core.results.to_json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from twin.training.results import StepResult


@dataclass(frozen=True)
class Band:
    """P10-P90 (and P50 and the base value where propagated) of one figure."""

    p10: float
    p90: float
    p50: float | None = None
    base: float | None = None


@dataclass(frozen=True)
class StageResult:
    """One training stage: its plan, steps, wall time, GPU-hours, cost and energy (None where the
    stage could not be simulated: `plan_note` says why)."""

    name: str
    group: str
    tokens: float
    seq_len: int
    global_batch_seqs: int
    feasible: bool
    plan_note: str
    source: str
    overhead_factor: float
    ramp_note: str
    claim_id: str | None = None
    claimed_gpu_hours: float | None = None
    group_claimed_gpu_hours: float | None = None
    steps: float | None = None
    plan: dict[str, Any] | None = None
    dp: int | None = None
    num_gpus: int | None = None
    step_time_s: float | None = None
    bubble_frac: float | None = None
    memory_per_gpu_bytes: float | None = None
    wall_s: float | None = None
    wall_days: float | None = None
    gpu_hours: float | None = None
    gpu_hours_goodput: float | None = None
    wall_days_goodput: float | None = None
    ettr_frac: float | None = None
    tokens_per_s_per_gpu: float | None = None
    mfu_frac: float | None = None
    cost_usd: float | None = None
    cost_usd_goodput: float | None = None
    energy_kwh: float | None = None
    energy_kwh_goodput: float | None = None
    gpu_power_w: float | None = None
    facility_power_w: float | None = None
    carbon_kg: float | None = None
    rl: dict[str, float] | None = None   # a GRPO stage's step by part: rollout, forward passes, update (seconds)
    goodput: dict[str, Any] | None = None


@dataclass(frozen=True)
class GroupResult:
    """Stages that share a published figure (e.g. both context-extension stages), summed."""

    gpu_hours: float
    wall_s: float
    tokens: float
    feasible: bool
    gpu_seconds: float
    cost_usd: float
    wall_days: float
    gpu_hours_per_trillion: float | None
    days_per_trillion: float | None
    tokens_per_s_per_gpu: float | None
    mfu_frac: float | None


@dataclass(frozen=True)
class ClaimComparison:
    """A published training figure beside the twin's prediction (compared, never fitted)."""

    id: str
    statement: str
    claimed: float
    predicted: float | None
    rel_error: float | None
    unit: str
    status: str
    source: str
    band: Band | None = None


@dataclass(frozen=True)
class Sensitivity:
    """The totals with one uncertain input at its P10 and at its P90 (the tornado)."""

    input: str
    label: str
    low_value: float
    high_value: float
    total_gpu_hours_low: float
    total_gpu_hours_high: float
    total_cost_usd_low: float
    total_cost_usd_high: float
    total_energy_kwh_low: float
    total_energy_kwh_high: float


@dataclass(frozen=True)
class UncertainInput:
    """An uncertain input: lognormal (median 1, sigma a) or uniform on [a, b]."""

    name: str
    label: str
    dist: str
    a: float
    b: float
    base: float


@dataclass(frozen=True)
class Uncertainty:
    band: dict[str, Band | None]
    sensitivity: tuple[Sensitivity, ...]
    method: str
    num_samples: int
    inputs: tuple[UncertainInput, ...]


@dataclass(frozen=True)
class SizePoint:
    """The run's cost at another cluster size (plans re-resolved, DP scaled)."""

    num_gpus: int
    feasible: bool
    gpu_hours: float | None = None
    wall_days: float | None = None
    cost_usd: float | None = None
    reason: str = ""


@dataclass(frozen=True)
class ReplayResult:
    """A whole training run, stage by stage: GPU-hours, days, cost, energy, goodput, bands,
    and the published figures beside them."""

    scenario_name: str
    gpu: str
    num_gpus: int
    complete: bool
    total_gpu_hours: float
    total_gpu_hours_ideal: float
    total_gpu_hours_goodput: float
    total_wall_days: float
    total_wall_days_goodput: float
    total_tokens: float
    price_usd_per_gpu_hour: float
    total_cost_usd: float
    total_cost_usd_goodput: float
    total_energy_kwh: float
    total_energy_kwh_goodput: float
    electricity_cost_usd: float
    total_carbon_kg: float | None
    stages: tuple[StageResult, ...]
    groups: dict[str, GroupResult]
    claims: tuple[ClaimComparison, ...]
    claims_describe_run: bool     # the published figures describe this run (else: context, no error)
    band: dict[str, Band | None]
    uncertainty: Uncertainty | None
    size_sweep: tuple[SizePoint, ...]
    gap_drivers: tuple[str, ...]
    runtime: dict[str, float]
    provenance: dict[str, Any]
    # the first feasible stage's full-batch step with its event log, for the Gantt chart
    gantt_step: StepResult | None = field(default=None, repr=False, metadata={"json": False})


def _band(b: dict | None) -> Band | None:
    return None if b is None else Band(**b)


def typed(result: dict, gantt_step: StepResult | None) -> ReplayResult:
    """The replay's working dictionaries as a ReplayResult (the one place their keys are named)."""
    u = result.get("uncertainty")
    uncertainty = None if u is None else Uncertainty(
        band={k: _band(v) for k, v in u["band"].items()},
        sensitivity=tuple(Sensitivity(**s) for s in u["sensitivity"]),
        method=u["method"], num_samples=u["num_samples"],
        inputs=tuple(UncertainInput(**i) for i in u["inputs"]))
    scalars = {k: v for k, v in result.items()
               if k not in ("stages", "groups", "claims", "band", "uncertainty", "size_sweep", "gap_drivers")}
    return ReplayResult(
        **scalars,
        stages=tuple(StageResult(**s) for s in result["stages"]),
        groups={k: GroupResult(**g) for k, g in result["groups"].items()},
        claims=tuple(ClaimComparison(**{**c, "band": _band(c.get("band"))}) for c in result["claims"]),
        band={k: _band(v) for k, v in result["band"].items()},
        uncertainty=uncertainty,
        size_sweep=tuple(SizePoint(**p) for p in result["size_sweep"]),
        gap_drivers=tuple(result["gap_drivers"]),
        gantt_step=gantt_step)

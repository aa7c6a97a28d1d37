"""What a plan search returns: typed, unit-suffixed, JSON through twin.core.results.to_json."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlanRow:
    """One candidate: its plan, and either its step, run length and cost, or why it can't run."""

    label: str
    gpu: str
    num_gpus: int
    pp: int
    ep: int
    tp: int
    schedule: str
    micro_batch_seqs: int
    feasible: bool
    reason: str = ""
    step_time_s: float | None = None
    mfu_frac: float | None = None
    tokens_per_s_per_gpu: float | None = None
    memory_per_gpu_bytes: float | None = None
    wall_days: float | None = None
    gpu_hours: float | None = None
    cost_usd: float | None = None     # None where the GPU type has no price


@dataclass(frozen=True)
class PlanResult:
    """The candidates ranked: the cheapest that meets the deadline, the fastest, and why the others failed."""

    tokens: float
    deadline_days: float
    num_candidates: int
    num_feasible: int
    num_meeting_deadline: int
    best: PlanRow | None
    fastest: PlanRow | None
    ranked: tuple[PlanRow, ...]
    infeasible_reasons: dict[str, int]
    rows: tuple[PlanRow, ...]

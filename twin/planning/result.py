"""What a plan search takes (candidates) and returns: typed, unit-suffixed, JSON through
twin.core.results.to_json."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    gpu: str
    num_gpus: int
    pp: int
    ep: int
    tp: int
    schedule: str
    micro_batch_seqs: int

    def overrides(self) -> list[str]:
        return [f"cluster.gpu='{self.gpu}'", f"cluster.num_gpus={self.num_gpus}", f"plan.pp={self.pp}",
                f"plan.ep={self.ep}", f"plan.tp={self.tp}", f"plan.schedule='{self.schedule}'",
                f"plan.micro_batch_seqs={self.micro_batch_seqs}"]

    def plan_label(self) -> str:
        return (f"{self.num_gpus}x{self.gpu} TP{self.tp} PP{self.pp} EP{self.ep} {self.schedule} "
                f"mb{self.micro_batch_seqs}")


@dataclass(frozen=True)
class PlanRow(Candidate):
    """One candidate: its plan, and either its step, run length and cost, or why it can't run."""

    label: str
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

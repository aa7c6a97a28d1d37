"""What a plan search returns: typed, unit-suffixed, JSON through twin.core.results.to_json."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# a row's status, in the order a candidate passes them
INVALID = "invalid"          # the loader's checks refuse it (degrees that don't divide, ...)
INFEASIBLE = "infeasible"    # valid, but it does not fit in memory
SCREENED = "screened"        # fits; its figures are the closed-form screen's
SIMULATED = "simulated"      # fits; its figures are the step simulator's

CHEAPEST, FASTEST = "cheapest within the deadline", "fastest within the budget"


def reason_kind(reason: str) -> str:
    """Group failure reasons: 'invalid: <field>' for loader errors, else the reason without its
    numbers ('out of memory on pipeline rank 0: needs ...' -> 'out of memory')."""
    if reason.startswith("invalid: "):
        return "invalid: " + reason[len("invalid: "):].split(" ")[0].rstrip(":")
    return reason.split(" on pipeline")[0]


@dataclass(frozen=True)
class PlanRow:
    """One candidate: its cluster and plan, and either its step, run length and cost, or why it can't run."""

    candidate_id: str
    label: str
    gpu: str
    num_gpus: int
    plan: dict[str, Any]          # ParallelPlan field -> value, for every plan axis of the search
    status: str
    feasible: bool
    reason: str = ""
    screen_step_time_s: float | None = None
    step_time_s: float | None = None       # the simulator's where status is 'simulated', else the screen's
    mfu_frac: float | None = None
    tokens_per_s_per_gpu: float | None = None
    memory_per_gpu_bytes: float | None = None
    wall_days: float | None = None         # compute days: the steps alone, no failure
    gpu_hours: float | None = None         # of the compute days
    cost_usd: float | None = None          # of the compute days; None where the GPU type has no price
    # with the expected failure downtime of the plan's cluster size (twin.training.failures.job_goodput,
    # as `twin replay` adds it): what the deadline, the budget, the ranking and the front use (s23ettr)
    ettr_frac: float | None = None         # effective training time ratio (1 where the failure model is off)
    wall_days_goodput: float | None = None
    gpu_hours_goodput: float | None = None
    cost_usd_goodput: float | None = None


@dataclass(frozen=True)
class ScreenError:
    """The screen's step time against the simulator's, over the simulated candidates: |screen / sim - 1|."""

    num_compared: int
    median_abs_frac: float | None
    p90_abs_frac: float | None
    max_abs_frac: float | None
    median_signed_frac: float | None


@dataclass(frozen=True)
class PlanResult:
    """The space searched, the answer to the question, the front, and why the other candidates failed."""

    question: str
    tokens: float
    deadline_days: float
    budget_usd: float | None
    axes: dict[str, list]                 # scenario key -> the values searched
    evaluated: int                        # candidates screened (the whole space)
    feasible: int                         # valid and fitting in memory
    simulated: int                        # of those, checked by the step simulator
    num_meeting_deadline: int             # simulated plans within the deadline (and the budget, if any)
    infeasible_by_reason: dict[str, int]  # 'invalid: <field>' or 'out of memory' -> candidates
    best: PlanRow | None                  # the answer, from simulated plans
    fastest: PlanRow | None               # the fastest simulated plan, deadline or not
    pareto: tuple[PlanRow, ...]           # simulated plans no other beats on both cost and days, fastest first
    screen_error: ScreenError
    # why there is no answer ('' where there is one): no candidate can run (by kind), or none of the simulated plans
    # is within the deadline (and budget), the fastest named; the reason of exit 3, on stderr alone until s26walk
    no_answer: str
    rows: tuple[PlanRow, ...]             # every candidate, in the order of the space (the last field: streamed)


def reason_examples(result: PlanResult) -> dict[str, PlanRow]:
    """The first candidate of each kind of failure (infeasible_by_reason's keys), to show its full
    reason: the kind alone names the refusing field, not the numbers (s23walk)."""
    examples: dict[str, PlanRow] = {}
    for row in result.rows:
        if not row.feasible:
            examples.setdefault(reason_kind(row.reason), row)
    return examples

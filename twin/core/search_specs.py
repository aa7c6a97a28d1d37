"""The [search] scenario section: the question a plan search answers, and the space it searches.

A scenario with a [search] table is a *plan* scenario: its training sections are the base plan,
and every candidate is that base with values of the listed axes substituted (`twin plan`,
`twin.plan`). The axes are the cluster's GPU type and count and the parallel plan's fields, each
list named after the field it sets (`pp` sets plan.pp). Give no list and the search walks the
default space (twin.planning.space.DEFAULT_VALUES: every axis, GPU types from the catalog); give
some and the others keep the base scenario's value, unless `full_space` is true.

Questions: the cheapest plan that trains `tokens` within `days`; with `budget_usd`, the fastest
plan that costs at most that; always the front of cost against time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from twin.core.errors import ScenarioError
from twin.core.fields import spec_field
from twin.core.schedules import SCHEDULE_NAMES
from twin.core.specs import MAX_BATCH_SEQS, MAX_DEGREE, MAX_GPUS, MAX_SMS, PRECISIONS, RECOMPUTE, STAGE_CUTS

MAX_TOKENS = 1e17         # tokens to train (V3: 1.48e13)
MAX_DAYS = 36_500         # a deadline of a century
MAX_BUDGET_USD = 1e12     # a trillion dollars
MAX_VALUES = 64           # values in one list
# Candidates in one search: each is screened in closed form (twin.planning.screen) before the best
# few are simulated. The screen takes ~2.3 ms of CPU a V3 candidate in a search's order (s21ux; ~11 ms
# before, s20ux), so 250,000 is ~10 CPU-minutes, ~5 minutes on two cores: a long run, shown by a
# progress bar and resumable with `twin plan --out`.
MAX_CANDIDATES = 250_000
MAX_SIMULATED = 2_000     # candidates simulated after the screen (each ~0.1-1 s for V3)

# The plan axes a search may vary, in the order labels and tables show them: ParallelPlan field
# names. twin.planning.space.plan_axis_fields keeps those this build's ParallelPlan has.
PLAN_AXES = ("tp", "pp", "virtual_stages", "ep", "cp", "zero_stage", "micro_batch_seqs", "schedule", "comm_sms",
             "recompute", "gemm_precision", "sequence_parallel", "tp_comm_overlap", "stage_cut")


@dataclass(frozen=True)
class SearchSpec:
    """The cheapest cluster and plan that trains `tokens` within `days` (or the fastest within
    `budget_usd`), over these lists."""

    tokens: float = spec_field(unit="tokens", gt=0, le=MAX_TOKENS, doc="Tokens to train")
    days: float = spec_field(unit="days", gt=0, le=MAX_DAYS, doc="Wall-clock deadline, met by a plan's days with the expected failure downtime of its cluster size (failures section)")
    budget_usd: float | None = spec_field(None, unit="USD", gt=0, le=MAX_BUDGET_USD, doc="Budget: when given, the question is the fastest plan that costs at most this (the deadline still bounds the front)")
    gpu: tuple[str, ...] = spec_field((), max_items=MAX_VALUES, doc="GPU types to consider (catalog names; empty = cluster.gpu, or the whole catalog when no list is given)")
    num_gpus: tuple[int, ...] = spec_field((), unit="count", ge=1, le=MAX_GPUS, max_items=MAX_VALUES, doc="GPU counts to consider")
    tp: tuple[int, ...] = spec_field((), unit="count", ge=1, le=MAX_DEGREE, max_items=MAX_VALUES, doc="Tensor-parallel degrees")
    pp: tuple[int, ...] = spec_field((), unit="count", ge=1, le=MAX_DEGREE, max_items=MAX_VALUES, doc="Pipeline-parallel degrees")
    virtual_stages: tuple[int, ...] = spec_field((), unit="count", ge=1, le=MAX_DEGREE, max_items=MAX_VALUES, doc="Virtual pipeline stages per rank (interleaved 1F1B; needs plan.virtual_stages)")
    ep: tuple[int, ...] = spec_field((), unit="count", ge=1, le=MAX_GPUS, max_items=MAX_VALUES, doc="Expert-parallel degrees")
    cp: tuple[int, ...] = spec_field((), unit="count", ge=1, le=MAX_DEGREE, max_items=MAX_VALUES, doc="Context-parallel degrees (needs plan.cp)")
    zero_stage: tuple[int, ...] = spec_field((), unit="count", ge=0, le=3, max_items=MAX_VALUES, doc="ZeRO stages")
    micro_batch_seqs: tuple[int, ...] = spec_field((), unit="sequences", ge=1, le=MAX_BATCH_SEQS, max_items=MAX_VALUES, doc="Sequences per micro-batch")
    schedule: tuple[str, ...] = spec_field((), choices=SCHEDULE_NAMES, max_items=MAX_VALUES, doc="Pipeline schedules")
    comm_sms: tuple[int, ...] = spec_field((), unit="count", ge=0, le=MAX_SMS, max_items=MAX_VALUES, doc="SMs reserved for EP communication")
    recompute: tuple[str, ...] = spec_field((), choices=RECOMPUTE, max_items=MAX_VALUES, doc="Activation recomputation")
    gemm_precision: tuple[str, ...] = spec_field((), choices=PRECISIONS, max_items=MAX_VALUES, doc="GEMM precisions (FP8 or BF16)")
    sequence_parallel: tuple[bool, ...] = spec_field((), max_items=2, doc="Megatron sequence parallelism on or off (needs plan.sequence_parallel)")
    tp_comm_overlap: tuple[bool, ...] = spec_field((), max_items=2, doc="TP communication overlapped with GEMMs on or off (needs plan.tp_comm_overlap)")
    stage_cut: tuple[str, ...] = spec_field((), choices=STAGE_CUTS, max_items=MAX_VALUES, doc="How blocks are cut into pipeline stages ('even', 'balanced'; acts only with plan.pp > 1)")
    full_space: bool = spec_field(False, doc="Axes without a list take the default values too (not the base plan's)")
    simulate: int = spec_field(100, unit="count", ge=1, le=MAX_SIMULATED, doc="Candidates the step simulator checks after the closed-form screen: the best by the question's objective, plus the screen's cost-time front")
    max_candidates: int = spec_field(MAX_CANDIDATES, unit="count", ge=1, le=MAX_CANDIDATES, doc="Refuse a space larger than this (the product of the lists)")

    def check(self, path: str = "search", source: str | None = None) -> None:
        """The product of the lists given is at most `max_candidates` (checked again, with the
        default lists of empty axes, where the space is built: twin.planning.space.check_size)."""
        for name in ("gpu", "num_gpus", *PLAN_AXES):   # a value twice screened its candidates twice (until s21ux)
            values = list(getattr(self, name))
            twice = [v for i, v in enumerate(values) if v in values[:i]]
            if twice:
                raise ScenarioError(f"{path}.{name}", values, f"each value once ({twice[0]!r} is given twice)", source)
        lists = {name: len(getattr(self, name)) for name in ("gpu", "num_gpus", *PLAN_AXES) if getattr(self, name)}
        total = math.prod(lists.values())
        if total > self.max_candidates:
            longest = max(lists, key=lists.get)
            product = " x ".join(f"{n} {k}" for k, n in lists.items() if n > 1)
            raise ScenarioError(f"{path}.{longest}", list(getattr(self, longest)),
                                f"lists whose combinations number at most {self.max_candidates:,} candidates "
                                f"(now {product} = {total:,}); shorten {path}.{longest}", source)

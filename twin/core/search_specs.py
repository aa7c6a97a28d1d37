"""The [search] scenario section: the question a plan search answers, and the space it searches.

A scenario with a [search] table is a *plan* scenario: its training sections are the base plan,
and every candidate is that base with the listed values substituted (`twin plan`, `twin.plan`).
An empty list keeps the base scenario's own value.
"""

from __future__ import annotations

from dataclasses import dataclass

import math

from twin.core.errors import ScenarioError
from twin.core.fields import spec_field
from twin.core.schedules import SCHEDULE_NAMES
from twin.core.specs import MAX_BATCH_SEQS, MAX_DEGREE, MAX_GPUS

MAX_TOKENS = 1e17         # tokens to train (V3: 1.48e13)
MAX_DAYS = 36_500         # a deadline of a century
MAX_VALUES = 64           # values in one list
MAX_CANDIDATES = 4_096    # combinations of the lists: each is a step simulation (~0.5 s for V3)


@dataclass(frozen=True)
class SearchSpec:
    """The cheapest cluster and plan that trains `tokens` within `days`, over these lists."""

    tokens: float = spec_field(unit="tokens", gt=0, le=MAX_TOKENS, doc="Tokens to train")
    days: float = spec_field(unit="days", gt=0, le=MAX_DAYS, doc="Wall-clock deadline")
    gpus: tuple[str, ...] = spec_field((), max_items=MAX_VALUES, doc="GPU types to consider (catalog names; empty = cluster.gpu)")
    num_gpus: tuple[int, ...] = spec_field((), unit="count", ge=1, le=MAX_GPUS, max_items=MAX_VALUES, doc="GPU counts to consider (empty = cluster.num_gpus)")
    pp: tuple[int, ...] = spec_field((), unit="count", ge=1, le=MAX_DEGREE, max_items=MAX_VALUES, doc="Pipeline-parallel degrees (empty = plan.pp)")
    ep: tuple[int, ...] = spec_field((), unit="count", ge=1, le=MAX_GPUS, max_items=MAX_VALUES, doc="Expert-parallel degrees (empty = plan.ep)")
    tp: tuple[int, ...] = spec_field((), unit="count", ge=1, le=MAX_DEGREE, max_items=MAX_VALUES, doc="Tensor-parallel degrees (empty = plan.tp)")
    schedules: tuple[str, ...] = spec_field((), choices=SCHEDULE_NAMES, max_items=MAX_VALUES, doc="Pipeline schedules (empty = plan.schedule)")
    micro_batch_seqs: tuple[int, ...] = spec_field((), unit="sequences", ge=1, le=MAX_BATCH_SEQS, max_items=MAX_VALUES, doc="Sequences per micro-batch (empty = plan.micro_batch_seqs)")

    def check(self, path: str = "search", source: str | None = None) -> None:
        """Every combination of the lists is simulated: their product is bounded (MAX_CANDIDATES)."""
        lists = {name: len(getattr(self, name)) or 1 for name in ("gpus", "num_gpus", "pp", "ep", "tp", "schedules", "micro_batch_seqs")}
        total = math.prod(lists.values())
        if total > MAX_CANDIDATES:
            longest = max(lists, key=lists.get)
            product = " x ".join(f"{n} {k}" for k, n in lists.items() if n > 1)
            raise ScenarioError(f"{path}.{longest}", list(getattr(self, longest)),
                                f"lists whose combinations number at most {MAX_CANDIDATES:,} candidates "
                                f"(now {product} = {total:,}); shorten {path}.{longest}", source)

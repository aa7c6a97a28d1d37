"""The [search] scenario section: the question a plan search answers, and the space it searches.

A scenario with a [search] table is a *plan* scenario: its training sections are the base plan,
and every candidate is that base with the listed values substituted (`twin plan`, `twin.plan`).
An empty list keeps the base scenario's own value.
"""

from __future__ import annotations

from dataclasses import dataclass

from twin.core.fields import spec_field
from twin.core.schedules import SCHEDULE_NAMES


@dataclass(frozen=True)
class SearchSpec:
    """The cheapest cluster and plan that trains `tokens` within `days`, over these lists."""

    tokens: float = spec_field(unit="tokens", gt=0, doc="Tokens to train")
    days: float = spec_field(unit="days", gt=0, doc="Wall-clock deadline")
    gpus: tuple[str, ...] = spec_field((), doc="GPU types to consider (catalog names; empty = cluster.gpu)")
    num_gpus: tuple[int, ...] = spec_field((), unit="count", ge=1, doc="GPU counts to consider (empty = cluster.num_gpus)")
    pp: tuple[int, ...] = spec_field((), unit="count", ge=1, doc="Pipeline-parallel degrees (empty = plan.pp)")
    ep: tuple[int, ...] = spec_field((), unit="count", ge=1, doc="Expert-parallel degrees (empty = plan.ep)")
    tp: tuple[int, ...] = spec_field((), unit="count", ge=1, doc="Tensor-parallel degrees (empty = plan.tp)")
    schedules: tuple[str, ...] = spec_field((), choices=SCHEDULE_NAMES, doc="Pipeline schedules (empty = plan.schedule)")
    micro_batch_seqs: tuple[int, ...] = spec_field((), unit="sequences", ge=1, doc="Sequences per micro-batch (empty = plan.micro_batch_seqs)")

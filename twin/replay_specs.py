"""Scenario sections for whole-run replay: stages, cost, energy, failures, uncertainty.

Owned by the replay (issue 3). Each is a frozen spec dataclass declared with `spec_field`, so the
strict loader and docs/scenario.md pick it up. Placeholder until the replay lands.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RunSpec:
    pass


@dataclass(frozen=True)
class CostSpec:
    pass


@dataclass(frozen=True)
class EnergySpec:
    pass


@dataclass(frozen=True)
class FailureSpec:
    pass


@dataclass(frozen=True)
class UncertaintySpec:
    pass

"""moe-twin: a calibrated digital twin of Mixture-of-Experts training and serving clusters.

The Python API (twin.api) is available from the package itself: `twin.load_scenario`,
`twin.simulate_step`, `twin.replay`, `twin.serve`, `twin.simulate_load`, `twin.plan`, `twin.plan_serving`, `twin.serving_capacity`,
`twin.sweep`, `twin.to_json`; and the two errors they raise, `twin.ScenarioError` (bad input, naming the field,
the value and what is allowed) and `twin.InfeasiblePlan` (a plan or deployment that cannot run, with its reason).
"""

from __future__ import annotations

# light (no simpy): importable with the shared definitions; exported since s24srvwalk, when a caller had to find
# them in twin.core.errors to catch what every API function raises
from twin.core.errors import InfeasiblePlan, ScenarioError

_API = ("load_scenario", "simulate_step", "replay", "serve", "simulate_load", "plan", "plan_serving", "serving_capacity", "sweep",
        "to_json")
__all__ = [*_API, "ScenarioError", "InfeasiblePlan"]


def __getattr__(name: str):
    # the API is imported the first time one of its names is asked for, so that `import
    # twin.costs.flops` (real/ on a GPU image without simpy) does not pull in the simulators
    if name in _API:
        from twin import api  # lazy: keeps the shared definitions importable without simpy
        return getattr(api, name)
    raise AttributeError(f"module 'twin' has no attribute {name!r}")

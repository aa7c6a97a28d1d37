"""The [moe] scenario section: which expert-load model the step twin uses.

Default `load_model = "scalar"` keeps the simple knob `workload.routing_imbalance` (a given
max/mean ratio applied to rows and IB bytes alike) and changes nothing. Any other model computes
per-layer, per-rank rows and bytes (twin.moe.placement); `workload.routing_imbalance` then
multiplies them as an extra factor (1 = none), so replay's uncertainty sampling keeps working.
"""

from __future__ import annotations

from dataclasses import dataclass

from twin.core.fields import spec_field
from twin.core.specs import MAX_SEED

# The 'dynamic' model routes DYNAMIC_TOKENS tokens over every expert for each simulated step, in up
# to DYNAMIC_RUNS independent runs: ~15 s for the default 200 steps and 256 experts on one CPU core.
# Scenario.check bounds steps x experts too. twin.moe.load routes with these same constants.
MAX_DYNAMIC_STEPS = 1_000
DYNAMIC_TOKENS = 4096
DYNAMIC_RUNS = 4

LOAD_MODELS = ("scalar", "balanced", "zipf", "dirichlet", "measured", "dynamic")


@dataclass(frozen=True)
class MoeLoadSpec:
    load_model: str = spec_field("scalar", choices=LOAD_MODELS,
                                 doc="Expert-load model: 'scalar' = workload.routing_imbalance only; 'balanced'; 'zipf' / 'dirichlet' (parametric skew); 'measured' (replay real/ expert_load.csv); 'dynamic' (zipf base + simulated aux-loss-free bias update)")
    zipf_s: float = spec_field(1.79, ge=0, doc="Zipf exponent of expert affinity (default: fitted to the H200 bench-small run without bias update, twin.moe.load.fit_measured)")
    dirichlet_alpha: float = spec_field(0.32, gt=0, doc="Dirichlet concentration of expert affinity (default: fitted to the H200 bench-small run without bias update)")
    measured_gpu: str = spec_field("h200", choices=("h100", "h200"), doc="Which recorded expert_load.csv a 'measured' model replays")
    measured_bias_update_rate: float = spec_field(0.0, ge=0, doc="Which recorded run (bias update rate) a 'measured' model replays")
    bias_update_speed: float = spec_field(0.001, ge=0, doc="Bias update speed gamma of the 'dynamic' model (V3 §4.2: 0.001, then 0 for the last 500B tokens)")
    dynamic_steps: int = spec_field(200, unit="count", ge=1, le=MAX_DYNAMIC_STEPS, doc="Steps the 'dynamic' model simulates; the load is the mean of the last tenth")
    seed: int = spec_field(0, unit="count", ge=0, le=MAX_SEED, doc="Seed of expert permutations and Monte Carlo routing")

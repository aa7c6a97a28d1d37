"""The Python API: what the `twin` command does, for notebooks and scripts.

    import twin
    sc = twin.load_scenario(None, ["cluster.gpu='h200'"])   # the embedded V3 pre-training, on H200s
    step = twin.simulate_step(sc)                             # a StepResult
    run = twin.replay(sc)                                     # a ReplayResult
    r1 = twin.serve(twin.load_scenario(kind="serving"))       # a ServeResult: R1 on one HGX H200
    plans = twin.plan(sc, tokens=14.8e12, days=60, pp=[8, 16])  # a PlanResult
    twin.to_json(step)                                        # plain JSON values of any result

Every function takes a validated scenario (bad input raises ScenarioError naming the field, an
infeasible plan InfeasiblePlan with its reason) and returns a frozen, unit-suffixed result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from twin.core.errors import ScenarioError
from twin.core.results import json_schema, to_json
from twin.core.scenario import SERVING, TRAINING, Scenario, ServeScenario
from twin.core.scenario import load_scenario as _load
from twin.core.specs import get_gpu, gpu_names
from twin.planning.result import PlanResult
from twin.planning.search import candidates
from twin.planning.search import plan as _plan
from twin.serving.result import ServeResult
from twin.serving.run import serve as _serve
from twin.training.replay.result import ReplayResult
from twin.training.replay.run import replay as _replay
from twin.training.results import Perturb, StepResult
from twin.training.step import simulate_step as _simulate_step

__all__ = ["load_scenario", "simulate_step", "replay", "serve", "plan", "to_json"]

# what each product returns (and the step's perturbation input): docs/results/<name>.schema.json
RESULT_TYPES = {"step": StepResult, "replay": ReplayResult, "serve": ServeResult, "plan": PlanResult,
                "perturb": Perturb}


def result_schemas() -> dict[str, dict]:
    """File name -> the JSON Schema of what `to_json` writes for each result type."""
    return {f"{name}.schema.json": json_schema(cls) for name, cls in RESULT_TYPES.items()}


def load_scenario(path: str | Path | None = None, overrides: Sequence[str] = (),
                  kind: str | None = None) -> Scenario | ServeScenario:
    """A validated scenario from TOML (None: the embedded default of `kind`, training if unset),
    with `section.field=value` overrides applied first. Its kind follows from its tables."""
    return _load(path, list(overrides), kind)


def _require(sc, kind: str, what: str) -> None:
    if getattr(sc, "kind", None) != kind:
        raise ScenarioError("scenario", type(sc).__name__, f"a {kind} scenario for {what}")


def simulate_step(sc: Scenario) -> StepResult:
    """One simulated optimizer step of a training scenario (with its per-task event log)."""
    _require(sc, TRAINING, "simulate_step")
    return _simulate_step(sc)


def replay(sc: Scenario, progress: bool = False) -> ReplayResult:
    """The whole training run of a training scenario, stage by stage, with bands."""
    _require(sc, TRAINING, "replay")
    return _replay(sc, progress=progress)


def serve(sc: ServeScenario) -> ServeResult:
    """Throughput, latency and memory of a serving scenario at its best concurrency."""
    _require(sc, SERVING, "serve")
    return _serve(sc)


def plan(sc: Scenario, tokens: float, days: float, gpus: Sequence[str] | None = None,
         num_gpus: Sequence[int] | None = None, pp: Sequence[int] | None = None, ep: Sequence[int] | None = None,
         tp: Sequence[int] | None = None, schedules: Sequence[str] | None = None,
         micro_batch_seqs: Sequence[int] | None = None, prices: dict[str, float] | None = None,
         progress: bool = False) -> PlanResult:
    """The cheapest plan that trains `tokens` within `days`, over the product of the lists given
    (each defaults to the scenario's own value); prices default to the catalog's."""
    _require(sc, TRAINING, "plan")
    p = sc.plan
    cands = candidates(gpus=list(gpus or [sc.cluster.gpu]), num_gpus=list(num_gpus or [sc.cluster.num_gpus]),
                       pp=list(pp or [p.pp]), ep=list(ep or [p.ep]), tp=list(tp or [p.tp]),
                       schedules=list(schedules or [p.schedule]),
                       micro_batch_seqs=list(micro_batch_seqs or [p.micro_batch_seqs]))
    all_prices = {g: get_gpu(g).rental_usd_per_gpu_hour for g in gpu_names()}
    all_prices[sc.cluster.gpu] = sc.cluster.price_usd_per_gpu_hour
    all_prices.update(prices or {})
    return _plan(sc.to_dict(), tokens, days, cands, all_prices, progress=progress)

"""The Python API: what the `twin` command does, for notebooks and scripts.

    import twin
    sc = twin.load_scenario(None, ["cluster.gpu='h200'"])   # the embedded V3 pre-training, on H200s
    step = twin.simulate_step(sc)                             # a StepResult
    run = twin.replay(sc)                                     # a ReplayResult
    r1 = twin.serve(twin.load_scenario(kind="serving"))       # a ServeResult: R1 on one HGX H200
    run = twin.simulate_load(sc1, arrival_s, input_len, output_len)  # a recorded load run, replayed
    run.per_request()["ttft_s"]                               # per-request TTFT / TPOT / E2E
    plans = twin.plan(sc, tokens=14.8e12, days=60, pp=[8, 16])  # a PlanResult (or a plan scenario's [search])
    twin.to_json(step)                                        # plain JSON values of any result

Every function takes a validated scenario (bad input raises ScenarioError naming the field, an
infeasible plan InfeasiblePlan with its reason) and returns a frozen, unit-suffixed result.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from twin.core.errors import ScenarioError
from twin.core.results import json_schema, to_json
from twin.core.fields import build, to_dict
from twin.core.scenario import PLAN, SERVING, TRAINING, PlanScenario, Scenario, ServeScenario
from twin.core.search_specs import SearchSpec
from twin.core.scenario import load_scenario as _load
from twin.planning.result import PlanResult
from twin.planning.search import catalog_prices, search_candidates
from twin.planning.search import plan as _plan
from twin.serving.result import RequestSimResult, ServeResult
from twin.serving.run import serve as _serve
from twin.serving.simulate import simulate as _simulate
from twin.serving.workload import from_records
from twin.training.replay.result import ReplayResult
from twin.training.replay.run import replay as _replay
from twin.training.results import Perturb, StepResult
from twin.training.step import simulate_step as _simulate_step

__all__ = ["load_scenario", "simulate_step", "replay", "serve", "simulate_load", "plan", "to_json"]

# what each product returns (and the step's perturbation input): docs/results/<name>.schema.json
RESULT_TYPES = {"step": StepResult, "replay": ReplayResult, "serve": ServeResult, "plan": PlanResult,
                "perturb": Perturb}


def result_schemas() -> dict[str, dict]:
    """File name -> the JSON Schema of what `to_json` writes for each result type."""
    return {f"{name}.schema.json": json_schema(cls) for name, cls in RESULT_TYPES.items()}


def load_scenario(path: str | Path | None = None, overrides: Sequence[str] = (),
                  kind: str | None = None) -> Scenario | PlanScenario | ServeScenario:
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


def serve(sc: ServeScenario, num_requests: int | None = None) -> ServeResult:
    """A serving scenario under its traffic, request by request (the headline), beside the
    analytic concurrency sweep and the published figures it names."""
    _require(sc, SERVING, "serve")
    return _serve(sc, num_requests)


def simulate_load(sc: ServeScenario, arrival_s=None, input_len=None, output_len=None, cached_len=None,
                  num_requests: int | None = None) -> RequestSimResult:
    """The request simulation alone. With lengths: exactly that load run (arrival times in seconds
    from its start, or None for a closed loop of traffic.concurrency clients); without: the
    scenario's [traffic]. Per-request TTFT/TPOT/E2E: `.per_request()`."""
    _require(sc, SERVING, "simulate_load")
    if input_len is None:
        return _simulate(sc, num_requests)
    return _simulate(sc, requests=from_records(arrival_s, input_len, output_len, sc.traffic, cached_len))


def plan(sc: Scenario | PlanScenario, prices: dict[str, float] | None = None, progress: bool = False,
         **search) -> PlanResult:
    """The cheapest plan that trains `tokens` within `days`. A plan scenario carries its [search];
    keyword arguments (tokens, days, gpus, num_gpus, pp, ep, tp, schedules, micro_batch_seqs) set or
    override its fields, checked like scenario values. Prices default to the catalog's."""
    if getattr(sc, "kind", None) not in (TRAINING, PLAN):
        raise ScenarioError("scenario", type(sc).__name__, "a training or plan scenario for plan")
    table = to_dict(sc.search) if sc.kind == PLAN else {}
    table.update({k: list(v) if isinstance(v, (list, tuple)) else v for k, v in search.items()})
    spec = build(SearchSpec, table, "search")
    base = sc.base() if sc.kind == PLAN else sc
    all_prices = {**catalog_prices(base), **(prices or {})}
    return _plan(base.to_dict(), spec.tokens, spec.days, search_candidates(base, spec), all_prices, progress=progress)

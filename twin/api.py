"""The Python API: what the `twin` command does, for notebooks and scripts.

    import twin
    sc = twin.load_scenario(None, ["cluster.gpu='h200'"])   # the embedded V3 pre-training, on H200s
    step = twin.simulate_step(sc)                             # a StepResult
    run = twin.replay(sc)                                     # a ReplayResult
    r1 = twin.serve(twin.load_scenario(kind="serving"))       # a ServeResult: R1 on one HGX H200
    run = twin.simulate_load(sc1, arrival_s, input_len, output_len)  # a recorded load run, replayed
    run.per_request()["ttft_s"]                               # per-request TTFT / TPOT / E2E
    plans = twin.plan(sc, tokens=14.8e12, days=60, pp=[8, 16])  # a PlanResult (or a plan scenario's [search])
    sizing = twin.plan_serving(twin.load_scenario(kind="serving"), rate_per_s=10, ttft_s=2, tpot_s=0.05)
    table = twin.sweep(None, grid=["plan.pp=8,16"])           # a SweepResult: one row per point
    twin.to_json(step)                                        # plain JSON values of any result

Every function takes a validated scenario (bad input raises ScenarioError naming the field, an
infeasible plan InfeasiblePlan with its reason) and returns a frozen, unit-suffixed result.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from twin.core.errors import ScenarioError
from twin.core.results import SCHEMA_DIALECT, json_schema, to_json
from twin.core.fields import build, check_value, to_dict
from twin.core.scenario import PLAN, SERVING, TRAINING, PlanScenario, Scenario, ServeScenario
from twin.core.search_specs import PLAN_AXES, SearchSpec
from twin.core.serve_specs import MAX_SIM_REQUESTS
from twin.core.specs import MAX_SEQ_LEN
from twin.core.scenario import apply_overrides, from_dict, read_raw
from twin.core.scenario import load_scenario as _load
from twin.planning.result import PlanResult
from twin.planning.search import catalog_prices, search
from twin.planning.serving import (LAYOUTS, SLO_PERCENTILE, ServingCapacityResult, ServingPlanResult, check_steady_load,
                                   serving_capacity as _capacity, size_serving)
from twin.planning.sweep import (GRID, LHS, MAX_POINTS, RANDOM, ServingQuestion, SweepResult, check_keys, parse_axis, points, result_of,
                                 run_sweep)
from twin.serving.result import RequestSimResult, ServeResult
from twin.serving.run import serve as _serve
from twin.serving.simulate import simulate as _simulate
from twin.serving.workload import from_records
from twin.training.replay.result import ReplayResult
from twin.training.replay.run import replay as _replay
from twin.training.results import Perturb, StepResult
from twin.training.step import simulate_step as _simulate_step

__all__ = ["load_scenario", "simulate_step", "replay", "serve", "simulate_load", "plan", "plan_serving", "serving_capacity", "sweep",
           "to_json"]

# what each product returns (and the step's perturbation input): docs/results/<name>.schema.json
RESULT_TYPES = {"step": StepResult, "replay": ReplayResult, "serve": ServeResult, "plan": PlanResult, "serving_plan": ServingPlanResult,
                "serving_capacity": ServingCapacityResult, "sweep": SweepResult,
                "perturb": Perturb, "load": RequestSimResult}   # load: simulate_load's (no schema until s19ux2)


def result_schemas() -> dict[str, dict]:
    """File name -> the JSON Schema of what `to_json` writes for each result type, and of what
    `twin step --json` writes (`step_command`)."""
    schemas = {f"{name}.schema.json": json_schema(cls) for name, cls in RESULT_TYPES.items()}
    schemas["step_command.schema.json"] = step_command_schema()
    schemas["model_command.schema.json"] = MODEL_COMMAND_SCHEMA
    schemas["schedule_command.schema.json"] = SCHEDULE_COMMAND_SCHEMA
    schemas["balance_command.schema.json"] = BALANCE_COMMAND_SCHEMA
    schemas["serve_command.schema.json"] = serve_command_schema()
    return schemas


def _command_schema(title: str, description: str, props: dict, optional: tuple[str, ...] = ()) -> dict:
    """The schema of a command's plain-dict JSON (no result type to derive it from); a test runs
    the command and validates what it writes, so a key added there fails until it is added here."""
    return {"$schema": SCHEMA_DIALECT, "title": title, "description": description, "type": "object", "properties": props,
            "required": [k for k in props if k not in optional], "additionalProperties": False}


_INT, _NUM, _STR = {"type": "integer"}, {"type": ["number", "null"]}, {"type": "string"}
MODEL_COMMAND_SCHEMA = _command_schema(
    "twin model --json", "Parameter, FLOP and KV-cache accounting of a catalog model (twin.costs.flops).",
    {"name": _STR, "total_params": _INT, "active_params": _INT, "embedding_params": _INT, "head_params": _INT,
     "mtp_params": _INT, "mtp_active_params": _INT, "train_flops_per_token": _NUM, "forward_flops_per_token": _NUM,
     "seq_len": _INT, "kv_cache_bytes_per_token": {"type": "number"},
     "spec": {"type": "object", "description": "the model's fields, as [model] in a scenario"}})
SCHEDULE_COMMAND_SCHEMA = _command_schema(
    "twin schedule --json", "An idealised pipeline schedule with constant op times against its closed-form bubble "
    "(twin.sim.ideal.ideal_schedule); idle_s, busy_s and peak_inflight_activations per pipeline rank.",
    {"schedule": _STR, "pp": _INT, "virtual_stages": _INT, "num_model_stages": _INT, "num_microbatches": _INT,
     "f_s": _NUM, "b_s": _NUM, "w_s": _NUM, "fb_s": _NUM, "makespan_s": _NUM, "bubble_s": _NUM, "formula_bubble_s": _NUM,
     "formula": _STR, "idle_s": {"type": "array", "items": _NUM}, "busy_s": {"type": "array", "items": _NUM},
     "peak_inflight_activations": {"type": "array", "items": _INT},
     "note": {**_STR, "description": "why the simulated bubble differs from the formula, when it does"}},
    optional=("note",))


_SERIES = {"type": "object", "additionalProperties": {"type": "array", "items": _NUM}}
_BALANCE_CASE = _command_schema(
    "load case", "One expert-load case: the step under that load, its straggler penalty against the balanced step and "
    "the pre-training GPU-hours and dollars it loses (memory flagged, not refused: skewed rows enlarge the all-to-all buffers).",
    {"step_time_s": _NUM, "mfu_frac": _NUM, "rank_max_over_mean": _NUM, "ib_max_over_balanced": _NUM,
     "memory_per_gpu_bytes": _NUM, "out_of_memory": {"type": "boolean"}, "straggler_penalty_frac": _NUM,
     "gpu_hours_lost": _NUM, "usd_lost": _NUM})
_BALANCE_CASE.pop("$schema")
BALANCE_COMMAND_SCHEMA = _command_schema(
    "twin balance --json", "What expert-load balancing buys (twin.training.balance.run_balance): the step and "
    "pre-training GPU-hours under balanced, measured and fitted expert loads, and the imbalance's decay under the bias update.",
    {"scenario": _STR, "num_gpus": _INT, "pretrain_steps": _NUM, "balanced_step_time_s": _NUM,
     "fit": {"type": "object", "description": "the Zipf and Dirichlet fits to the measured no-bias run (twin.moe.load.fit_measured)",
             "properties": {"gpu": _STR, "bias_update_rate": _NUM, "num_samples": _INT, "num_experts": _INT, "top_k": _INT,
                            "zipf_s": _NUM, "zipf_rmse": _NUM, "dirichlet_alpha": _NUM, "dirichlet_rmse": _NUM,
                            "measured_max_over_mean": _NUM},
             "required": ["gpu", "bias_update_rate", "num_samples", "num_experts", "top_k", "zipf_s", "zipf_rmse",
                          "dirichlet_alpha", "dirichlet_rmse", "measured_max_over_mean"], "additionalProperties": False},
     "cases": {"type": "object", "description": "load case name -> its figures, or why its step cannot run",
               "additionalProperties": {"anyOf": [_BALANCE_CASE, {
                   "type": "object", "properties": {"infeasible": _STR}, "required": ["infeasible"],
                   "additionalProperties": False}]}},
     "decay_simulated": {"type": "object", "properties": {
         "num_experts": _INT, "top_k": _INT, "ep": _INT, "base_zipf_s": _NUM,
         "rank_max_over_mean_by_gamma": {**_SERIES, "description": "bias speed gamma -> rank max/mean per step"}},
         "required": ["num_experts", "top_k", "ep", "base_zipf_s", "rank_max_over_mean_by_gamma"], "additionalProperties": False},
     "decay_measured_expert_max_over_mean_by_rate": {**_SERIES, "description": "recorded bias rate -> expert max/mean per step"}})


STEP_COMMAND_DOC = ("What `twin step --json` writes: the step's result with `feasible` true and the resolved scenario "
                    "beside it, or, for a plan that cannot run, `feasible` false with the reason and the memory breakdown.")


def _cannot_run(scenario: dict) -> dict:
    """What a command's --json holds for a plan or deployment that cannot run (exit 3)."""
    return {"type": "object", "properties": {
        "feasible": {"const": False}, "reason": {"type": "string"},
        "memory_breakdown_bytes": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
        "scenario": scenario}, "required": ["feasible", "reason", "memory_breakdown_bytes", "scenario"],
        "additionalProperties": False}


SERVE_COMMAND_DOC = ("What `twin serve --json` writes: the serving result (serve.schema.json), or, for a deployment that "
                     "cannot run (exit 3), `feasible` false with the reason, the memory breakdown and the resolved scenario.")


def serve_command_schema() -> dict:
    """The JSON Schema of `twin serve --json` (SERVE_COMMAND_DOC)."""
    served = json_schema(ServeResult)
    ran = {k: v for k, v in served.items() if k not in ("$schema", "$defs", "title", "description")}
    scenario = {"type": "object", "description": "the resolved scenario, as scenario.resolved.toml holds it"}
    return {"$schema": served["$schema"], "title": "twin serve --json", "description": SERVE_COMMAND_DOC,
            "anyOf": [ran, _cannot_run(scenario)], "$defs": served.get("$defs", {})}


def step_command_schema() -> dict:
    """The JSON Schema of `twin step --json` (STEP_COMMAND_DOC): StepResult's fields and two more."""
    step = json_schema(StepResult)
    scenario = {"type": "object", "description": "the resolved scenario, as scenario.resolved.toml holds it"}
    ran = {"type": "object", "properties": {"feasible": {"const": True}, **step["properties"], "scenario": scenario},
           "required": ["feasible", *step["required"], "scenario"], "additionalProperties": False}
    return {"$schema": step["$schema"], "title": "twin step --json", "description": STEP_COMMAND_DOC,
            "anyOf": [ran, _cannot_run(scenario)], "$defs": step.get("$defs", {})}


def load_scenario(path: str | Path | None = None, overrides: Sequence[str] | str = (),
                  kind: str | None = None) -> Scenario | PlanScenario | ServeScenario:
    """A validated scenario from TOML (None: the embedded default of `kind`, training if unset),
    with `section.field=value` overrides applied first (a list of them, or one string). Its kind
    follows from its tables."""
    # one override as a bare string was read character by character ("--set: got 'p'") until s21walk
    return _load(path, [overrides] if isinstance(overrides, str) else list(overrides), kind)


SEARCH_LISTS = ("gpu", "num_gpus", *PLAN_AXES)   # the [search] fields that hold a list of values


def _check_workers(workers) -> None:
    """Worker processes as `--workers` takes them (-1 raised multiprocessing's ValueError and 0 ran on
    every CPU until s23walk); None: the CPUs this process may use."""
    if workers is not None:
        check_value("workers", workers, integer=True, ge=1, le=1024)


def _require(sc, kind: str, what: str) -> None:
    if getattr(sc, "kind", None) != kind:
        raise ScenarioError("scenario", type(sc).__name__, f"a {kind} scenario for {what}")


def simulate_step(sc: Scenario) -> StepResult:
    """One simulated optimizer step of a training scenario (with its per-task event log)."""
    _require(sc, TRAINING, "simulate_step")
    sc.check()   # a plan scenario's base may not hold on its own (its search checks each candidate, s23walk)
    return _simulate_step(sc)


def replay(sc: Scenario, progress: bool = False) -> ReplayResult:
    """The whole training run of a training scenario, stage by stage, with bands."""
    _require(sc, TRAINING, "replay")
    return _replay(sc, progress=progress)


def _check_num_requests(num_requests: int | None) -> int | None:
    """As `twin serve --requests`: a count from 1 to MAX_SIM_REQUESTS, a numpy integer as well (-1 or 2.5
    ended in numpy's errors and 10**12 in a MemoryError until s21walk)."""
    if isinstance(num_requests, numbers.Integral) and not isinstance(num_requests, bool):
        num_requests = int(num_requests)
    return check_value("num_requests", num_requests, integer=True, ge=1, le=MAX_SIM_REQUESTS)


def serve(sc: ServeScenario, num_requests: int | None = None) -> ServeResult:
    """A serving scenario under its traffic, request by request (the headline), beside the
    analytic concurrency sweep and the published figures it names."""
    _require(sc, SERVING, "serve")
    return _serve(sc, _check_num_requests(num_requests))


def _per_request(name: str, values, *, lo: float, hi: float | None, integer: bool) -> np.ndarray:
    """One value per request as a 1-D float array, each finite and in [lo, hi] (an integer when
    `integer`); a ScenarioError naming `name` otherwise."""
    allowed = f"a list of {'integers' if integer else 'numbers'} >= {lo:g}" + (f" and <= {hi:,}" if hi is not None else "") \
        + f", one per request (1 to {MAX_SIM_REQUESTS:,} requests)"
    try:
        arr = np.asarray(values, dtype=float)
    except (TypeError, ValueError):
        raise ScenarioError(name, values if not isinstance(values, (list, tuple)) else list(values)[:5], allowed) from None
    bad = (arr.ndim != 1 or not 1 <= arr.size <= MAX_SIM_REQUESTS or not np.all(np.isfinite(arr)) or np.any(arr < lo)
           or (hi is not None and np.any(arr > hi)) or (integer and np.any(arr != np.round(arr))))
    if bad:
        raise ScenarioError(name, arr.ravel()[:5].tolist() if arr.size else [], allowed)
    return arr


def _load_run(arrival_s, input_len, output_len, cached_len) -> tuple:
    """simulate_load's per-request inputs, checked as a trace CSV's rows are (traffic.trace_csv): a
    negative prompt ran, strings, an empty run or a missing output_len ended in numpy's errors (until s21walk)."""
    if output_len is None:
        raise ScenarioError("output_len", None, "one output length per request, given with input_len")
    isl = _per_request("input_len", input_len, lo=1, hi=MAX_SEQ_LEN, integer=True)
    osl = _per_request("output_len", output_len, lo=1, hi=MAX_SEQ_LEN, integer=True)
    if osl.size != isl.size:
        raise ScenarioError("output_len", f"{osl.size} values", f"one per request ({isl.size}, as input_len)")
    arrival = None if arrival_s is None else _per_request("arrival_s", arrival_s, lo=0, hi=None, integer=False)
    cached = None
    if cached_len is not None:
        cached = _per_request("cached_len", cached_len, lo=0, hi=MAX_SEQ_LEN, integer=True)
        if cached.size != isl.size or np.any(cached > isl):
            raise ScenarioError("cached_len", cached[:5].tolist(), "0 <= cached_len <= input_len, one per request")
    return arrival, isl.astype(np.int64), osl.astype(np.int64), None if cached is None else cached.astype(np.int64)


def simulate_load(sc: ServeScenario, arrival_s=None, input_len=None, output_len=None, cached_len=None,
                  num_requests: int | None = None) -> RequestSimResult:
    """The request simulation alone. With lengths: exactly that load run (arrival times in seconds
    from its start, or None for a closed loop of traffic.concurrency clients); without: the
    scenario's [traffic]. Per-request TTFT/TPOT/E2E: `.per_request()`."""
    _require(sc, SERVING, "simulate_load")
    num_requests = _check_num_requests(num_requests)
    if input_len is None:
        given = [name for name, v in (("arrival_s", arrival_s), ("output_len", output_len), ("cached_len", cached_len))
                 if v is not None]
        if given:   # a recorded run without its prompt lengths simulated the scenario's own traffic (until s21walk)
            raise ScenarioError("input_len", None, f"one prompt length per request, given with {', '.join(given)}")
        return _simulate(sc, num_requests)
    arrival_s, input_len, output_len, cached_len = _load_run(arrival_s, input_len, output_len, cached_len)
    return _simulate(sc, requests=from_records(arrival_s, input_len, output_len, sc.traffic, cached_len))


def plan(sc: Scenario | PlanScenario, prices: dict[str, float] | None = None, progress: bool = False,
         workers: int | None = None, dask: str | None = None, **search_fields) -> PlanResult:
    """Search clusters and plans: the cheapest that trains `tokens` within `days` (the fastest
    within `budget_usd` when given), and the front of cost against time. A plan scenario carries its
    [search]; keyword arguments (tokens, days, budget_usd, and the axis lists gpu, num_gpus, tp, pp,
    ep, schedule, micro_batch_seqs, zero_stage, ...; see SearchSpec) set or override its fields,
    checked like scenario values. Prices default to the catalog's."""
    if getattr(sc, "kind", None) not in (TRAINING, PLAN):
        raise ScenarioError("scenario", type(sc).__name__, "a training or plan scenario for plan")
    _check_workers(workers)
    table = to_dict(sc.search) if sc.kind == PLAN else {}
    # a bare value of a list field is one value (pp=16 was refused as 'a list of integer' until s23walk)
    table.update({k: list(v) if isinstance(v, (list, tuple)) else [v] if k in SEARCH_LISTS else v
                  for k, v in search_fields.items()})
    spec = build(SearchSpec, table, "search")
    base = sc.base() if sc.kind == PLAN else sc
    all_prices = {**catalog_prices(base), **(prices or {})}
    return search(base, spec, all_prices, workers=workers, dask=dask, progress=progress)


def sweep(path: str | Path | None = None, grid: Sequence[str] = (), random: int | None = None, lhs: int | None = None,
          seed: int = 0, overrides: Sequence[str] = (), workers: int | None = None, dask: str | None = None,
          serving_question: tuple[float, float, float] | None = None) -> SweepResult:
    """Every point of a sweep over scenario keys (`grid`: 'plan.pp=8,16', 'workload.routing_imbalance=1:1.5'),
    all combinations, or `random` / `lhs` points; one row each. (`twin sweep` also journals the rows
    to disk as they arrive and resumes.) `serving_question`: (rate_per_s, ttft_s, tpot_s[, percentile]) on a serving
    scenario, each point's row its fewest GPUs (`twin sweep --rate --ttft --tpot [--percentile]`)."""
    _check_workers(workers)
    # a bare string is one axis, one override (read character by character, "--grid: got 'p'", until s23walk)
    grid, overrides = ([x] if isinstance(x, str) else list(x) for x in (grid, overrides))
    raw, source = read_raw(path)
    raw = apply_overrides(raw, overrides)
    base = from_dict(raw, source)   # the base must be valid
    axes = [parse_axis(text) for text in grid]
    check_keys(axes, base.kind)
    question = None
    if serving_question is not None:
        _require(base, SERVING, "sweep with a serving_question")
        if isinstance(serving_question, (str, int, float)) or len(serving_question) not in (3, 4):
            raise ScenarioError("serving_question", serving_question, "(rate_per_s, ttft_s, tpot_s) or (rate_per_s, ttft_s, "
                                "tpot_s, percentile)")
        for name, value in zip(("rate_per_s", "ttft_s", "tpot_s"), serving_question):
            check_value(name, value, gt=0, le=1e9)
        if len(serving_question) == 4:   # P90 alone until s24srvwalk
            check_value("percentile", serving_question[3], gt=0, le=100)
        question = ServingQuestion(*map(float, serving_question))
    mode, n = (RANDOM, random) if random else (LHS, lhs) if lhs else (GRID, None)
    for name, value in (("random", random), ("lhs", lhs)):
        if value is not None:
            check_value(name, value, integer=True, ge=1, le=MAX_POINTS)
    pts = points(axes, mode, n, seed)
    rows: dict[str, dict] = {}
    done = run_sweep(raw, source, pts, set(), lambda r: rows.__setitem__(r["candidate_id"], r), workers=workers, dask=dask,
                     question=question)
    return result_of(axes, mode, pts, raw, rows, done, question)


def _check_serving_question(sc, rate_per_s, ttft_s, tpot_s, num_requests, percentile, name: str) -> None:
    _require(sc, SERVING, name)
    for field, value in (("rate_per_s", rate_per_s), ("ttft_s", ttft_s), ("tpot_s", tpot_s)):
        check_value(field, value, gt=0, le=1e9)
    _check_num_requests(num_requests)   # as twin.serve reads it: a numpy integer too (refused here until s24srvwalk)
    check_value("percentile", percentile, gt=0, le=100)


def plan_serving(sc: ServeScenario, rate_per_s: float, ttft_s: float, tpot_s: float,
                 num_requests: int | None = None, percentile: float = SLO_PERCENTILE,
                 progress: bool = False, layouts: tuple[str, ...] = LAYOUTS) -> ServingPlanResult:
    """The fewest GPUs, split between prefill and decode instances, that serve `rate_per_s`
    requests within the TTFT and TPOT targets (seconds) at `percentile`, each deployment simulated
    request by request on `num_requests` requests (None: enough for the steady state at the rate,
    twin.planning.serving.steady_requests). `layouts`: co-located instances, separate prefill and
    decode pools, or both (the fewer GPUs answered)."""
    _check_serving_question(sc, rate_per_s, ttft_s, tpot_s, num_requests, percentile, "plan_serving")
    return size_serving(sc, rate_per_s, ttft_s, tpot_s, num_requests=_check_num_requests(num_requests), percentile=percentile,
                        progress=progress, layouts=(layouts,) if isinstance(layouts, str) else tuple(layouts))   # a bare string: one layout


def serving_capacity(sc: ServeScenario, rates_per_s: Sequence[float], ttft_s: float, tpot_s: float,
                     num_requests: int | None = None, percentile: float = SLO_PERCENTILE, progress: bool = False,
                     layouts: tuple[str, ...] = LAYOUTS) -> ServingCapacityResult:
    """`plan_serving` at each rate of `rates_per_s`: the capacity curve (`twin plan --rate R1,R2,...`)."""
    if isinstance(rates_per_s, (int, float, str)):
        raise ScenarioError("rates_per_s", rates_per_s, "a non-empty list of request rates, e.g. [1, 10, 100]")
    try:   # any iterable of rates, read once (a generator ended in len()'s TypeError until s24srvwalk)
        rates_per_s = list(rates_per_s)
    except TypeError:
        raise ScenarioError("rates_per_s", rates_per_s, "a non-empty list of request rates, e.g. [1, 10, 100]") from None
    if not rates_per_s or len(set(rates_per_s)) < len(rates_per_s):   # as --rate: each once (ran twice until s24srvwalk)
        raise ScenarioError("rates_per_s", rates_per_s, "a non-empty list of request rates, each once, e.g. [1, 10, 100]")
    num_requests = _check_num_requests(num_requests)
    for rate in rates_per_s:   # each checked, and its steady state within the simulation, before the first runs
        _check_serving_question(sc, rate, ttft_s, tpot_s, num_requests, percentile, "serving_capacity")
        if num_requests is None:
            check_steady_load(sc, rate, tpot_s)
    return _capacity(sc, list(rates_per_s), ttft_s, tpot_s, num_requests=num_requests, percentile=percentile, progress=progress,
                     layouts=(layouts,) if isinstance(layouts, str) else tuple(layouts))

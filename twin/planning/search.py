"""Capacity planning: which cluster and parallel plan trains a model on T tokens within D days at
the lowest cost (or the fastest within a budget), and the front of cost against time.

Two levels. Every candidate of the space (twin.planning.space) is first checked like a scenario
(the loader's invariants: an invalid one is counted under the field that refuses it) and screened
in closed form (twin.planning.screen: step time and memory, ~2.3 ms of CPU for V3, s21ux); one that does not fit is
counted 'out of memory'. The best `search.simulate` of the rest by the question's objective,
with the screen's own cost-time front, are then simulated step by step (twin.training.step); the
answer and the front come from simulated figures only, and the screen's error against them is
reported. Candidates run in a local process pool or on Dask (twin.planning.executor). Nothing here
writes files: reports/plan_report.py does.

Resuming: `search(done=..., on_rows=...)` hands each screened batch and each simulated row to
`on_rows(phase, rows)` as it arrives, for the caller to journal (`twin plan --out DIR` appends them
to DIR/rows.jsonl), and takes back what an interrupted run journaled (`resumed_rows`): those
candidates are neither screened nor simulated again. A journaled row belongs to one question key
(`question_key`: the base scenario, the tokens and the prices, everything a row's figures depend
on; the deadline and budget only choose which rows are simulated), so a re-run that asks another
question in the same folder computes its own rows.
"""

from __future__ import annotations

import hashlib
import json
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Iterable

from tqdm import tqdm

from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.core.results import to_json
from twin.core.scenario import Scenario
from twin.core.search_specs import MAX_SIMULATED, SearchSpec
from twin.core.specs import get_gpu, gpu_names
from twin.core.units import SECONDS_PER_DAY, SECONDS_PER_HOUR, short_count
from twin.planning import executor
from twin.planning.result import (CHEAPEST, FASTEST, INFEASIBLE, INVALID, SCREENED, SIMULATED, PlanResult, PlanRow,
                                  ScreenError, reason_kind)
from twin.planning.screen import screen
from twin.planning.space import Candidate, apply, axes, candidates, check_axis_values, check_size
from twin.training import failures
from twin.training.step import simulate_step

SCREEN, SIMULATE = "screen", "simulate"   # the two phases whose rows a journal keeps
ROW_FORMAT = "goodput"    # a journaled row's fields: with the failure downtime since s23ettr (question_key)
SCREEN_BATCH = 256        # candidates per task sent to a worker (each ~2.3 ms to screen for V3)
# a candidate the screen puts this much beyond the deadline or budget may still meet it once
# simulated: the screen's P90 error on V3 plans is a few per cent
SCREEN_MARGIN_FRAC = 0.10
# The order candidates are screened in (their rows keep the space's order): the axes a block's cost
# depends on first, then those that only arrange blocks (twin.training.step.STAGE_ONLY_PLAN_FIELDS,
# the GPU count), so a batch holds the candidates that share one set of block costs and stage
# chains (StepCosts(share_blocks=True)) and a pool worker builds each set once (s21ux)
SCREEN_ORDER = ("cluster.gpu", "plan.tp", "plan.ep", "plan.cp", "plan.micro_batch_seqs", "plan.comm_sms", "plan.recompute",
                "plan.gemm_precision", "plan.sequence_parallel", "plan.tp_comm_overlap", "cluster.num_gpus", "plan.pp",
                "plan.virtual_stages", "plan.stage_cut", "plan.zero_stage", "plan.schedule")


def catalog_prices(sc: Scenario) -> dict[str, float]:
    """Rental price per GPU-hour of every catalog GPU type, with the scenario's own price for its GPU."""
    prices = {g: get_gpu(g).rental_usd_per_gpu_hour for g in gpu_names()}
    prices[sc.cluster.gpu] = sc.cluster.price_usd_per_gpu_hour
    return prices


def _row(base: Scenario, cand: Candidate, **fields) -> PlanRow:
    s = dict(cand.settings)
    return PlanRow(candidate_id=cand.id, label=cand.label(), gpu=s.get("cluster.gpu", base.cluster.gpu),
                   num_gpus=s.get("cluster.num_gpus", base.cluster.num_gpus),
                   plan={k[5:]: v for k, v in cand.settings if k.startswith("plan.")}, **fields)


def _run_figures(sc: Scenario, step_time_s: float, tokens_per_step: float, tokens: float, price: float | None) -> dict:
    """Days, GPU-hours and cost of `tokens` at the step time: of the steps alone (compute), and with
    the expected failure downtime of the cluster (`_goodput`, as `twin replay` adds it to a stage)."""
    num_gpus = sc.cluster.num_gpus
    wall_s = tokens / tokens_per_step * step_time_s
    gpu_hours = wall_s * num_gpus / SECONDS_PER_HOUR
    gp = failures.job_goodput(sc.failures, sc.model, num_gpus, sc.gpu.gpus_per_node, wall_s)
    ettr = gp.ettr_frac if gp else 1.0
    return {"wall_days": wall_s / SECONDS_PER_DAY, "gpu_hours": gpu_hours,
            "cost_usd": gpu_hours * price if price is not None else None,
            "tokens_per_s_per_gpu": tokens_per_step / step_time_s / num_gpus,
            "ettr_frac": ettr, "wall_days_goodput": wall_s / ettr / SECONDS_PER_DAY, "gpu_hours_goodput": gpu_hours / ettr,
            "cost_usd_goodput": gpu_hours / ettr * price if price is not None else None}


def screen_one(base: Scenario, cand: Candidate, tokens: float, prices: dict[str, float]) -> PlanRow:
    """Check and screen one candidate. Never raises for a bad or infeasible plan."""
    sc = apply(base, cand)
    try:
        sc.check()
    except ScenarioError as exc:
        return _row(base, cand, status=INVALID, feasible=False, reason=f"invalid: {exc}")
    est = screen(sc)
    if not est.fits:
        return _row(base, cand, status=INFEASIBLE, feasible=False, reason=est.reason, screen_step_time_s=est.step_time_s,
                    memory_per_gpu_bytes=est.memory_per_gpu_bytes)
    figures = _run_figures(sc, est.step_time_s, sc.workload.tokens_per_step, tokens, prices.get(sc.cluster.gpu))
    return _row(base, cand, status=SCREENED, feasible=True, screen_step_time_s=est.step_time_s, step_time_s=est.step_time_s,
                memory_per_gpu_bytes=est.memory_per_gpu_bytes, **figures)


def _screen_batch(args) -> list[PlanRow]:
    base, cands, tokens, prices = args
    return [screen_one(base, c, tokens, prices) for c in cands]


def simulate_one(base: Scenario, cand: Candidate, tokens: float, prices: dict[str, float],
                 screen_step_time_s: float | None = None) -> PlanRow:
    """One candidate through the step simulator: its step, run length and cost, or why it can't run."""
    sc = apply(base, cand)
    try:
        sc.check()
        res = simulate_step(sc, record_events=False)
    except ScenarioError as exc:
        return _row(base, cand, status=INVALID, feasible=False, reason=f"invalid: {exc}")
    except InfeasiblePlan as exc:
        return _row(base, cand, status=INFEASIBLE, feasible=False, reason=exc.reason, screen_step_time_s=screen_step_time_s)
    figures = _run_figures(sc, res.step_time_s, res.tokens_per_step, tokens, prices.get(sc.cluster.gpu))
    return _row(base, cand, status=SIMULATED, feasible=True, screen_step_time_s=screen_step_time_s,
                step_time_s=res.step_time_s, mfu_frac=res.mfu_frac, memory_per_gpu_bytes=res.memory_per_gpu_bytes, **figures)


def _simulate_task(args) -> PlanRow:
    return simulate_one(*args)


def _price_key(r: PlanRow):
    """Cost in USD with failure downtime; a GPU type without a price ranks after every priced plan,
    by GPU-hours."""
    return (r.cost_usd_goodput is None, r.cost_usd_goodput if r.cost_usd_goodput is not None else r.gpu_hours_goodput)


def front(rows: list[PlanRow]) -> list[PlanRow]:
    """The rows no other row beats on both wall-clock days with failure downtime and price
    (_price_key), fastest first."""
    out: list[PlanRow] = []
    for r in sorted(rows, key=lambda r: (r.wall_days_goodput, _price_key(r))):
        if not out or _price_key(r) < _price_key(out[-1]):
            out.append(r)
    return out


def _meets(r: PlanRow, days: float, budget: float | None, margin: float = 0.0) -> bool:
    """Within the deadline (and budget) with the expected failure downtime: compute days that fit a
    deadline the run's interruptions overrun do not meet it (s23ettr)."""
    if r.wall_days_goodput > days * (1 + margin):
        return False
    return budget is None or (r.cost_usd_goodput is not None and r.cost_usd_goodput <= budget * (1 + margin))


def _objective(budget: float | None) -> Callable[[PlanRow], tuple]:
    return (lambda r: (r.wall_days_goodput,)) if budget is not None else _price_key


def pick_survivors(screened: list[PlanRow], days: float, budget: float | None, k: int) -> list[PlanRow]:
    """What the simulator checks: the k best by the question's objective among the screened plans
    that come near enough to the deadline (and budget), then the others by it, plus the screen's
    own front of cost against time (it holds the answer of every other budget or deadline)."""
    key = _objective(budget)
    near = sorted((r for r in screened if _meets(r, days, budget, SCREEN_MARGIN_FRAC)), key=key)
    rest = sorted((r for r in screened if not _meets(r, days, budget, SCREEN_MARGIN_FRAC)), key=lambda r: r.wall_days_goodput)
    chosen = {r.candidate_id: r for r in (near + rest)[:k]}
    for r in front(screened):
        chosen.setdefault(r.candidate_id, r)
    return list(chosen.values())


def screen_error(rows: list[PlanRow]) -> ScreenError:
    errs = [r.screen_step_time_s / r.step_time_s - 1 for r in rows
            if r.status == SIMULATED and r.screen_step_time_s is not None]
    if not errs:
        return ScreenError(0, None, None, None, None)
    abs_errs = sorted(abs(e) for e in errs)
    p90 = abs_errs[min(len(abs_errs) - 1, int(0.9 * len(abs_errs)))]
    return ScreenError(len(errs), statistics.median(abs_errs), p90, abs_errs[-1], statistics.median(errs))


def question_key(base: Scenario, tokens: float, prices: dict[str, float]) -> str:
    """What a journaled row's figures depend on beside its candidate: the base scenario, the tokens
    and the prices (12 hex digits of a SHA-1)."""
    # ROW_FORMAT: rows journaled before a row held its failure downtime (s23ettr) are not resumed
    text = json.dumps([base.to_dict(), tokens, sorted(prices.items()), ROW_FORMAT], sort_keys=True, separators=(",", ":"),
                      default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def journal_row(key: str, phase: str, row: PlanRow) -> dict:
    """One journal line (twin.core.journal): its id names the question, the phase and the candidate."""
    return {"candidate_id": f"{key}/{phase}/{row.candidate_id}", "row": to_json(row)}


def resumed_rows(journaled: dict[str, dict] | Iterable[tuple[str, dict]], key: str) -> dict[str, dict[str, PlanRow]]:
    """phase -> candidate id -> row, of the journal's rows of question `key`: a dict
    (twin.core.journal.read_rows) or (id, row) pairs read a line at a time (iter_rows; the first
    row of an id kept, as read_rows keeps it)."""
    out: dict[str, dict[str, PlanRow]] = {SCREEN: {}, SIMULATE: {}}
    for ident, line in (journaled.items() if isinstance(journaled, dict) else journaled):
        qkey, _, rest = ident.partition("/")
        phase, _, cid = rest.partition("/")
        if qkey == key and phase in out and cid not in out[phase] and isinstance(line.get("row"), dict):
            out[phase][cid] = PlanRow(**line["row"])
    return out


def screen_order(space: list[tuple[str, tuple]]) -> Callable[[Candidate], tuple]:
    """A sort key putting candidates of the same block costs together (SCREEN_ORDER; axes it does
    not name last, in the space's order), by each value's place in its axis."""
    place = {key: {v: i for i, v in enumerate(values)} for key, values in space}
    keys = [k for k in SCREEN_ORDER if k in place] + [k for k, _ in space if k not in SCREEN_ORDER]

    def key(cand: Candidate) -> tuple:
        s = dict(cand.settings)
        return tuple(place[k][s[k]] for k in keys)
    return key


def search(base: Scenario, spec: SearchSpec, prices: dict[str, float], workers: int | None = None,
           dask: str | None = None, progress: bool = False, exhaustive: bool = False,
           done: dict[str, dict[str, PlanRow]] | None = None,
           on_rows: Callable[[str, list[PlanRow]], None] | None = None) -> PlanResult:
    """Screen the whole space, simulate the survivors, answer the question. `exhaustive` simulates
    every candidate that fits (to measure the screen against the simulator). `done`: rows of an
    earlier run of the same question by phase (resumed_rows), not computed again; `on_rows(phase,
    rows)`: called with the rows computed now, as they arrive (see the module docstring)."""
    space = axes(base, spec)
    check_axis_values(base, space)
    check_size(space, spec.max_candidates)
    cands = list(candidates(space))
    order = {c.id: i for i, c in enumerate(cands)}
    by_id = {c.id: c for c in cands}
    done = done or {}
    done_screen, done_simulate = done.get(SCREEN, {}), done.get(SIMULATE, {})
    keep = on_rows or (lambda phase, rows: None)

    rows: dict[str, PlanRow] = {c.id: done_screen[c.id] for c in cands if c.id in done_screen}
    todo = sorted((c for c in cands if c.id not in rows), key=screen_order(space))
    batches = [(base, todo[i:i + SCREEN_BATCH], spec.tokens, prices) for i in range(0, len(todo), SCREEN_BATCH)]
    with tqdm(total=len(cands), initial=len(rows), desc="screen", unit="plan", file=sys.stderr, disable=not progress) as bar:
        for batch in executor.run(_screen_batch, batches, workers, dask):
            keep(SCREEN, batch)
            for r in batch:
                rows[r.candidate_id] = r
            bar.update(len(batch))

    screened = [r for r in rows.values() if r.status == SCREENED]
    if exhaustive and len(screened) > MAX_SIMULATED:
        # search.simulate's own bound: each simulation is ~0.1-1 s, and --exhaustive on the default
        # space asked for ~30,000 of them, hours, without a word (until s20ux)
        raise ScenarioError("--exhaustive", f"{len(screened):,} candidates that fit",
                            f"at most {MAX_SIMULATED:,} candidates that fit the screen, each simulated: narrow the "
                            "lists, or drop --exhaustive to simulate the best search.simulate of them")
    survivors = screened if exhaustive else pick_survivors(screened, spec.days, spec.budget_usd, spec.simulate)
    resumed = [done_simulate[r.candidate_id] for r in survivors if r.candidate_id in done_simulate]
    for r in resumed:
        rows[r.candidate_id] = r
    tasks = [(base, by_id[r.candidate_id], spec.tokens, prices, r.screen_step_time_s) for r in survivors
             if r.candidate_id not in done_simulate]
    with tqdm(total=len(survivors), initial=len(resumed), desc="simulate", unit="plan", file=sys.stderr,
              disable=not progress) as bar:
        for r in executor.run(_simulate_task, tasks, workers, dask):
            keep(SIMULATE, [r])
            rows[r.candidate_id] = r
            bar.update(1)

    ordered = sorted(rows.values(), key=lambda r: order[r.candidate_id])
    simulated = [r for r in ordered if r.status == SIMULATED]
    meeting = [r for r in simulated if _meets(r, spec.days, spec.budget_usd)]
    feasible = [r for r in ordered if r.feasible]
    reasons = Counter(reason_kind(r.reason) for r in ordered if not r.feasible)
    best = min(meeting, key=_objective(spec.budget_usd)) if meeting else None
    fastest = min(simulated, key=lambda r: r.wall_days_goodput) if simulated else None
    return PlanResult(
        question=FASTEST if spec.budget_usd is not None else CHEAPEST,
        tokens=spec.tokens, deadline_days=spec.days, budget_usd=spec.budget_usd,
        axes={k: list(v) for k, v in space},
        evaluated=len(ordered), feasible=len(feasible), simulated=len(simulated), num_meeting_deadline=len(meeting),
        infeasible_by_reason=dict(reasons.most_common()),
        best=best, fastest=fastest, pareto=tuple(front(simulated)), screen_error=screen_error(ordered),
        no_answer=no_answer(spec, len(ordered), len(feasible), len(simulated), reasons, best, fastest,
                            cheapest_in_time(simulated, spec.days)),
        rows=tuple(ordered))


def cheapest_in_time(simulated: list[PlanRow], days: float) -> PlanRow | None:
    """The cheapest simulated plan within the deadline, whatever the budget (None where none is, or none has a price):
    what a budget that no plan meets asks next, how much the deadline costs at the least (s27walk)."""
    priced = [r for r in simulated if _meets(r, days, None) and r.cost_usd_goodput is not None]
    return min(priced, key=_price_key) if priced else None


def no_answer(spec, evaluated: int, feasible: int, simulated: int, reasons: Counter, best, fastest,
              cheapest: PlanRow | None = None) -> str:
    """Why a search has no answer ('' where it has one): the text `twin plan` prints after "infeasible: ". Where a
    budget is missed, the cheapest plan within the deadline is named beside the fastest (until s27walk only the
    fastest was, the figure a deadline question wants, not a budget one)."""
    if feasible == 0:
        return f"none of the {evaluated:,} candidates can run: " + "; ".join(f"{k} ({v:,})" for k, v in reasons.most_common())
    if best is not None:
        return ""
    budget = f" for at most ${spec.budget_usd:,.0f}" if spec.budget_usd is not None else ""
    slowest = (f"; the fastest takes {fastest.wall_days_goodput:.1f} days with failures ({fastest.label}; "
               f"{fastest.wall_days:.1f} compute days)" if fastest else "")
    if spec.budget_usd is not None:
        slowest += (f"; the cheapest within {spec.days:g} day{'' if spec.days == 1 else 's'} costs "
                    f"${cheapest.cost_usd_goodput:,.0f} with failures ({cheapest.label}; "
                    f"{cheapest.wall_days_goodput:.1f} days)" if cheapest is not None else
                    f"; none is within {spec.days:g} day{'' if spec.days == 1 else 's'} at any cost")
    return (f"none of the {simulated:,} simulated plans trains {short_count(spec.tokens)} tokens within "
            f"{spec.days:g} day{'' if spec.days == 1 else 's'}{budget}{slowest}")



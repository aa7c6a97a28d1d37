"""The rows a plan search gives on a sample of the default space, held: the planner's speed-ups
(s21ux: memoised block costs, hoisted memory terms) must leave every row, screened and simulated,
bit for bit as it was. `python -m tests.twin.plan_rows_golden --update` rewrites
tests/golden/plan_rows.json on purpose (a change of physics), and it shows in the diff."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from twin.core.fields import build
from twin.core.results import to_json
from twin.core.scenario import load_scenario
from twin.core.search_specs import SearchSpec
from twin.planning.search import catalog_prices, screen_one, search, simulate_one
from twin.planning.space import Candidate, axes, candidates

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "plan_rows.json"
SAMPLE_STRIDE = 601     # every 601st candidate of the default space's 57,600: 96 candidates, every axis varied
SIMULATED = 3           # of which the first few that fit are also simulated (the simulator's memory sum too)
TOKENS, DAYS = 14.8e12, 60


# plans outside the default space that take the screen's other paths: ZeRO-3 (with and without PP),
# context and sequence parallelism, Megatron's chained parameter gather
EXTRA = [
    {"plan.zero_stage": 3, "plan.pp": 8, "plan.schedule": "1f1b"},
    {"plan.zero_stage": 3, "plan.pp": 1, "plan.schedule": "1f1b", "plan.ep": 64, "cluster.num_gpus": 1024},
    {"plan.zero_stage": 3, "plan.cp": 2, "cluster.num_gpus": 4096},
    {"plan.zero_stage": 2, "plan.pp": 16, "plan.schedule": "interleaved-1f1b", "plan.virtual_stages": 2,
     "cluster.num_gpus": 1024},
    {"plan.cp": 2, "plan.cp_kind": "allgather", "plan.tp": 2},
    {"plan.tp": 2, "plan.sequence_parallel": True, "plan.tp_comm_overlap": True},
    {"plan.param_gather_kind": "megatron_chained", "plan.overlap_grad_reduce": True, "plan.ep": 1,
     "plan.schedule": "interleaved-1f1b", "plan.virtual_stages": 2, "plan.pp": 16, "cluster.num_gpus": 1024},
]


def _extra_candidates() -> list[Candidate]:
    return [Candidate(tuple(sorted(extra.items()))) for extra in EXTRA]


def sample_rows() -> list[dict]:
    """Screened rows of the sample (and EXTRA), then the simulated rows of the first SIMULATED
    that fit, as JSON."""
    sc = load_scenario()
    spec = build(SearchSpec, {"tokens": TOKENS, "days": DAYS}, "search")
    prices = catalog_prices(sc)
    sample = list(candidates(axes(sc, spec)))[::SAMPLE_STRIDE] + _extra_candidates()
    screened = [screen_one(sc, c, TOKENS, prices) for c in sample]
    fit = [c for c, r in zip(sample, screened) if r.feasible][:SIMULATED]
    simulated = [simulate_one(sc, c, TOKENS, prices) for c in fit]
    return [to_json(r) for r in screened + simulated]


# a small search asked whole (screen, survivors, simulation, front, answer): its result as JSON
SEARCH = {"tokens": TOKENS, "days": DAYS, "gpu": ["h800", "h200"], "pp": [8, 16], "zero_stage": [1, 2],
          "schedule": ["dualpipe", "1f1b", "zb1p"], "simulate": 2}


def small_search() -> dict:
    sc = load_scenario()
    return to_json(search(sc, build(SearchSpec, SEARCH, "search"), catalog_prices(sc), workers=1))


def golden() -> dict:
    return {"rows": sample_rows(), "search": small_search()}


if __name__ == "__main__":
    if "--update" not in sys.argv:
        sys.exit("usage: python -m tests.twin.plan_rows_golden --update")
    GOLDEN.write_text(json.dumps(golden(), indent=1) + "\n")
    print(f"wrote {GOLDEN}")

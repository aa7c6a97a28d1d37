"""Fixtures for the report tests: one result of each product, built fast (the analytic stand-in for
the step twin, a hand-made plan search, a small synthetic validation), and every report written
once into a session directory."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from fake_step import fake_step as fake_step_fn  # tests/ is on sys.path (rootdir conftest)

from calibration import sm_reserve, trace
from calibration.validate import MEDIAN_TARGET, P90_TARGET, by_bench, summarize
from reports.load_report import build as write_load_report
from reports.plan_report import write_plan_report, write_serving_capacity_report, write_serving_plan_report
from reports.replay_report import write_report as write_replay_report
from reports.serve_report import write_outputs as write_serve_report
from reports.sweep_report import write_sweep_report
from reports.validation_report import write_report as write_validation_report
from twin.core.results import to_json
from twin.core.scenario import PLAN, SERVING, from_dict, load_scenario, read_raw
from twin.planning.result import CHEAPEST, PlanResult, PlanRow
from twin.planning.search import front, screen_error
from twin.planning.serving import ServingCapacityResult, size_serving
from twin.planning.sweep import GRID, SweepResult
from twin.serving.run import serve
from twin.training.replay.run import replay

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ("replay", "replay_h200", "serve", "plan", "load", "validation", "sweep", "serving_plan", "serving_capacity")


@pytest.fixture(scope="session")
def fake_step():
    return fake_step_fn


@pytest.fixture(scope="session")
def replayed(fake_step):
    """(scenario, the result's JSON form the renderers take, the typed ReplayResult): V3 on H800."""
    sc = load_scenario()
    result = replay(sc, step_fn=fake_step)
    return sc, to_json(result), result


@pytest.fixture(scope="session")
def replayed_h200(fake_step):
    """The same run on H200: DeepSeek's H800 figures are context, not a comparison."""
    sc = load_scenario(overrides=["cluster.gpu=h200"])
    result = replay(sc, step_fn=fake_step)
    return sc, to_json(result), result


@pytest.fixture(scope="session")
def served():
    sc = load_scenario(ROOT / "scenarios" / "r1_serve_h200.toml", kind=SERVING)
    return sc, serve(sc)


def plan_row(gpu: str, num_gpus: int, pp: int, days: float, price: float | None) -> PlanRow:
    """A simulated row with no failure downtime (ETTR 1: its days, GPU-hours and cost with failures
    are its compute ones)."""
    gpu_hours = days * 24 * num_gpus
    cost_usd = None if price is None else gpu_hours * price
    return PlanRow(candidate_id=f"{gpu}{num_gpus}pp{pp}", label=f"{gpu} x{num_gpus} pp{pp}", gpu=gpu, num_gpus=num_gpus,
                   plan={"tp": 1, "pp": pp, "ep": 64, "schedule": "dualpipe", "micro_batch_seqs": 1}, status="simulated",
                   feasible=True, screen_step_time_s=17.0 * (1 + pp / 400), step_time_s=17.0, mfu_frac=0.4,
                   tokens_per_s_per_gpu=1700.0, memory_per_gpu_bytes=70 * 2**30, wall_days=days,
                   gpu_hours=gpu_hours, cost_usd=cost_usd, ettr_frac=1.0, wall_days_goodput=days,
                   gpu_hours_goodput=gpu_hours, cost_usd_goodput=cost_usd)


@pytest.fixture(scope="session")
def planned():
    """A plan search by hand: priced H800 and H200 rows, an unpriced B200 row, one out of memory.
    Front in cost (H800/H200): 20 days $9.2M (h200 x4096), 30 days $5.9M (h800 x4096), 45 days $4.4M (h800 x2048)."""
    rows = (plan_row("h800", 2048, 16, 45.0, 2.0), plan_row("h800", 4096, 16, 30.0, 2.0), plan_row("h800", 4096, 8, 33.0, 2.0),
            plan_row("h200", 4096, 16, 20.0, 3.5), plan_row("b200", 2048, 16, 18.0, None),
            PlanRow(candidate_id="oom", label="h800 x2048 pp8", gpu="h800", num_gpus=2048,
                    plan={"tp": 1, "pp": 8, "ep": 64, "schedule": "dualpipe", "micro_batch_seqs": 1}, status="infeasible",
                    feasible=False, reason="out of memory on pipeline rank 0: needs 83.1 GiB of 80 GiB"))
    simulated = [r for r in rows if r.feasible]
    on_time = [r for r in simulated if r.wall_days <= 40.0]
    ranked = sorted(on_time, key=lambda r: (r.cost_usd is None, r.cost_usd or r.gpu_hours))
    result = PlanResult(question=CHEAPEST, tokens=14.8e12, deadline_days=40.0, budget_usd=None,
                        axes={"cluster.gpu": ["h800", "h200", "b200"], "cluster.num_gpus": [2048, 4096], "plan.pp": [8, 16]},
                        evaluated=len(rows), feasible=len(simulated), simulated=len(simulated), num_meeting_deadline=len(on_time),
                        infeasible_by_reason={"out of memory": 1}, best=ranked[0], fastest=min(simulated, key=lambda r: r.wall_days),
                        pareto=tuple(front(simulated)), screen_error=screen_error(list(rows)), no_answer="", rows=rows)
    raw, source = read_raw(ROOT / "scenarios" / "v3_plan.toml")
    return from_dict(raw, source, PLAN), result


def _case(gpu: str, bench: str, i: int) -> dict:
    measured = 1e-4 * (1 + i)
    err = ((i * 37) % 11 - 5) / 200        # -2.5% .. +2.5%, deterministic
    return {"name": f"{bench} case {i}", "gpu": gpu, "bench": bench, "measured_s": measured,
            "predicted_s": measured * (1 + err), "rel_error": err, "held_out": i % 3 == 0}


@pytest.fixture(scope="session")
def validated():
    """A validation result in calibration.validate's shape: synthetic cases, DeepSeek's H800 trace
    against the default profile, and the SM-reservation check on the H100 records."""
    cases = [_case(gpu, bench, i) for gpu in ("h100", "h200") for bench in ("gemm", "attn_fwd", "memory") for i in range(12)]
    result = {"targets": {"median_abs_rel_error": MEDIAN_TARGET, "p90_abs_rel_error": P90_TARGET}, "gpus": {}, "cases": cases,
              "not_predicted": {"h100": ["decode tiny b1", "prefill tiny b1"], "h200": []}}
    for gpu in ("h100", "h200"):
        sub = [c for c in cases if c["gpu"] == gpu]
        s = summarize(sub)
        s.update(profile="synthetic", num_predicted=len(sub), by_bench=by_bench(sub),
                 meets_targets=s["median_abs_rel_error"] <= MEDIAN_TARGET and s["p90_abs_rel_error"] <= P90_TARGET)
        result["gpus"][gpu] = s
    result["h800_trace"] = trace.compare()
    result["sm_reserve"] = {"h100": sm_reserve.compare("h100")}
    return result


@pytest.fixture(scope="session")
def swept():
    """A sweep result by hand (rows as twin.planning.sweep journals them): two points ran, one out of memory."""
    rows = ({"candidate_id": "a1", "plan.pp": 16, "cluster.gpu": "h800", "status": "ok", "reason": None, "step_time_s": 18.5},
            {"candidate_id": "a2", "plan.pp": 16, "cluster.gpu": "h200", "status": "ok", "reason": None, "step_time_s": 16.2},
            {"candidate_id": "a3", "plan.pp": 8, "cluster.gpu": "h800", "status": "infeasible", "reason": "out of memory: 96.9 GiB > 74.5 GiB"})
    result = SweepResult(mode=GRID, axes={"plan.pp": [8, 16], "cluster.gpu": ["h800", "h200"]}, num_points=3, num_ok=2,
                         num_invalid=0, num_infeasible=1, num_error=0, evaluated_now=3, rows=rows)
    return load_scenario(), result


@pytest.fixture(scope="session")
def serving_planned():
    """The serving question on the default serving scenario, 200 requests per deployment (~0.5 s)."""
    sc = load_scenario(kind=SERVING)
    return sc, size_serving(sc, 2.0, 5.0, 0.1, num_requests=200)


@pytest.fixture(scope="session")
def report_dirs(tmp_path_factory, replayed, replayed_h200, served, planned, validated, swept, serving_planned) -> dict[str, Path]:
    """Every report written once, by the writers the CLI calls."""
    root = tmp_path_factory.mktemp("reports")
    dirs = {name: root / name for name in REPORTS}
    for key, (sc, _, typed) in (("replay", replayed), ("replay_h200", replayed_h200)):
        write_replay_report(typed, sc, dirs[key])
    write_serve_report(served[1], served[0], dirs["serve"])
    write_plan_report(planned[1], planned[0], dirs["plan"])
    write_load_report(dirs["load"], sc=load_scenario(), quick=True)
    write_validation_report(validated, dirs["validation"])
    write_sweep_report(swept[1], swept[0], dirs["sweep"])
    write_serving_plan_report(serving_planned[1], serving_planned[0], dirs["serving_plan"])
    # a capacity curve of the same answer at two rates and a rate no deployment serves (no simulation of its own)
    sc, one = serving_planned
    none = dataclasses.replace(one, rate_per_s=9.0, best=None, best_colocated=None, best_disaggregated=None,
                               infeasible_by_reason={"TTFT over target": 3})
    curve = ServingCapacityResult(5.0, 0.1, 90.0, (one, dataclasses.replace(one, rate_per_s=4.0), none))
    write_serving_capacity_report(curve, sc, dirs["serving_capacity"])
    return dirs

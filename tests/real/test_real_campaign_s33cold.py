"""real/campaigns/s33cold.sh (docs/notes/s33cold_rule.md): set R, fresh held-out load runs on mapped models (repeat
sessions: one Poisson stream early and late in one process; loop-first sessions: a closed loop as the process's first
run, and again late), then the kernel map of any model without one. Without a GPU it runs nothing; its CPU dry run runs
the tiny plan, then the tiny model's map (it has none); set R's plans are fresh (no record holds their seeds, lengths or
loads) and every model of it has a committed map."""

import csv

from calibration import s33cold
from calibration import serve_load_validation as slv
from real.serve.plans import (PLANS, S33R_IN, S33R_LOOP_FIRST, S33R_MODELS, S33R_PLANS, S33R_REPEAT,
                              S33R_WARM_TOKENS)
from tests.campaigns import dry_run, without_gpus
from tests.real.test_real_campaign_s26start2 import _engine, _seen
from twin.serving.engine import IDLE_WAKE_AFTER_S
from twin.serving.pipeline import eager_ops


def test_s33cold_without_a_gpu_runs_nothing(tmp_path):
    d, log = without_gpus("s33cold", tmp_path)
    assert "skipped: no GPU" in log and "s33cold end" in log and (d / "host.txt").exists()
    assert "parts " + " ".join(f"set:gpu1-s33r-{s}" for s in S33R_MODELS.values()) in log
    assert "maps none" in log   # every set R model has a committed map


def test_s33cold_cpu_dry_run_runs_the_set_then_the_missing_map(tmp_path):
    d, log = dry_run("s33cold", tmp_path, timeout_s=200, scale=2)
    assert "maps tiny" in log and "set tiny-new exit 0" in log and "kmap tiny exit 0" in log, log[-2000:]
    assert log.index("set tiny-new exit") < log.index("kmap tiny exit") and "s33cold end" in log
    with (d / "kmap" / "tiny" / "kernelmap.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {int(r["m"]) for r in rows} == set(range(1, 49)) and all(r["gpu_name"] and r["torch_version"] for r in rows)
    assert (d / "set" / "tiny" / "serve_iterations.csv").exists()


def test_s33r_plans_are_fresh_mapped_and_repeat_their_streams():
    # s33loop's set T (gpu1-s33t-*, fitting records run on another lease before set R, its plans merged after set R's
    # rule) shares with set R only the concurrency of two loops (v2-lite-slice and v3-slice-1l at 15), at other lengths
    # and seeds: checked apart below
    seeds, lengths, loads = _seen(("gpu1-s33r-", "gpu1-s33t-"))
    t_plans = [p for name, p in PLANS.items() if name.startswith("gpu1-s33t-")]
    assert not {r.seed for p in t_plans for r in p.runs} & {r.seed for p in S33R_PLANS.values() for r in p.runs}
    assert S33R_IN not in {r.input_len for p in t_plans for r in p.runs}
    lo, hi = (int(x) for x in S33R_IN.split(":")[1].split("-"))
    assert S33R_WARM_TOKENS < lo and tuple(S33R_MODELS) == s33cold.FRESH_MODELS
    assert set(S33R_MODELS) == {*S33R_REPEAT, *S33R_LOOP_FIRST}
    run_ids = [r.name for p in S33R_PLANS.values() for r in p.runs]
    assert len(set(run_ids)) == len(run_ids) == s33cold.FRESH_RUNS
    for model, short in S33R_MODELS.items():
        plan = PLANS[f"gpu1-s33r-{short}"]
        _engine(plan)
        assert plan.model == model and eager_ops(model) is not None and slv.cold_kernel_map(model) is not None
        assert all(r.split == "holdout" and r.pin == "core" and r.input_len == S33R_IN for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [S33R_WARM_TOKENS, 0, 0, 0]
        first, *_, again = plan.runs
        assert s33cold.FIRST in first.name and sum(s33cold.FIRST in r.name for r in plan.runs) == 1
        kinds = [r.arrival for r in plan.runs]
        if model in S33R_REPEAT:   # one Poisson stream first and last
            assert kinds == ["poisson", "closed", "poisson", "poisson"] and s33cold.AGAIN in again.name
            assert (again.seed, again.rate_per_s) == (first.seed, first.rate_per_s)
        else:   # a closed loop first, and again; a Poisson stream, and again
            assert kinds == ["closed", "poisson", "closed", "poisson"]
            assert (plan.runs[2].seed, plan.runs[2].concurrency) == (first.seed, first.concurrency)
            assert (again.seed, again.rate_per_s) == (plan.runs[1].seed, plan.runs[1].rate_per_s)
            assert all(s33cold.AGAIN in r.name for r in plan.runs[2:])
        assert hi + max(r.concurrency for r in plan.runs) < plan.token_budget
        assert all(1.0 / r.rate_per_s >= 2 * IDLE_WAKE_AFTER_S for r in plan.runs if r.arrival == "poisson")
        assert not {r.seed for r in plan.runs} & seeds and (model, S33R_IN) not in lengths
        for r in plan.runs:
            assert (model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency) not in loads

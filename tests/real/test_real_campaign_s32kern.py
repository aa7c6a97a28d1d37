"""real/campaigns/s32kern.sh (docs/notes/s32kern_rule.md): set N, fresh held-out load runs in set K's regime, then the
kernel maps of set N's, K's and Q's models (fitting inputs). Without a GPU it runs nothing; its CPU dry run runs the tiny
plan, then the tiny model's map; set N's plans are fresh (no record holds their seeds, lengths or loads)."""

import csv

from real.serve.plans import (PLANS, S31Q_MODELS, S32K_MODELS, S32KERN_MAP_MODELS, S32N_IN, S32N_MODELS, S32N_OUT,
                              S32N_PLANS, S32N_WARM_TOKENS)
from tests.campaigns import dry_run, without_gpus
from tests.real.test_real_campaign_s26start2 import _engine, _seen
from twin.serving.engine import IDLE_WAKE_AFTER_S
from twin.serving.pipeline import eager_ops


def test_s32kern_without_a_gpu_runs_nothing(tmp_path):
    d, log = without_gpus("s32kern", tmp_path)
    assert "skipped: no GPU" in log and "s32kern end" in log and (d / "host.txt").exists()
    assert "parts " + " ".join(f"set:gpu1-s32n-{s}" for s in S32N_MODELS.values()) in log
    assert "maps " + " ".join(S32KERN_MAP_MODELS) in log


def test_s32kern_cpu_dry_run_runs_the_set_then_the_map(tmp_path):
    d, log = dry_run("s32kern", tmp_path, timeout_s=200, scale=2)
    assert "set tiny-new exit 0" in log and "kmap tiny exit 0" in log and "s32kern end" in log, log[-2000:]
    assert log.index("set tiny-new exit") < log.index("kmap tiny exit")
    with (d / "kmap" / "tiny" / "kernelmap.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {int(r["m"]) for r in rows} == set(range(1, 49)) and all(r["gpu_name"] and r["torch_version"] for r in rows)
    assert (d / "set" / "tiny" / "serve_iterations.csv").exists()


def test_s32n_plans_are_fresh_in_set_k_regime_and_every_judged_model_is_mapped():
    seeds, lengths, loads = _seen(("gpu1-s32n-",))
    lo, hi = (int(x) for x in S32N_IN.split(":")[1].split("-"))
    assert S32N_WARM_TOKENS < lo and set(S32KERN_MAP_MODELS) == {*S32N_MODELS, *S32K_MODELS, *S31Q_MODELS}
    run_ids = [r.name for p in S32N_PLANS.values() for r in p.runs]
    assert len(set(run_ids)) == len(run_ids) == 12
    for model, short in S32N_MODELS.items():
        plan = PLANS[f"gpu1-s32n-{short}"]
        _engine(plan)
        assert plan.model == model and eager_ops(model) is not None
        assert all(r.split == "holdout" and r.pin == "core" and (r.input_len, r.output_len) == (S32N_IN, S32N_OUT)
                   for r in plan.runs)
        assert [r.warm_shapes for r in plan.runs] == [S32N_WARM_TOKENS, 0, 0]
        assert [r.arrival for r in plan.runs] == ["poisson", "closed", "poisson"]
        assert hi + plan.runs[1].concurrency < plan.token_budget
        assert all(1.0 / r.rate_per_s >= 2 * IDLE_WAKE_AFTER_S for r in plan.runs if r.arrival == "poisson")
        assert not {r.seed for r in plan.runs} & seeds and (model, S32N_IN) not in lengths
        for r in plan.runs:
            assert (model, r.arrival, r.rate_per_s if r.arrival == "poisson" else r.concurrency) not in loads

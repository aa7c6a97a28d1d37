"""The replay's plan search for a stage whose own plan does not fit: every fallback that fits is
simulated and the fastest runs; dominated full-recomputation plans are not simulated."""

import dataclasses

from fake_step import fake_step
from twin.core.errors import InfeasiblePlan
from twin.core.scenario import load_scenario
from twin.training.replay.stages import StepCache, resolve_stage


class SerialCache(StepCache):
    """Simulates in this process, so the stand-in step functions below can record their calls."""

    def prefetch(self, jobs, workers=None):
        return None


def test_fastest_fitting_plan_runs_and_dominated_plans_are_skipped():
    seen = []

    def step_fn(sc, perturb=None, **_):
        p = sc.plan
        seen.append((p.tp, p.cp, p.recompute))
        if p.tp * p.cp < 8 and p.recompute != "full":   # activations fit only when split 8 ways
            raise InfeasiblePlan("fake OOM", {"activations": 1e11})
        r = fake_step(sc)
        # made-up speeds: CP is worth more than TP here; full recomputation costs a third more
        t = 10.0 / p.cp + 12.0 / p.tp + (5.0 if p.recompute == "full" else 0.0)
        return dataclasses.replace(r, step_time_s=t)

    sc = load_scenario(overrides=["run.fallback_tp=[2, 4]", "run.fallback_cp=[2, 4]"])
    stage = sc.run.stages[2]                       # 128K: DualPipe cannot take its micro-batches as is
    sp = resolve_stage(sc, stage, SerialCache(step_fn))
    p = sp.scenario.plan
    # batch 480 on 2,048 GPUs takes tp*cp >= 4 (dp = 128 / (tp*cp) must divide it); the fits: tp*cp >= 8,
    # or full recomputation; the fastest is tp=4, cp=4 (10/4 + 12/4)
    assert (p.tp, p.cp, p.recompute, p.sequence_parallel) == (4, 4, "selective", True)
    assert sp.note.startswith("tp=4 with sequence parallelism, cp=4 (fallback: fastest of")
    # a plan that fits without full recomputation is never simulated with it
    assert (4, 4, "full") not in seen and (2, 4, "full") not in seen
    assert (4, 1, "full") in seen and (2, 2, "full") in seen   # they do not fit without it, so it is tried


def test_a_fitting_scenario_plan_is_kept_without_search():
    calls = []

    def step_fn(sc, perturb=None, **_):
        calls.append(sc.plan)
        return fake_step(sc)

    sc = load_scenario()
    sp = resolve_stage(sc, sc.run.stages[0], SerialCache(step_fn))
    assert sp.note == "the scenario's plan" and len(calls) == 1


def test_an_interleaved_scenario_falls_back_to_a_schedule_of_one_chunk_a_rank():
    """s27walk: the fallback schedules (zb1p, 1f1b) kept an interleaved scenario's virtual stages and were refused
    ("plan.virtual_stages: got 4; allowed: 1 for schedule '1f1b'") for every option: llama3-405b's 128K stage (480
    sequences, 30 micro-batches, no multiple of PP 16) could only report the last refusal. They now run V = 1."""
    def step_fn(sc, perturb=None, **_):
        return fake_step(sc)

    sc = load_scenario(overrides=["plan.schedule='interleaved-1f1b'", "plan.virtual_stages=2", "plan.tp=8",
                                  "run.fallback_cp=[2]", "run.fallback_tp=[]"])
    stage = sc.run.stages[2]   # 128K: 480 sequences over dp 16 = 30 micro-batches, at CP 2 60: no multiple of PP 16
    sp = resolve_stage(sc, stage, SerialCache(step_fn))
    assert sp.scenario is not None, sp.note
    p = sp.scenario.plan
    assert (p.schedule, p.virtual_stages) == ("zb1p", 1) and sp.note.startswith("schedule zb1p"), sp.note
    assert "virtual_stages" not in sp.note, sp.note

"""torch.distributed.pipelining's runtime (plan.pp_runtime 'torch_pipelining', docs/notes/s14pp_rule.md):
PipelineScheduleMulti's time-step table and its lock-step batches, against a hand recursion of the
runtime; Schedule1F1B and every other plan unchanged. Tiny costs and a tiny model; formulas, not figures."""

import dataclasses

import pytest

from twin.core.errors import ScenarioError
from twin.core.scenario import from_dict
from twin.core.schedules import build_schedule, torch_lockstep_needs, torch_time_steps
from twin.sim.pipeline import Task, simulate_pipeline
from twin.training.step import runtime_needs, simulate_step


class UniformCosts:
    """Every forward f_s, every backward b_s on one compute stream; every hop hop_s."""

    def __init__(self, f_s: float, b_s: float, hop_s: float):
        self.f_s, self.b_s, self.hop_s = f_s, b_s, hop_s

    def chains(self, rank, op):
        return [[Task("compute", self.f_s if op.kind == "F" else self.b_s, op.kind)]]

    def p2p_s(self, src, dst, kind):
        return self.hop_s


def lockstep_makespan_s(pp: int, n: int, v: int, f_s: float, b_s: float, hop_s: float) -> float:
    """The runtime written out step by step: each rank's step ends when its batch does, a batch
    when every rank in it has finished the step's compute, plus the hop (an empty batch: at once)."""
    table = torch_time_steps(pp, n, v)
    last = pp * v - 1
    done = [0.0] * pp

    def at(rank, t):
        return table[rank][t] if t < len(table[rank]) else None

    def target(rank, op):   # the rank an op's output goes to, None at the pipeline's ends
        stage = op.chunk * pp + rank
        if op.kind == "F":
            return None if stage == last else (stage + 1) % pp
        return None if stage == 0 else (stage - 1) % pp

    for t in range(max(map(len, table))):
        end = [done[r] + (0.0 if at(r, t) is None else f_s if at(r, t).kind == "F" else b_s) for r in range(pp)]
        new = []
        for r in range(pp):
            group = set()
            if at(r, t) is not None and target(r, at(r, t)) is not None:
                group.add(target(r, at(r, t)))
            for o in {(r - 1) % pp, (r + 1) % pp} - {r}:
                if at(o, t) is not None and target(o, at(o, t)) == r:
                    group.add(o)
            new.append(max([end[r]] + [end[o] for o in group]) + (hop_s if group else 0.0))
        done = new
    return max(done)


@pytest.mark.parametrize("pp,n,v", [(4, 4, 2), (4, 8, 2), (8, 8, 2), (4, 4, 3)])
def test_time_steps_run_the_schedules_op_order_with_idle_steps(pp, n, v):
    table = torch_time_steps(pp, n, v)
    s = build_schedule("interleaved-1f1b", pp, n, v)
    for rank in range(pp):
        assert tuple(op for op in table[rank] if op is not None) == s.programs[rank]
        assert all(op is None for op in table[rank][:rank])          # pre-padding: r idle steps
    # the first backward one step after torch's "earliest time step of first backward", V PP + 2 (PP-1-r)
    # (its 1F1B phase opens with a forward, its cooldown with an idle step), so every rank's
    # backwards fall on steps of one parity
    for rank in range(pp):
        steps_b = [t for t, op in enumerate(table[rank]) if op is not None and op.kind == "BW"]
        assert steps_b[0] == v * pp + 2 * (pp - 1 - rank) + 1
        assert all(t % 2 == steps_b[0] % 2 for t in steps_b)


@pytest.mark.parametrize("f_s,b_s,hop_s", [(1.0, 2.0, 0.0), (1.0, 3.0, 0.1), (0.7, 2.9, 0.05)])
@pytest.mark.parametrize("pp,n,v", [(4, 4, 2), (4, 8, 2), (8, 8, 2)])
def test_engine_with_lockstep_needs_is_the_hand_recursion(pp, n, v, f_s, b_s, hop_s):
    s = build_schedule("interleaved-1f1b", pp, n, v)
    costs = UniformCosts(f_s, b_s, hop_s)
    got = simulate_pipeline(s, costs, streams=("compute",), extra_needs=torch_lockstep_needs(s)).makespan_s
    assert got == pytest.approx(lockstep_makespan_s(pp, n, v, f_s, b_s, hop_s), rel=1e-12)


def test_lockstep_never_shortens_the_dataflow_and_can_lengthen_it():
    s = build_schedule("interleaved-1f1b", 4, 4, 2)
    costs = UniformCosts(1.0, 2.0, 0.0)
    free = simulate_pipeline(s, costs, streams=("compute",)).makespan_s
    held = simulate_pipeline(s, costs, streams=("compute",), extra_needs=torch_lockstep_needs(s)).makespan_s
    assert free == pytest.approx(33.0) and held == pytest.approx(34.0)   # worked by hand from the table


def test_lockstep_is_refused_for_a_single_stage_schedule():
    with pytest.raises(ValueError):
        torch_lockstep_needs(build_schedule("1f1b", 4, 8))


DENSE = {"name": "tiny-dense", "num_layers": 8, "hidden_size": 1024, "vocab_size": 1024, "num_heads": 16,
         "attention": "gqa", "num_kv_heads": 8, "head_dim": 64, "intermediate_size": 4096, "num_dense_layers": 8}


def scenario(schedule="interleaved-1f1b", runtime="torch_pipelining", pp=4, **plan):
    p = {"tp": 1, "pp": pp, "ep": 1, "schedule": schedule, "gemm_precision": "bf16", "recompute": "full",
         "zero_stage": 3, "pp_runtime": runtime, **plan}
    if schedule == "interleaved-1f1b":
        p.setdefault("virtual_stages", 2)
    return from_dict({"name": "t", "model": DENSE, "cluster": {"gpu": "h100", "num_gpus": pp * 2}, "plan": p,
                      "workload": {"seq_len": 4096, "global_batch_seqs": 16}})


def test_step_interleaved_under_torch_runtime_is_slower_than_dataflow():
    torch_s = simulate_step(scenario(), record_events=False).step_time_s
    dataflow_s = simulate_step(scenario(runtime="dataflow"), record_events=False).step_time_s
    assert torch_s > dataflow_s


def test_step_1f1b_under_torch_runtime_is_the_dataflow():
    # Schedule1F1B's own loop: each fused send/receive pairs an op's needed input with the same
    # neighbour's matching batch, so it waits on nothing the dataflow does not
    sc = scenario(schedule="1f1b")
    assert runtime_needs(sc, build_schedule("1f1b", 4, sc.num_microbatches)) is None
    assert simulate_step(sc, record_events=False).step_time_s == simulate_step(
        scenario(schedule="1f1b", runtime="dataflow"), record_events=False).step_time_s


def test_torch_runtime_refused_for_schedules_it_does_not_model():
    with pytest.raises(ScenarioError, match="pp_runtime"):
        scenario(schedule="zb1p")
    assert dataclasses.asdict(scenario(schedule="zb1p", runtime="dataflow").plan)["pp_runtime"] == "dataflow"


def test_last_stage_keeps_every_micro_batchs_logits_under_torch_pipelining(monkeypatch):
    from twin.training import step as step_mod
    from twin.training.results import Perturb

    sc = scenario(schedule="1f1b")
    want = sc.num_microbatches * step_mod.local_tokens(sc) * sc.model.vocab_size / sc.plan.tp * 2
    assert step_mod.retained_logits_bytes(sc) == want > 0
    mems = step_mod._prepare(sc, None, Perturb(), False)[3]
    assert mems[-1]["pp_outputs"] == want and all("pp_outputs" not in m for m in mems[:-1])
    assert step_mod.retained_logits_bytes(scenario(schedule="1f1b", runtime="dataflow")) == 0.0
    assert step_mod.retained_logits_bytes(scenario(schedule="1f1b", pp=1)) == 0.0
    monkeypatch.setattr(step_mod, "ADOPT_PP_OUTPUTS_MEMORY", False)   # the switch off: no term
    assert step_mod.retained_logits_bytes(sc) == 0.0

"""s26unify: the plan values a converted real/pipeline run names (`twin scenario from-bench`): no optimizer timed
(plan.optimizer_kernel = 'none'), real/'s eager AccumulateGrad (plan.grad_accumulate = 'autograd') and its all-reduces
(plan.grad_reduce_groups = 'by_group'). All
default off; a few CPU-seconds."""

import pytest

from twin.core.errors import ScenarioError
from twin.core.scenario import from_dict
from twin.training.step import simulate_step

BENCH = {"name": "t", "model": {"name": "mixtral-mla-slice", "num_layers": 8, "num_mtp_modules": 0},
         "cluster": {"gpu": "h200", "num_gpus": 4},
         "plan": {"tp": 1, "cp": 1, "pp": 4, "ep": 1, "schedule": "1f1b", "micro_batch_seqs": 1, "zero_stage": 0,
                  "recompute": "none", "kernels": "eager", "overlap_dp_comm": False},
         "workload": {"seq_len": 2048, "global_batch_seqs": 8}}


def _step(**plan):
    return simulate_step(from_dict({**BENCH, "plan": {**BENCH["plan"], **plan}}))


def test_no_optimizer_takes_the_update_out_of_the_step_and_nothing_else():
    fused, none = _step(), _step(optimizer_kernel="none")
    assert fused.op_time_s["optimizer"] > 0.01 and none.op_time_s["optimizer"] == 0.0
    assert none.pipeline_time_s == fused.pipeline_time_s
    assert none.step_time_s == pytest.approx(fused.step_time_s - fused.op_time_s["optimizer"], rel=1e-12)


def test_autograd_accumulation_adds_a_task_to_each_backward_after_the_first():
    fused, autograd = _step(), _step(grad_accumulate="autograd")
    assert "grad_accumulate" not in fused.op_time_s
    # 8 micro-batches on the busiest rank, each ~20 ms of the experts' transposed copy (2 MoE layers)
    assert 8 * 0.01 < autograd.op_time_s["grad_accumulate"] < 8 * 0.04
    assert autograd.pipeline_time_s > fused.pipeline_time_s + 8 * 0.01


@pytest.mark.parametrize("field, value", [("optimizer_kernel", "none"), ("grad_accumulate", "autograd"),
                                          ("grad_reduce_groups", "by_group")])
def test_the_bench_values_need_zero_stage_0(field, value):
    with pytest.raises(ScenarioError, match=rf"plan.{field}: got '{value}'; allowed: .*zero_stage"):
        from_dict({**BENCH, "plan": {**BENCH["plan"], field: value, "zero_stage": 1}})


def test_by_group_reductions_at_pp2_ep2_leave_the_experts_unreduced(monkeypatch):
    """PP2 x EP2 on 4 GPUs: dp 2 = ep, so each rank's experts are its own: real/'s reductions and the default
    ('dense_and_expert', s27egrad) all-reduce the dense gradients only; the earlier one-buffer rule
    (ADOPT_EXPERT_GRAD_GROUP off) reduced them all (~6.7 times the dense ones; all inside the 4 GPUs' node
    since s27egrad2: the NICs no longer widen the gap)."""
    from twin.training import step as step_module
    plan = {"pp": 2, "ep": 2, "schedule": "zb1p"}
    by_group, default = _step(**plan, grad_reduce_groups="by_group"), _step(**plan)
    monkeypatch.setattr(step_module, "ADOPT_EXPERT_GRAD_GROUP", False)
    step_module._PREPARED.clear()
    try:
        one = _step(**plan)
    finally:
        step_module._PREPARED.clear()
    assert by_group.pipeline_time_s == one.pipeline_time_s == default.pipeline_time_s
    for r in (by_group, default):
        assert 0 < r.op_time_s["dp_reduce_scatter"] < one.op_time_s["dp_reduce_scatter"] / 5

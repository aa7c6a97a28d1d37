"""s27egrad: a rank's routed-expert gradients are summed over the ranks holding the same experts (their
expert-data-parallel group: Megatron-LM's expert buffers, torchtitan's edp mesh), the dense ones over the
data-parallel ranks (docs/notes/s27egrad_rule.md, ADOPT_EXPERT_GRAD_GROUP). A few CPU-seconds."""

import pytest

from twin.core.scenario import from_dict, load_scenario
from twin.planning.screen import screen
from twin.training import step as step_module
from twin.training.results import Perturb
from twin.training.step import (ReduceGroup, _prepare, dp_reduce_groups, dp_tail_s, expert_dp_ranks, rank_params,
                                real_reductions_s, simulate_step)


@pytest.fixture
def switch(monkeypatch):
    """Sets ADOPT_EXPERT_GRAD_GROUP; the step cache keeps costs built under the other setting: cleared both ways."""
    def set_to(value: bool):
        monkeypatch.setattr(step_module, "ADOPT_EXPERT_GRAD_GROUP", value)
        step_module._PREPARED.clear()
    yield set_to
    step_module._PREPARED.clear()


def _moe(gpus: int, **plan):
    """A small MoE (mixtral-mla-slice: 8 experts) on `gpus` H100s, one pipeline stage, ZeRO-1."""
    p = {"tp": 1, "pp": 1, "ep": 1, "schedule": "1f1b", "zero_stage": 1, "gemm_precision": "bf16", **plan}
    return from_dict({"name": "t", "model": {"name": "mixtral-mla-slice", "num_layers": 4, "num_mtp_modules": 0},
                      "cluster": {"gpu": "h100", "num_gpus": gpus}, "plan": p,
                      "workload": {"seq_len": 2048, "global_batch_seqs": 2 * gpus}})


def _tail(sc, rank=0):
    schedule, costs, profile, mems, _, _ = _prepare(sc, None, Perturb(), check_memory=False)
    held = rank_params(sc, costs)[rank]
    return held, mems[rank], dp_tail_s(sc, mems[rank], held, sc.gpu, profile, 1.0)


def _ring_s(num_bytes, group: ReduceGroup, gpu):
    """A ring reduce-scatter across nodes by hand: (n - 1) / n of the buffer through the group's NICs on a
    node (46 GB/s each on the catalog's H800 and H100), up to NVLink, plus a scale-out hop's latency a step."""
    n = group.ranks
    bw = min(group.ranks_per_node * gpu.scale_out_achieved_bytes_per_s, gpu.nvlink_achieved_bytes_per_s)
    return num_bytes * (n - 1) / n / bw + (n - 1) * gpu.scale_out_latency_s


def test_v3s_groups_are_the_reports_layout():
    """DeepSeek-V3 (report §3.2, §4.2): 2,048 GPUs in PP16 give a stage 128 GPUs on 16 nodes; EP64 on 8
    whole nodes puts each expert on 2 of them, on two nodes. Dense: 128 ranks, 8 a node."""
    sc = load_scenario(None)
    assert (sc.dp, sc.plan.ep, sc.plan.pp, sc.gpu.gpus_per_node) == (128, 64, 16, 8)
    assert expert_dp_ranks(sc) == 2
    assert dp_reduce_groups(sc, sc.gpu) == (ReduceGroup(128, False, 8), ReduceGroup(2, False, 1))


def test_v3s_tail_is_the_dense_ring_then_the_experts_ring(switch):
    switch(True)
    sc = load_scenario(None)
    held, mem, (rs_s, _, ag_s) = _tail(sc, rank=1)
    # the buffers are the memory count's: BF16 weights of both, optimizer state sharded 128 and 2 ways
    assert 2 * held.total == pytest.approx(mem["weights"], rel=1e-12)
    assert mem["optimizer"] == pytest.approx(sc.plan.optimizer_bytes_per_param * (held.dense / 128 + held.expert / 2),
                                             rel=1e-12)
    assert held.expert > 0.4 * held.total   # a middle rank: 8 MoE blocks' 4 experts each
    dense, expert = dp_reduce_groups(sc, sc.gpu)
    want = _ring_s(2 * held.dense, dense, sc.gpu) + _ring_s(2 * held.expert, expert, sc.gpu)
    assert rs_s == pytest.approx(want, rel=1e-12) and ag_s == pytest.approx(want, rel=1e-12)
    switch(False)   # the rule before: one buffer over the 128 ranks, one NIC a node
    _, _, (rs_old, _, _) = _tail(sc, rank=1)
    assert rs_old == pytest.approx(_ring_s(2 * held.total, ReduceGroup(128, False, 1), sc.gpu), rel=1e-12)
    assert rs_s < rs_old / 2


def test_v3s_step_shortens_by_less_than_half_a_second(switch):
    """The rule's C2: the step falls, by at most 0.5 s (its whole exposed reduce-scatter was 0.213 s)."""
    sc = load_scenario(None)
    switch(False)
    before = simulate_step(sc, record_events=False)
    switch(True)
    after = simulate_step(sc, record_events=False)
    print(f"V3 step {before.step_time_s:.4f} -> {after.step_time_s:.4f} s")
    assert after.pipeline_time_s == before.pipeline_time_s
    assert after.memory_per_gpu_bytes == before.memory_per_gpu_bytes
    assert before.step_time_s - 0.5 <= after.step_time_s < before.step_time_s


@pytest.mark.parametrize("adopt", [False, True])
def test_without_expert_parallelism_the_groups_are_one_buffer(switch, adopt):
    """EP 1, TP 1: the experts' replicas are the data-parallel ranks, the same NICs: one buffer as before."""
    switch(adopt)
    sc = _moe(16)
    _, _, with_switch = _tail(sc)
    switch(not adopt)
    _, _, other = _tail(sc)
    assert with_switch == pytest.approx(other, rel=1e-12)


def test_ep_inside_a_node_strides_the_expert_group_over_nodes(switch):
    """EP 4 on 16 GPUs (two nodes): an EP group is 4 neighbouring ranks, the expert group 4 ranks strided by
    4, two of them a node; the dense group 16 ranks, 8 a node."""
    switch(True)
    sc = _moe(16, ep=4)
    dense, expert = dp_reduce_groups(sc, sc.gpu)
    assert (dense, expert) == (ReduceGroup(16, False, 8), ReduceGroup(4, False, 2))
    held, _, (rs_s, _, _) = _tail(sc)
    assert rs_s == pytest.approx(_ring_s(2 * held.dense, dense, sc.gpu) + _ring_s(2 * held.expert, expert, sc.gpu),
                                 rel=1e-12)
    # ZeRO-3 shards the experts over the same group: its NICs too
    sc3 = _moe(16, ep=4, zero_stage=3)
    costs = _prepare(sc3, None, Perturb(), check_memory=False)[1]
    assert costs.fsdp_ranks == (16, 4) and costs.fsdp_ranks_per_node == (8, 2)


BENCH = {"name": "t", "model": {"name": "mixtral-mla-slice", "num_layers": 8, "num_mtp_modules": 0},
         "cluster": {"gpu": "h200", "num_gpus": 4},
         "plan": {"tp": 1, "cp": 1, "pp": 4, "ep": 1, "schedule": "dualpipe", "micro_batch_seqs": 1, "zero_stage": 0,
                  "recompute": "none", "kernels": "eager", "overlap_dp_comm": False},
         "workload": {"seq_len": 2048, "global_batch_seqs": 12}}


def test_the_plan_screen_takes_real_engines_reductions_where_asked():
    """plan.grad_reduce_groups 'by_group' (a converted real/pipeline run, here s26unify's DualPipe PP4 on 4
    GPUs): the screen adds the simulator's real_reductions_s, DualPipe's pair all-reduce of a stage's two
    copies (~46 ms), where the default has no data-parallel reduction at DP 1; it ignored it before."""
    by_group = from_dict({**BENCH, "plan": {**BENCH["plan"], "grad_reduce_groups": "by_group"}})
    default = from_dict(BENCH)
    schedule, costs, profile, _, _, _ = _prepare(by_group, None, Perturb(), check_memory=False)
    tail = max(pair + data for pair, data in real_reductions_s(by_group, costs, schedule, by_group.gpu, profile))
    assert 0.03 < tail < 0.06
    est, est_default = screen(by_group), screen(default)
    assert est.step_time_s - est_default.step_time_s == pytest.approx(tail, rel=1e-3)
    sim = simulate_step(by_group, record_events=False)
    assert est.step_time_s == pytest.approx(sim.step_time_s, rel=0.05)

"""TP/SP, CP, interleaving and ZeRO-3 in the step twin, on a tiny dense model: behaviour and
formulas, not fixed figures."""

import dataclasses
import json

import pytest

from twin.cli.main import main
from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.core.scenario import from_dict
from twin.core.specs import ParallelPlan
from twin.costs import compute, memory
from twin.costs.memory import activation_bytes, activation_bytes_per_token
from twin.costs.profile import load_profile
from twin.training.results import Perturb
from twin.training.step import _prepare, dp_tail_s, rank_params, simulate_step, step_time_lower_bound_s
from twin.training.trace import step_trace

DENSE = {"name": "tiny-dense", "num_layers": 4, "hidden_size": 1024, "vocab_size": 1024, "num_heads": 16,
         "attention": "gqa", "num_kv_heads": 8, "head_dim": 64, "intermediate_size": 4096, "num_dense_layers": 4}


def scenario(model=None, dp=2, seq_len=4096, **plan):
    """A training scenario of `model` (default DENSE) on dp pipelines of tp x cp x pp H100s."""
    p = {"tp": 1, "pp": 2, "ep": 1, "schedule": "1f1b", "gemm_precision": "bf16", "recompute": "selective", **plan}
    gpus = p["tp"] * p.get("cp", 1) * p["pp"] * dp
    return from_dict({"name": "t", "model": model or DENSE, "cluster": {"gpu": "h100", "num_gpus": gpus},
                      "plan": p, "workload": {"seq_len": seq_len, "global_batch_seqs": 16}})


def step(sc, **kw):
    return simulate_step(sc, record_events=False, **kw)


def tp_time(r, prefix="tp_"):
    return sum(v for k, v in r.op_time_s.items() if k.startswith(prefix))


def test_tp_communication_present_and_growing_with_tp():
    assert tp_time(step(scenario(tp=1))) == 0
    times = [tp_time(step(scenario(tp=tp))) for tp in (2, 4, 8)]
    # the same activations all-reduced over more ranks: 2(n-1)/n of them per rank grows with n
    assert 0 < times[0] < times[1] < times[2]
    r = step(scenario(tp=4))
    assert {"tp_all_reduce", "tp_all_reduce_bwd"} <= set(r.op_time_s) and r.exposed_comm_frac > 0


def test_sequence_parallel_moves_the_same_bytes_and_splits_activations():
    # on the catalog's links (no measured collectives): all-reduce = reduce-scatter + all-gather,
    # the same bus traffic and ring steps
    catalog = dataclasses.replace(load_profile("h100"), collectives={})
    plain, sp = (step(scenario(tp=4), profile=catalog),
                 step(scenario(tp=4, sequence_parallel=True), profile=catalog))
    assert "tp_all_reduce" in plain.op_time_s and "tp_all_reduce" not in sp.op_time_s
    assert {"tp_all_gather", "tp_reduce_scatter", "tp_all_gather_bwd", "tp_reduce_scatter_bwd"} <= set(sp.op_time_s)
    # beyond which the shard each linear keeps is gathered again for its weight gradient, beside the
    # input-gradient GEMM (plan.sp_input_regather: test_sequence_parallel_without_overlap_regathers...)
    regather_s = sp.op_time_s.get("tp_all_gather_input_bwd", 0.0)
    assert tp_time(sp) - regather_s == pytest.approx(tp_time(plain), rel=1e-9)
    # the H100 profile's collectives measured on 2xH100 (h100x2/nccl.csv): an all-gather plus a
    # reduce-scatter pay two latency floors at a lower bus bandwidth than one all-reduce
    measured = load_profile("h100")
    assert {"all_reduce", "all_gather", "reduce_scatter"} <= set(measured.collectives)
    plain_m, sp_m = step(scenario(tp=4)), step(scenario(tp=4, sequence_parallel=True))
    assert tp_time(sp_m) > tp_time(plain_m)
    assert sp.memory_breakdown_bytes["activations"] < plain.memory_breakdown_bytes["activations"]
    # norms and residual adds run on 1/tp of the tokens
    assert sp.op_time_s["attn_fwd"] < plain.op_time_s["attn_fwd"]


def test_sp_activation_memory_by_hand():
    p1 = ParallelPlan(tp=1, ep=1, recompute="full")
    sp = dataclasses.replace(p1, tp=4, sequence_parallel=True)
    m = scenario().model
    # full recomputation keeps the block input (d BF16 per token): split over TP only with SP
    assert activation_bytes(m, True, p1, 100) == 100 * activation_bytes_per_token(m, True, p1) == 100 * 1024 * 2
    assert activation_bytes(m, True, sp, 100) == 100 * 1024 * 2 / 4
    assert activation_bytes(m, True, dataclasses.replace(sp, sequence_parallel=False), 100) == 100 * 1024 * 2


def test_tp_comm_overlap_hides_collectives_behind_gemms():
    # the ideal overlap (nothing charged to the GEMMs) hides every collective partly
    exposed = step(scenario(tp=8, sequence_parallel=True))
    hidden = step(scenario(tp=8, sequence_parallel=True, tp_comm_overlap=True, tp_overlap_kind="ideal"))
    assert tp_time(hidden) < tp_time(exposed) and hidden.step_time_s < exposed.step_time_s
    # TransformerEngine's (the default kind) pays for its chunks and its SMs: at a width where the
    # GEMMs are long beside the collectives it still wins, and it never beats the ideal overlap
    wide = {**DENSE, "name": "wide-dense", "hidden_size": 8192, "intermediate_size": 28672, "num_heads": 64,
            "vocab_size": 8192}
    plain = step(scenario(model=wide, tp=8, sequence_parallel=True, seq_len=8192))
    te = step(scenario(model=wide, tp=8, sequence_parallel=True, seq_len=8192, tp_comm_overlap=True))
    ideal = step(scenario(model=wide, tp=8, sequence_parallel=True, seq_len=8192, tp_comm_overlap=True,
                          tp_overlap_kind="ideal"))
    assert ideal.step_time_s < te.step_time_s < plain.step_time_s


def test_torch_async_tp_fuses_what_the_inductor_pass_fuses():
    # torch's micro-pipelined TP (plan.tp_overlap_kind 'torch_async_tp'): all-gathers pipelined as
    # with the ideal overlap; the forward reduce-scatter pipelined too, its partial sums then added by a
    # reduction kernel; the input-gradient reduce-scatter (a sum of the q/k/v or w1/w3 GEMMs) whole
    base = dict(tp=8, pp=1, dp=1, sequence_parallel=True)
    plain = step(scenario(**base))
    ub = step(scenario(**base, tp_comm_overlap=True, tp_overlap_kind="ideal"))
    sc = scenario(**base, tp_comm_overlap=True, tp_overlap_kind="torch_async_tp")
    torch_tp = step(sc)
    # its fused GEMMs run as one chunk of m/8 rows per rank, so no collective is more exposed
    # than beside the whole GEMMs (the ideal overlap's), and the chunks cost what they cost beyond them
    for name in ("tp_all_gather", "tp_all_gather_bwd", "tp_reduce_scatter"):
        assert torch_tp.op_time_s.get(name, 0.0) <= ub.op_time_s.get(name, 0.0) + 1e-12
    assert torch_tp.op_time_s["tp_chunk_gemms"] > 0 and "tp_chunk_gemms" not in ub.op_time_s
    # each fused all-gather first copies the rank's shard (1/8 of 4,096 tokens x 1,024 BF16) into
    # its symmetric buffer: forward (attention, FFN) and backward, 16 micro-batches, 4 layers
    copy = compute.memory_time_s(2 * 4096 * 1024 * 2 / 8, sc.gpu, _prepare(sc, None, Perturb(), True)[2])
    assert torch_tp.op_time_s["tp_shard_copy"] == pytest.approx(16 * 4 * 2 * copy, rel=1e-9)
    assert torch_tp.op_time_s["tp_shard_copy_bwd"] == pytest.approx(16 * 4 * 2 * copy, rel=1e-9)
    assert torch_tp.op_time_s["tp_reduce_scatter_bwd"] == pytest.approx(plain.op_time_s["tp_reduce_scatter_bwd"], rel=1e-12)
    assert ub.op_time_s.get("tp_reduce_scatter_bwd", 0.0) < plain.op_time_s["tp_reduce_scatter_bwd"]
    # one reduction per part (attention, FFN) per layer per micro-batch: 16 micro-batches of one
    # 4,096-token sequence, 4 layers; it reads the whole BF16 buffer and writes the rank's 1/8
    profile = _prepare(sc, None, Perturb(), True)[2]
    one = compute.partials_reduce_time_s(4096 * 1024 * 2, 8, sc.gpu, profile)
    assert one == pytest.approx(4096 * 1024 * 2 * (1 + 1 / 8) / (sc.gpu.hbm_bytes_per_s * profile.partials_reduce_eff_at(8))
                                + profile.launch_s, rel=1e-12)
    assert torch_tp.op_time_s["tp_partials_reduce"] == pytest.approx(16 * 4 * 2 * one, rel=1e-9)
    assert "tp_partials_reduce" not in ub.op_time_s
    assert ub.step_time_s < torch_tp.step_time_s
    # without sequence parallelism the all-reduces are not fused at all
    no_sp = dict(tp=8, pp=1, dp=1)
    assert (step(scenario(**no_sp, tp_comm_overlap=True, tp_overlap_kind="torch_async_tp")).step_time_s
            == pytest.approx(step(scenario(**no_sp)).step_time_s, rel=1e-12))


def test_measured_collectives_by_hand():
    # pp=1, 1F1B: 4 micro-batches (16 sequences / dp 4), 4 layers, 2 parts each, one all-reduce per part
    sc = scenario(tp=2, pp=1, dp=4)
    prof = dataclasses.replace(load_profile("h100"), collectives={
        "all_reduce": {"latency_s": 1e-5, "bus_bytes_per_s": 2e11, "source": "test"}})
    r = step(sc, profile=prof)
    one = 1e-5 + 1.0 * (4096 * 1024 * 2) / 2e11     # 2(n-1)/n = 1 at n = 2; BF16 activations of 4,096 tokens
    assert r.op_time_s["tp_all_reduce"] == pytest.approx(4 * 4 * 2 * one, rel=1e-9)
    assert r.op_time_s["tp_all_reduce_bwd"] == pytest.approx(4 * 4 * 2 * one, rel=1e-9)


def test_context_parallel_halves_activations_and_sets_dp():
    one, two = scenario(tp=2, dp=2), scenario(tp=2, cp=2, dp=1)
    assert one.cluster.num_gpus == two.cluster.num_gpus and two.dp == two.cluster.num_gpus // (2 * 2 * 2)
    a, b = step(one), step(two)
    assert b.memory_breakdown_bytes["activations"] == pytest.approx(a.memory_breakdown_bytes["activations"] / 2, rel=1e-12)
    assert b.memory_breakdown_bytes["comm_buffers"] > a.memory_breakdown_bytes["comm_buffers"]   # K/V chunks in flight


def test_ring_exchange_exposed_only_when_longer_than_attention():
    # at 64K tokens a rank's 16K-token K/V chunk (32 MB) crosses NVLink faster than the attention of
    # one chunk (a quarter of the core) runs; at 4K the attention is too short to hide it
    long = step(scenario(cp=4, dp=1, seq_len=65536))
    assert "cp_ring_kv" not in long.op_time_s and "cp_ring_kv_bwd" not in long.op_time_s
    # the last hop of the key/value gradients to their owner has no chunk left to hide behind
    assert long.op_time_s["cp_ring_dkv_home"] > 0
    short = step(scenario(cp=4, dp=1))
    slow = step(scenario(cp=4, dp=1), perturb=Perturb(link_bw_scale=0.1))
    assert 0 < short.op_time_s["cp_ring_kv"] < slow.op_time_s["cp_ring_kv"]
    gather = step(scenario(cp=4, dp=1, cp_kind="allgather"))
    assert gather.op_time_s["cp_all_gather_kv"] > 0 and gather.op_time_s["cp_reduce_scatter_kv"] > 0


def test_ep_is_drawn_from_data_and_context_parallel_ranks():
    tiny = {"name": "tiny"}
    sc = scenario(tiny, tp=1, pp=1, cp=2, dp=2, ep=4, gemm_precision="fp8")   # 2 x 2 ranks hold different tokens
    assert sc.dp == 2 and sc.plan.held_comm_sms == 20
    with pytest.raises(ScenarioError, match=r"plan.ep.*data-parallel x context-parallel x tensor-parallel ranks = 2 x 1 x 1"):
        scenario(tiny, tp=1, pp=1, cp=1, dp=2, ep=4)


def test_zero3_shards_weights_and_gathers_per_block():
    z1, z3 = scenario(pp=1, dp=8, zero_stage=1), scenario(pp=1, dp=8, zero_stage=3)
    a, b = step(z1), step(z3)
    # FSDP keeps its shard in FP32 only (the optimizer's master; memory.ADOPT_FSDP_NO_BF16_SHARD): no BF16 weights,
    # a rank holds 1/8 of the parameters ZeRO-1's does
    assert b.memory_breakdown_bytes["weights"] == 0.0 and memory.ADOPT_FSDP_NO_BF16_SHARD
    assert memory.weight_params(b.memory_breakdown_bytes, z3.plan) == pytest.approx(
        memory.weight_params(a.memory_breakdown_bytes, z1.plan) / 8)
    assert b.memory_breakdown_bytes["fsdp_gathered"] > 0 and "fsdp_gathered" not in a.memory_breakdown_bytes
    assert {"fsdp_all_gather", "fsdp_reduce_scatter"} <= set(b.op_time_s)
    assert b.op_time_s["dp_reduce_scatter"] == 0   # reduced block by block instead
    slow = step(z3, perturb=Perturb(link_bw_scale=0.1))
    assert slow.exposed_comm_frac > b.exposed_comm_frac


def test_interleaving_shrinks_the_bubble():
    plain = step(scenario(pp=2, dp=1))
    inter = step(scenario(pp=2, dp=1, schedule="interleaved-1f1b", virtual_stages=2))
    assert inter.bubble_frac < plain.bubble_frac


def test_comm_sms_default_follows_expert_parallelism():
    assert scenario().plan.held_comm_sms == 0 and scenario().plan.comm_sms is None
    assert ParallelPlan(ep=64).held_comm_sms == 20 and ParallelPlan(ep=1).held_comm_sms == 0
    assert ParallelPlan(ep=64, comm_sms=8).held_comm_sms == 8 and ParallelPlan(ep=1, comm_sms=8).held_comm_sms == 8
    # a dense model's compute keeps every SM
    assert step(scenario()).step_time_s < step(scenario(), perturb=Perturb(compute_eff_scale=112 / 132)).step_time_s


@pytest.mark.parametrize("setting,field", [
    ("plan.sequence_parallel=true", "plan.sequence_parallel"),
    ("plan.tp_comm_overlap=true", "plan.tp_comm_overlap"),
    ("plan.cp_kind='allgather'", "plan.cp_kind"),
    ("plan.tp_overlap_kind='torch_async_tp'", "plan.tp_overlap_kind"),
    ("plan.virtual_stages=2", "plan.virtual_stages"),
    ("plan.ep=8", "plan.ep"),
    ("plan.comm_sms=20", "plan.comm_sms"),
    ("plan.cp=3", "plan.cp"),
])
def test_inapplicable_plan_fields_exit_2_naming_the_field(tmp_path, capsys, setting, field):
    path = tmp_path / "s.toml"
    path.write_text('[model]\nname = "llama3-8b"\n[cluster]\ngpu = "h100"\nnum_gpus = 48\n'
                    '[plan]\ntp = 1\npp = 2\nep = 1\nschedule = "1f1b"\n[workload]\nseq_len = 4096\nglobal_batch_seqs = 24\n')
    assert main(["step", str(path), "--set", setting]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {field}") and "Traceback" not in err


@pytest.mark.parametrize("field,value", [("grad_reduce_dtype", "fp32"), ("overlap_grad_reduce", True)])
def test_data_parallel_reduce_fields_are_refused_under_fsdp(field, value):
    scenario(pp=1, zero_stage=1, **{field: value})   # they apply to the reduce-scatter after the pipeline
    with pytest.raises(ScenarioError, match=rf"plan\.{field}.*zero_stage = 3"):
        scenario(pp=1, zero_stage=3, **{field: value})


def test_activations_that_do_not_fit_exit_3_with_breakdown(tmp_path, capsys):
    out = tmp_path / "r.json"
    args = ["step", "--set", "model.name='llama3-70b'", "--set", "cluster.gpu='h100'", "--set", "cluster.num_gpus=16",
            "--set", "plan.ep=1", "--set", "plan.comm_sms=0", "--set", "plan.pp=2", "--set", "plan.tp=8",
            "--set", "plan.schedule='1f1b'", "--set", "workload.seq_len=131072", "--set", "workload.global_batch_seqs=4",
            "--json", str(out)]
    assert main(args) == 3
    data = json.loads(out.read_text())
    assert data["feasible"] is False and data["memory_breakdown_bytes"]["activations"] > 80e9


def test_zero3_gathers_per_micro_batch_alone_and_once_per_step_with_pipeline():
    def fsdp_s(pp, dp, batch):
        sc = scenario(pp=pp, dp=dp, zero_stage=3)
        sc = dataclasses.replace(sc, workload=dataclasses.replace(sc.workload, global_batch_seqs=batch))
        r = step(sc, perturb=Perturb(link_bw_scale=0.01))   # slow links: the traffic shows
        return (r.op_time_s.get("fsdp_all_gather", 0.0) + r.op_time_s.get("fsdp_reduce_scatter", 0.0)
                + r.op_time_s.get("fsdp_post_backward_tail", 0.0))
    # without PP (FSDP2 reshards after each forward and backward): twice the micro-batches, twice the traffic
    assert fsdp_s(1, 4, 32) == pytest.approx(2 * fsdp_s(1, 4, 16), rel=1e-9)
    # with PP a stage gathers at its first forward and reduce-scatters once its last backward is
    # done (the step's tail: test_step_fsdp_pipeline), whatever the micro-batches
    once = fsdp_s(2, 2, 16)
    assert once > 0 and fsdp_s(2, 2, 32) == pytest.approx(once, rel=1e-9)


def test_fsdp_accumulates_fp32_gradients_after_each_backward_under_pipeline_only():
    # FSDP2 under PP (no reduce-scatter until the last backward): a cast of the first backward's
    # BF16 gradients into FP32 (6 B/param), an add for each later one (10 B), the FP32 packed for the
    # reduce-scatter (2 B more than the BF16 copy-in): per backward (10 m - 2) / m
    from twin.training.step import fsdp_grad_accum_bytes_per_param
    assert fsdp_grad_accum_bytes_per_param(1) == 0.0
    assert fsdp_grad_accum_bytes_per_param(8) == pytest.approx((6 + 7 * 10 + 2) / 8)
    with_pp = step(scenario(pp=2, dp=2, zero_stage=3))
    assert with_pp.op_time_s["fsdp_grad_accum"] > 0
    assert "fsdp_grad_accum" not in step(scenario(pp=1, dp=4, zero_stage=3)).op_time_s
    assert "fsdp_grad_accum" not in step(scenario(pp=2, dp=2, zero_stage=1)).op_time_s


def test_trace_names_the_tp_cp_and_fsdp_collectives():
    sc = scenario(tp=2, cp=2, pp=1, dp=2, zero_stage=3, cp_kind="allgather")
    names = {e["name"] for e in step_trace(sc, simulate_step(sc), granularity="layer")["traceEvents"] if e["ph"] == "X"}
    assert {"all_reduce(TP)", "all_reduce(TP, B)", "all_gather_kv(CP)", "reduce_scatter_kv(CP, B)",
            "all_gather(FSDP)", "reduce_scatter(FSDP)"} <= names


@pytest.mark.parametrize("plan", [dict(), dict(tp=4, sequence_parallel=True), dict(cp=2, dp=1),
                                  dict(pp=1, dp=4, zero_stage=3), dict(pp=2, dp=2, zero_stage=3, schedule="zb1p"),
                                  dict(pp=2, dp=1, schedule="interleaved-1f1b", virtual_stages=2),
                                  dict(cp=4, dp=1, cp_kind="torch_allgather", kv_repeat=True, kernels="eager")])
def test_lower_bound_never_exceeds_the_simulated_step(plan):
    sc = scenario(**plan)
    bound = step_time_lower_bound_s(sc)
    r = step(sc)
    assert 0 < bound <= r.step_time_s
    # at least the busiest rank's compute: its ops' whole chains, the F&B pairs' busier stream
    assert bound >= max(r.pipeline.busy_s) * (1 - 1e-12)


def test_lower_bound_refuses_what_the_step_refuses():
    sc = scenario({"name": "llama3-70b"}, tp=8, pp=1, dp=1, seq_len=131072)
    with pytest.raises(InfeasiblePlan):
        step_time_lower_bound_s(sc)


def test_fsdp2_root_unit_and_copies():
    """FSDP2 as torchtitan wraps a dense model: each block a unit, the rest (embedding, final
    norm, output) the root unit, gathered before the first block and kept through the backward,
    its FP32 gradients reduce-scattered after the last backward; FSDP2's copy-out after each
    all-gather and copy-in before each reduce-scatter run on the compute stream."""
    sc = scenario(pp=1, dp=8, zero_stage=3)
    costs = _prepare(sc, None, Perturb(), check_memory=False)[1]
    m = sc.model
    root, block = costs._fsdp_root(0), costs._fsdp_s(0)[0]
    embed_head = m.vocab_size * m.hidden_size * (1 if m.tie_embeddings else 2) + m.hidden_size
    layer = memory.block_params_on_gpu(m, True, 1, 1).dense
    # BF16 all-gather of the root's parameters; its copy-out reads and writes them (2 + 2 bytes)
    assert root.ag_s == pytest.approx(costs._collective_s("all_gather", embed_head * 2, 8, costs.fsdp_same_node))
    assert root.copy_out_s == pytest.approx(compute.memory_time_s(embed_head * 4, sc.gpu, costs.profile))
    assert block.copy_in_s == pytest.approx(compute.memory_time_s(layer * 6, sc.gpu, costs.profile))  # BF16 in, FP32 out
    f, b = costs._chain(0, "F", True, False), costs._chain(0, "BW", True, True)
    # forward: the root's and the first block's gathers exposed first, then the copy-outs
    assert f[0].name == "fsdp_all_gather" and f[0].duration_s == pytest.approx(root.ag_s + block.ag_s)
    assert f[1].name == "fsdp_copy_out" and f[1].duration_s == pytest.approx(root.copy_out_s + block.copy_out_s)
    # backward: every unit packs its gradients; the last reduce-scatters (the first block's and the
    # root's) have no computation left to hide behind
    names = [t.name for t in b]
    assert names.count("fsdp_copy_in") == m.num_layers and names[-1] == "fsdp_reduce_scatter"
    assert b[-1].duration_s >= root.rs_s + block.rs_s
    # the root unit is not gathered again for the backward: one gather per block and the head's none
    assert sum(t.duration_s for t in b if t.name == "fsdp_copy_out") == pytest.approx(
        sum(u.copy_out_s for u in costs._fsdp_s(0)))


def test_optimizer_tail_clips_the_gradients_and_runs_the_adam_kernel_the_plan_names():
    """After the last backward: the global-norm clip (read the FP32 gradients, scale them: 12 B per
    parameter the rank's optimizer holds), then Adam, fused (one pass: state read and written,
    gradient read, BF16 weights written) or torch's foreach AdamW (eight passes, 84 B)."""
    fused, foreach = scenario(pp=1, dp=8, zero_stage=3), scenario(pp=1, dp=8, zero_stage=3, optimizer_kernel="foreach")
    for sc in (fused, foreach):
        costs = _prepare(sc, None, Perturb(), check_memory=False)
        mem = costs[3][0]
        held = mem["optimizer"] / sc.plan.optimizer_bytes_per_param
        # the BF16 weights written are priced whether or not a ZeRO-3 rank keeps a BF16 shard (memory.keeps_bf16_shard)
        adam = (mem["optimizer"] * 2 + mem["gradients"] + held * memory.WEIGHT_BYTES if sc is fused
                else 84.0 * held)
        _, opt_s, _ = dp_tail_s(sc, mem, rank_params(sc, costs[1])[0], sc.gpu, costs[2], 1.0)
        assert opt_s == pytest.approx(compute.memory_time_s(adam + 12.0 * held, sc.gpu, costs[2]))
    assert step(foreach).op_time_s["optimizer"] > step(fused).op_time_s["optimizer"]


def test_fp32_gradient_reduce_scatter_and_its_overlap_with_the_last_backward():
    """plan.grad_reduce_dtype 'fp32' sends twice the gradient bytes (Megatron's BF16 training,
    Llama 3); plan.overlap_grad_reduce hides the reduce-scatter behind each rank's last backward,
    so a one-stage step shortens by exactly min(reduce-scatter, last backward)."""
    from twin.training.step import _prepare, dp_tail_s, last_backward_s
    base = dict(pp=1, dp=16, zero_stage=1, schedule="1f1b")
    bf16, fp32 = scenario(**base), scenario(**base, grad_reduce_dtype="fp32")
    a, b = step(bf16), step(fp32)
    # twice the bytes on the wire: twice the ring's transfer time, the same per-hop latency (which
    # counts since a cross-node DP ring spreads over the NICs of its node's ranks: comm.ring_collective_time_s)
    latency_s = (16 - 1) * bf16.gpu.scale_out_latency_s
    assert b.op_time_s["dp_reduce_scatter"] - latency_s == pytest.approx(2 * (a.op_time_s["dp_reduce_scatter"] - latency_s),
                                                                         rel=0.02)
    assert b.step_time_s - a.step_time_s == pytest.approx(b.op_time_s["dp_reduce_scatter"] - a.op_time_s["dp_reduce_scatter"],
                                                          rel=1e-9)
    overlapped = scenario(**base, grad_reduce_dtype="fp32", overlap_grad_reduce=True)
    schedule, costs, profile, mems, _, _ = _prepare(overlapped, None, Perturb(), True)
    rs_s = dp_tail_s(overlapped, mems[0], rank_params(overlapped, costs)[0], overlapped.gpu, profile, 1.0)[0]
    hidden_s = min(rs_s, last_backward_s(costs, schedule, 0))
    assert 0 < hidden_s
    assert step(overlapped).step_time_s == pytest.approx(b.step_time_s - hidden_s, rel=1e-12)
    assert step_time_lower_bound_s(overlapped) <= step(overlapped).step_time_s


def test_megatron_buckets_only_the_first_pipeline_ranks_first_chunk(monkeypatch):
    """plan.grad_buckets 'megatron' (Megatron-LM core_r0.8.0 DistributedDataParallel: no buckets on
    pipeline ranks > 0 nor on model chunks after the first): rank 0's first chunk reduces beside its
    last backward as before; every other chunk is one bucket, reduce-scattered whole once its last
    backward is done, the chunks one after another. Needs plan.overlap_grad_reduce."""
    from twin.training.step import (_prepare, chunk_params, dp_reduce_after_s, dp_tail_s, exposed_reduce_scatter_s,
                                    last_backward_s, megatron_grad_prep_s)
    with pytest.raises(ScenarioError, match=r"plan\.grad_buckets.*overlap_grad_reduce"):
        scenario(pp=2, grad_buckets="megatron")
    with pytest.raises(ScenarioError, match=r"plan\.grad_buckets.*zero_stage = 2"):
        scenario(pp=2, grad_buckets="megatron", overlap_grad_reduce=True, zero_stage=2)
    base = dict(pp=2, dp=16, grad_reduce_dtype="fp32", overlap_grad_reduce=True)
    every, megatron = scenario(**base), scenario(**base, grad_buckets="megatron")
    schedule, costs, profile, mems, _, _ = _prepare(megatron, None, Perturb(), True)
    rs = [dp_tail_s(megatron, mems[r], rank_params(megatron, costs)[r], megatron.gpu, profile, 1.0)[0] for r in range(2)]
    # each bucket's NaN-check norm and 1/DP scaling on the compute stream first (Bucket.start_grad_sync):
    # beside rank 0's last backward, before rank 1's one reduce-scatter
    prep = [megatron_grad_prep_s(megatron, chunk_params(megatron, costs, r, r), profile, r == 0) for r in range(2)]
    assert 0 < prep[0] and 0 < prep[1]
    assert dp_reduce_after_s(megatron, costs, schedule, 0, rs[0]) == pytest.approx(
        max(prep[0], exposed_reduce_scatter_s(megatron, rs[0], last_backward_s(costs, schedule, 0))), rel=1e-12)
    assert exposed_reduce_scatter_s(megatron, rs[1], last_backward_s(costs, schedule, 1)) < rs[1]   # what every_chunk hides
    assert dp_reduce_after_s(megatron, costs, schedule, 1, rs[1]) == pytest.approx(prep[1] + rs[1], rel=1e-12)
    # rank 1's last backward ends as rank 0's begins: its whole reduce-scatter ends no later than rank
    # 0's (Megatron: "not on the critical path") when the stages hold alike
    assert step(megatron).step_time_s >= step(every).step_time_s
    assert step_time_lower_bound_s(megatron) <= step(megatron).step_time_s
    # interleaved: each chunk after the first is one bucket, reduce-scattered after its own last backward;
    # rank 0's first chunk beside its last backward only without Megatron's default --delay-grad-reduce
    # (step.ADOPT_MEGATRON_DELAYED_GRAD_SYNC; both settings in test_step_delayed_grad_sync.py)
    from twin.training import step as step_module
    monkeypatch.setattr(step_module, "ADOPT_MEGATRON_DELAYED_GRAD_SYNC", False)
    inter = scenario(**{**base, "dp": 8}, grad_buckets="megatron", schedule="interleaved-1f1b", virtual_stages=2)
    schedule, costs, profile, mems, _, _ = _prepare(inter, None, Perturb(), True)
    rs0 = dp_tail_s(inter, mems[0], rank_params(inter, costs)[0], inter.gpu, profile, 1.0)[0]
    share = chunk_params(inter, costs, 0, schedule.stage_of(0, 1)) / sum(
        chunk_params(inter, costs, 0, schedule.stage_of(0, c)) for c in range(2))
    assert 0 < share < 1
    preps = sum(megatron_grad_prep_s(inter, chunk_params(inter, costs, 0, schedule.stage_of(0, c)), profile, c == 0)
                for c in range(2))
    assert dp_reduce_after_s(inter, costs, schedule, 0, rs0) <= max(
        exposed_reduce_scatter_s(inter, rs0, last_backward_s(costs, schedule, 0)), rs0 * share) + preps
    monkeypatch.setattr(step_module, "ADOPT_MEGATRON_DELAYED_GRAD_SYNC", True)
    delayed = dp_reduce_after_s(inter, costs, schedule, 0, rs0)   # the costs do not depend on the switch
    assert rs0 * (1 - share) <= delayed <= rs0 + preps   # the first chunk's whole share after the last compute


def test_zero2_reduce_scatters_every_micro_batch_or_accumulates_unsharded_under_pp():
    """ZeRO-2 holds gradients sharded only by reduce-scattering every micro-batch's (DeepSpeed
    ZeRO-2, FSDP2 with gradient sync on): without PP, M reduce-scatters a step, each as exposed as
    the last, and sharded gradients. Under PP (torch.distributed.pipelining syncs the last backward
    only) FSDP2 accumulates them unsharded in FP32 after every backward and reduce-scatters once:
    ZeRO-1's gradient memory, plus the accumulation's HBM traffic."""
    from twin.training.step import dp_reduce_scatters_per_step
    base = dict(pp=1, dp=4, schedule="1f1b", overlap_dp_comm=False)   # 16 / 4 = 4 micro-batches
    z1, z2 = scenario(**base, zero_stage=1), scenario(**base, zero_stage=2)
    assert z2.num_microbatches == 4 and dp_reduce_scatters_per_step(z2) == 4 and dp_reduce_scatters_per_step(z1) == 1
    a, b = step(z1), step(z2)
    one_rs = a.op_time_s["dp_reduce_scatter"]
    assert one_rs > 0 and b.op_time_s["dp_reduce_scatter"] == pytest.approx(4 * one_rs, rel=1e-12)
    assert b.step_time_s - a.step_time_s == pytest.approx(3 * one_rs, rel=1e-9)
    assert b.memory_breakdown_bytes["gradients"] == pytest.approx(a.memory_breakdown_bytes["gradients"] / 4, rel=1e-12)
    assert step_time_lower_bound_s(z2) <= b.step_time_s
    # under PP: one reduce-scatter, unsharded FP32 gradients as ZeRO-1, FSDP2's accumulation charged
    p1, p2 = scenario(pp=2, dp=2, zero_stage=1), scenario(pp=2, dp=2, zero_stage=2)
    assert dp_reduce_scatters_per_step(p2) == 1
    c, d = step(p1), step(p2)
    assert d.memory_breakdown_bytes["gradients"] == pytest.approx(c.memory_breakdown_bytes["gradients"], rel=1e-12)
    assert d.op_time_s["fsdp_grad_accum"] > 0 and "fsdp_grad_accum" not in c.op_time_s
    assert d.step_time_s > c.step_time_s


def test_sequence_parallel_without_overlap_regathers_each_input_for_the_weight_gradient():
    """Megatron's linear keeps its input's sequence shard and, without TP overlap, all-gathers it
    again in the backward beside the input-gradient GEMM (plan.sp_input_regather): what outlasts the
    GEMMs on that input is exposed, in every block's backward. False (DTensor SP under torchtitan's
    full recomputation) charges nothing and needs recompute 'full'."""
    with pytest.raises(ScenarioError, match=r"plan\.sp_input_regather"):
        scenario(tp=2, pp=1, sequence_parallel=True, sp_input_regather=False)   # selective: no gathered input kept
    base = dict(tp=2, pp=1, sequence_parallel=True, recompute="full", seq_len=16384)
    sc = scenario(**base)
    costs = _prepare(sc, None, Perturb(), check_memory=False)[1]
    expected = 0.0
    for key, seg in costs._segments(costs.blocks[0].ops):
        tp = costs._tp_points(seg)
        if tp:
            assert tp["in_fwd"].kind == "all_gather"
            dgrad_s = costs._compute_s(costs._beside_gemms(seg, "in_bwd"), "bwd_input")
            want = max(0.0, tp["in_fwd"].time_s - dgrad_s)
            got = costs._sp_regather_tasks(tp["in_fwd"], seg)
            assert sum(t.duration_s for t in got) == pytest.approx(want, rel=1e-12)
            assert all(t.stream == "comm" and t.name == "tp_all_gather_input_bwd" for t in got)
            expected += want
    assert expected > 0   # at 16K tokens the tiny model's gathers outlast its input-gradient GEMMs
    kept = scenario(**base, sp_input_regather=False)
    a, b = step(sc), step(kept)
    layers = sc.model.num_layers
    assert a.op_time_s.get("tp_all_gather_input_bwd", 0.0) == pytest.approx(layers * sc.num_microbatches * expected, rel=1e-9)
    assert "tp_all_gather_input_bwd" not in b.op_time_s
    assert a.step_time_s >= b.step_time_s
    # with TP overlap the overlap kind costs its own backward gather
    overlapped = _prepare(scenario(**base, tp_comm_overlap=True), None, Perturb(), check_memory=False)[1]
    seg = next(seg for _, seg in overlapped._segments(overlapped.blocks[0].ops) if overlapped._tp_points(seg))
    assert overlapped._sp_regather_tasks(overlapped._tp_points(seg)["in_fwd"], seg) == []


def test_megatron_prepares_each_gradient_bucket_on_the_compute_stream():
    """Bucket.start_grad_sync @ core_r0.8.0: the bucket's norm (NaN check, on by default) reads it and
    the 1/DP scaling reads and writes it, in the reduce dtype, before its reduce-scatter: 3 x 4 bytes
    a parameter in FP32 at the profile's streaming rate, two kernels a bucket."""
    from twin.costs import compute
    from twin.training.step import _prepare, megatron_bucket_params, megatron_grad_prep_s
    sc = scenario(pp=2, dp=8, grad_reduce_dtype="fp32", overlap_grad_reduce=True, grad_buckets="megatron")
    _, _, profile, *_ = _prepare(sc, None, Perturb(), True)
    size = megatron_bucket_params(sc)
    assert size == 40e6   # max(40M, 1M x DP)
    params = 2.5 * size
    one = megatron_grad_prep_s(sc, params, profile, False)
    assert one == pytest.approx(compute.memory_time_s(12 * params, sc.gpu, profile) + profile.launch_s)
    # three buckets: four more launches; half the bytes in BF16
    assert megatron_grad_prep_s(sc, params, profile, True) == pytest.approx(one + 4 * profile.launch_s)
    bf16 = scenario(pp=2, dp=8, grad_reduce_dtype="bf16", overlap_grad_reduce=True, grad_buckets="megatron")
    assert megatron_grad_prep_s(bf16, params, profile, False) < one

"""The step simulator on the V3 plan and small variants: behaviour, not fixed numbers."""

import dataclasses
import json
import subprocess
import sys

import pytest

from twin.costs.flops import moe_ops, expected_nodes_per_token
from twin.costs.memory import activation_bytes_per_token
from twin.costs.profile import load_profile
from twin.core.errors import InfeasiblePlan
from twin.core.scenario import load_scenario
from twin.core.schedules import build_schedule
from twin.training.results import Perturb
from twin.planning.screen import _balanced_kinds, _pieces_for
from twin.training.step import (StepCosts, balanced_stage_layers, peak_live_bytes, routing_loads, simulate_step,
                                stage_layers)
from twin.core.specs import get_gpu, get_model


@pytest.fixture(scope="module")
def v3_step(v3):
    return simulate_step(v3)


def test_v3_step_is_feasible_and_consistent(v3, v3_step):
    r = v3_step
    assert r.memory_per_gpu_bytes <= get_gpu("h800").hbm_bytes
    assert r.tokens_per_step == 15360 * 4096
    assert r.tokens_per_s_per_gpu == pytest.approx(r.tokens_per_step / r.step_time_s / 2048)
    assert r.mfu_frac == pytest.approx(r.model_flops_per_step / (r.step_time_s * 2048 * 989.5e12))
    assert 0 < r.bubble_frac < 1 and 0 <= r.exposed_comm_frac < 1
    assert r.step_time_s >= r.pipeline_time_s
    # every simulated compute second on the busiest rank is in the breakdown
    busiest = max(r.pipeline.busy_s)
    compute_names = [k for k in r.op_time_s if k.endswith(("_fwd", "_bwd_input", "_bwd_weight"))]
    assert sum(r.op_time_s[k] for k in compute_names) == pytest.approx(busiest, rel=1e-9)


def test_dualpipe_hides_communication_better_than_1f1b(v3):
    dual = simulate_step(v3, check_memory=False)
    one = simulate_step(load_scenario(overrides=["plan.schedule='1f1b'"]), check_memory=False)
    assert dual.step_time_s < one.step_time_s
    assert dual.exposed_comm_frac < 0.5


def test_more_bandwidth_and_less_imbalance_never_slow_a_step(v3):
    base = simulate_step(v3, record_events=False).step_time_s
    assert simulate_step(v3, perturb=Perturb(link_bw_scale=2.0), record_events=False).step_time_s <= base
    assert simulate_step(v3, perturb=Perturb(routing_imbalance=1.5), record_events=False).step_time_s > base
    assert simulate_step(v3, perturb=Perturb(compute_eff_scale=0.8), record_events=False).step_time_s > base


def test_reserving_sms_for_communication_slows_compute(v3):
    # 20 SMs already saturate the all-to-all's links (comm.a2a_link_share): 32 only take compute
    twenty = simulate_step(v3, record_events=False)
    more = simulate_step(load_scenario(overrides=["plan.comm_sms=32"]), record_events=False)
    assert more.step_time_s > twenty.step_time_s


def test_untold_gemms_beside_held_sms_are_slower_than_told_ones(v3):
    # DeepSeek tells its GEMMs the SMs left to them; a stack that does not runs them beside the
    # comm kernels at the slowdown measured in sm_reserve.csv (profile.sm_reserve)
    told = simulate_step(v3, record_events=False)
    untold = simulate_step(load_scenario(overrides=["plan.comm_sms_told=false"]), record_events=False)
    assert 1.0 < untold.step_time_s / told.step_time_s < 1.25
    # with no SMs held (a dense model: expert parallelism on no SMs is refused), telling changes nothing
    none = ["model.name='llama3-8b'", "plan.ep=1", "plan.comm_sms=0", "cluster.num_gpus=256"]
    none_told = simulate_step(load_scenario(overrides=none), record_events=False)
    none_untold = simulate_step(load_scenario(overrides=[*none, "plan.comm_sms_told=false"]), record_events=False)
    assert none_untold.step_time_s == pytest.approx(none_told.step_time_s)


def test_untold_mode_needs_a_measured_profile():
    from twin.costs.profile import default_profile
    from twin.core.errors import ScenarioError
    with pytest.raises(ScenarioError, match="plan.comm_sms_told"):
        simulate_step(load_scenario(overrides=["plan.comm_sms_told=false"]), default_profile(), record_events=False)


def test_untold_slowdown_interpolates_the_measured_curve():
    from twin.costs.compute import untold_sm_slowdown
    from twin.costs.profile import load_profile
    prof, gpu = load_profile("h100"), get_gpu("h100")
    pts = dict(prof.sm_reserve["untold_fp8"])
    assert untold_sm_slowdown(prof, "fp8", 20, gpu) == pytest.approx(pts[20])
    assert pts[8] < untold_sm_slowdown(prof, "fp8", 14, gpu) < pts[20]
    # past the last measured count, the SM share carries it on
    assert untold_sm_slowdown(prof, "fp8", 99, gpu) == pytest.approx(pts[66] * (132 - 66) / (132 - 99))


def test_oom_plan_is_reported_with_breakdown():
    sc = load_scenario(overrides=["cluster.gpu='h800'", "workload.seq_len=32768", "workload.global_batch_seqs=4096",
                                  "plan.micro_batch_seqs=1", "plan.recompute='none'"])
    # the H800's 74.5 GiB less the 2.95 GiB a process holds outside torch's allocator (s26mem round 2)
    with pytest.raises(InfeasiblePlan, match=r"out of memory on pipeline rank \d+: needs .* GiB of 71.6 GiB") as exc:
        simulate_step(sc)
    assert set(exc.value.breakdown) == {"weights", "gradients", "optimizer", "activations", "comm_buffers"}


def test_stage_layers_cover_every_layer_once():
    for layers, stages in [(61, 16), (61, 32), (8, 8), (27, 4), (5, 4)]:
        split = stage_layers(layers, stages)
        assert [i for r in split for i in r] == list(range(layers))
        assert max(map(len, split)) - min(map(len, split)) <= 1


def _all_cuts(n: int, k: int):
    """Every cut of n blocks, in order, into k non-empty stages (as stage start indices)."""
    if k == 1:
        yield [0]
        return
    for last_start in range(k - 1, n):
        for head in _all_cuts(last_start, k - 1):
            yield head + [last_start]


@pytest.mark.parametrize("seed", range(6))
def test_balanced_stage_layers_minimises_the_costliest_stage(seed):
    import random
    rng = random.Random(seed)
    n, k = rng.randint(4, 9), rng.randint(2, 4)
    block_s = [rng.uniform(0.5, 2.0) for _ in range(n)]
    first_s, last_s = rng.uniform(0, 3), rng.uniform(0, 3)

    def stage_costs(cut: list[range]) -> list[float]:
        return [sum(block_s[i] for i in r) + (first_s if s == 0 else 0) + (last_s if s == k - 1 else 0)
                for s, r in enumerate(cut)]

    cut = balanced_stage_layers(block_s, first_s, last_s, k)
    assert [i for r in cut for i in r] == list(range(n)) and all(len(r) for r in cut)
    brute = min(max(stage_costs([range(a, b) for a, b in zip(starts, starts[1:] + [n])]))
                for starts in _all_cuts(n, k))
    assert max(stage_costs(cut)) == pytest.approx(brute)


def _reference_cut(block_s, first_s, last_s, k):
    """balanced_stage_layers as loops (twin.training.step until s20ux): the array version must give
    the same cut, ties included."""
    n = len(block_s)
    if k <= 1 or n < k:
        return stage_layers(n, k)
    prefix = [0.0]
    for b in block_s:
        prefix.append(prefix[-1] + b)

    def cost(i, j, stage):
        return prefix[j] - prefix[i] + (first_s if stage == 0 else 0.0) + (last_s if stage == k - 1 else 0.0)

    inf = float("inf")
    most = [[inf] * (n + 1) for _ in range(k + 1)]
    most[0][0] = 0.0
    for st in range(1, k + 1):
        for j in range(st, n - (k - st) + 1):
            most[st][j] = min(max(most[st - 1][i], cost(i, j, st - 1)) for i in range(st - 1, j))
    bound = most[k][n] * (1 + 1e-12)
    sq = [[inf] * (n + 1) for _ in range(k + 1)]
    cut = [[0] * (n + 1) for _ in range(k + 1)]
    sq[0][0] = 0.0
    for st in range(1, k + 1):
        for j in range(st, n - (k - st) + 1):
            for i in range(st - 1, j):
                c = cost(i, j, st - 1)
                if c <= bound and sq[st - 1][i] + c * c < sq[st][j]:
                    sq[st][j], cut[st][j] = sq[st - 1][i] + c * c, i
    bounds, j = [n], n
    for st in range(k, 0, -1):
        j = cut[st][j]
        bounds.append(j)
    bounds.reverse()
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


@pytest.mark.parametrize("seed", range(4))
def test_balanced_cut_is_the_loops_cut_ties_included(seed):
    import random
    rng = random.Random(seed)
    shapes = [(61, 16), (61, 8), (27, 4), (5, 5), (4, 6), (1, 1), (30, 1)] + [(rng.randint(1, 40), rng.randint(1, 12))
                                                                               for _ in range(30)]
    for n, k in shapes:
        for ties in (False, True):   # whole numbers: many cuts share the least maximum and sums of squares
            block_s = [float(rng.randint(1, 3)) if ties else rng.uniform(0.5, 2.0) for _ in range(n)]
            first_s, last_s = (float(rng.randint(0, 3)), float(rng.randint(0, 3))) if ties else (rng.uniform(0, 3), rng.uniform(0, 3))
            assert balanced_stage_layers(block_s, first_s, last_s, k) == _reference_cut(block_s, first_s, last_s, k), (n, k, ties)


def test_balanced_stage_layers_lightens_the_stage_with_the_head():
    cut = balanced_stage_layers([1.0] * 8, 0.0, 2.0, 4)
    assert len(cut[-1]) == 1 and [len(r) for r in cut[:-1]] in ([3, 2, 2], [2, 3, 2], [2, 2, 3])
    assert balanced_stage_layers([1.0] * 8, 0.0, 0.0, 4) == stage_layers(8, 4)   # no extras: even


def test_v3_balanced_cut_gives_the_head_and_mtp_stage_one_block(v3):
    sc = dataclasses.replace(v3, plan=dataclasses.replace(v3.plan, stage_cut="balanced"))
    schedule = build_schedule("dualpipe", 16, sc.num_microbatches)
    costs = StepCosts(sc, schedule, load_profile(sc.gpu.calibrated_as), routing_loads(sc), 1.0)
    sizes = [len(r) for r in costs.layers]
    # the last stage carries the output head and the MTP module (a block and the head again)
    assert sizes[-1] < min(sizes[:-1]) and sum(sizes) == sc.model.num_layers
    # the screen's closed form cuts the same blocks
    dense = sc.model.num_dense_layers
    assert _balanced_kinds(sc, _pieces_for(sc), 16) == tuple(
        (sum(i < dense for i in r), sum(i >= dense for i in r)) for r in costs.layers)
    even = dataclasses.replace(sc, plan=dataclasses.replace(sc.plan, stage_cut="even"))
    assert simulate_step(sc, check_memory=False).bubble_frac < simulate_step(even, check_memory=False).bubble_frac


def test_peak_live_bytes_walks_program_order():
    sch = build_schedule("1f1b", 4, 8)
    # rank 0 of 1F1B holds PP = 4 activation sets at its peak
    assert peak_live_bytes(sch.programs[0], {0: 1.0}) == 4.0
    assert peak_live_bytes(sch.programs[3], {0: 1.0}) == 1.0


def test_node_limited_routing_caps_ib_traffic():
    m = get_model("deepseek-v3")
    # uniform routing of 8 experts over 8 nodes touches 8 * (1 - (7/8)^8) = 5.25 nodes; V3 caps it at 4
    assert expected_nodes_per_token(8, 8, 4) == 4.0
    assert expected_nodes_per_token(8, 8, 8) == pytest.approx(8 * (1 - (7 / 8) ** 8))
    capped = {o.name: o for o in moe_ops(m, 4096, 64, 8, 4)}
    free = {o.name: o for o in moe_ops(m, 4096, 64, 8, 8)}
    assert capped["dispatch"].ib_bytes < free["dispatch"].ib_bytes
    # a token takes DeepEP's RDMA path once per node it spans, its own included (as DeepEP counts
    # the bytes of its published rates): 4096 tokens x 4 nodes x 7168 x (1 + 4/128) bytes
    assert capped["dispatch"].ib_bytes == pytest.approx(4096 * 4 * 7168 * (1 + 4 / 128))
    # BF16 combine moves twice the FP8 payload (without scales)
    assert capped["combine"].ib_bytes == pytest.approx(4096 * 4 * 7168 * 2)
    # within one node there is no RDMA traffic
    assert {o.name: o for o in moe_ops(m, 4096, 8, 8, 4)}["dispatch"].ib_bytes == 0.0


def test_selective_recompute_and_fp8_shrink_activations(v3):
    m = get_model("deepseek-v3")
    keep = dataclasses.replace(v3.plan, recompute="none", gemm_precision="bf16")
    sel = dataclasses.replace(v3.plan, recompute="selective", gemm_precision="bf16")
    fp8 = dataclasses.replace(v3.plan, recompute="selective", gemm_precision="fp8")
    full = dataclasses.replace(v3.plan, recompute="full")
    sizes = [activation_bytes_per_token(m, False, p) for p in (keep, sel, fp8, full)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4
    assert sizes[3] == 7168 * 2   # full recomputation keeps only the block input


def test_step_and_trace_cli(tmp_path):
    out = tmp_path / "step.json"
    proc = subprocess.run([sys.executable, "-m", "twin.cli.main", "step", "--json", str(out), "--schedule", "zb1p",
                           "--set", "cluster.gpu=h200"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    for key in ("step_time_s", "bubble_frac", "tokens_per_s_per_gpu", "mfu_frac", "memory_per_gpu_bytes", "schedule", "op_time_s"):
        assert key in data
    assert data["schedule"] == "zb1p" and data["scenario"]["cluster"]["gpu"] == "h200"
    trace = tmp_path / "trace.json"
    proc = subprocess.run([sys.executable, "-m", "twin.cli.main", "trace", "--out", str(trace), "--set", "workload.global_batch_seqs=4096"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    events = json.loads(trace.read_text())["traceEvents"]
    spans = [e for e in events if e["ph"] == "X"]
    assert spans and all(e["dur"] >= 0 and isinstance(e["ts"], (int, float)) for e in spans)
    assert {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"} >= {"compute", "comm"}


def test_infeasible_step_cli_exits_3_and_writes_reason(tmp_path):
    out = tmp_path / "step.json"
    proc = subprocess.run([sys.executable, "-m", "twin.cli.main", "step", "--json", str(out), "--set", "workload.seq_len=32768",
                           "--set", "workload.global_batch_seqs=4096", "--set", "plan.recompute='none'"], capture_output=True, text=True)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr
    data = json.loads(out.read_text())
    assert data["feasible"] is False and "out of memory" in data["reason"]
    # the refusal names the commands that search for a plan that fits (step runs the plan as written)
    assert "`twin replay`" in proc.stderr and "`twin plan" in proc.stderr


def test_event_log_is_optional_and_changes_nothing(v3, v3_step):
    quiet = simulate_step(v3, record_events=False)
    assert quiet.pipeline.events == []
    assert quiet.step_time_s == v3_step.step_time_s
    assert quiet.bubble_frac == v3_step.bubble_frac and quiet.exposed_comm_frac == v3_step.exposed_comm_frac
    assert quiet.op_time_s == v3_step.op_time_s


def test_step_costs_do_not_outlive_their_use(v3):
    """StepCosts memoised five methods with functools.cache, whose one cache per class keys on
    `self`: every StepCosts ever built stayed alive, and a plan search's workers grew by ~0.2 MB a
    candidate (until s20ux). Its memos now live and die with the instance."""
    import gc
    import weakref
    sc = load_scenario(overrides=["plan.zero_stage=3", "plan.schedule='1f1b'"])   # ZeRO-3: the FSDP memos too
    costs = StepCosts(sc, build_schedule(sc.plan.schedule, sc.plan.pp, sc.num_microbatches, sc.plan.virtual_stages),
                      load_profile(sc.gpu.calibrated_as), routing_loads(sc), 1.0)
    first = costs._chain(0, "F", True, False)
    assert costs._chain(0, "F", True, False) is first and costs.post_backward_s(0) == costs.post_backward_s(0)
    alive = weakref.ref(costs)
    del costs
    gc.collect()
    assert alive() is None

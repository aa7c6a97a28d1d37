"""What the step twin counts in memory (brief s10mem): the cross-entropy's working set by how the
loss runs, the FFN norm output counted once, a layout with an embedding-only first and a head-only
last stage (Llama 3's), and the H100's capacity; on a tiny dense model, formulas not fixed figures."""

import dataclasses
import json
from pathlib import Path

import pytest

from twin.core.errors import ScenarioError
from twin.core.schedules import build_schedule
from twin.core.specs import ParallelPlan, get_gpu, get_model
from twin.costs import memory
from twin.costs.profile import load_profile
from twin.planning.screen import screen
from twin.training.step import StepCosts, rank_memory, routing_loads, simulate_step

from tests.twin.training.test_step_parallel import DENSE, scenario

ROOT = Path(__file__).resolve().parents[3]


def _memory(sc) -> dict:
    return simulate_step(sc, record_events=False, check_memory=False).memory_breakdown_bytes


@pytest.mark.parametrize(("plan", "bytes_per_logit"), [
    ({"kernels": "eager"}, 12.0), ({"kernels": "fused_blocks"}, 12.0), ({"loss_kernel": "megatron_unfused"}, 6.0)])
def test_the_loss_working_set_adds_to_the_peak_on_one_stage(plan, bytes_per_logit):
    # one pipeline stage: the loss runs after every forward, on top of every saved activation
    # (without recomputation, so no recomputed block competes with it)
    plan = {**plan, "recompute": "none"}
    sc = scenario(pp=1, **plan)
    tokens = sc.tokens_per_microbatch
    got = _memory(sc)
    assert got["loss"] == pytest.approx(tokens * DENSE["vocab_size"] * bytes_per_logit)
    assert memory.loss_working_bytes(sc.model, sc.plan, tokens) == pytest.approx(got["loss"])
    # split over the vocabulary with TP (loss parallel); torch's DTensor loss parallel, which torchtitan
    # enters whenever TP > 1, holds 16 B a logit at its fused backward (s26mem), Megatron's its 6
    tp2 = scenario(pp=1, tp=2, **plan)
    per_logit = 6.0 if "loss_kernel" in plan else 16.0
    assert _memory(tp2)["loss"] == pytest.approx(tokens * DENSE["vocab_size"] / 2 * per_logit)


def test_torch_loss_parallel_holds_four_fp32_tensors_a_logit_at_its_backward():
    # torch/distributed/tensor/parallel/loss.py, _nll_loss_and_log_softmax_backward:
    # `(grad_input + torch.exp(x)) * grad_output` with x (log_softmax's saved FP32 output) and the
    # FP32 grad_input alive: x, grad_input, exp(x), their sum (4 B each); then the sum, the product
    # (the loss's forward peaks at 14: the BF16 logits, their FP32 copy, shifted, exp(shifted))
    assert memory.LOSS_BYTES_PER_LOGIT["torch_loss_parallel"] == 4 * 4.0
    assert memory.loss_kind(ParallelPlan(tp=8, ep=1, kernels="fused_blocks")) == "torch_loss_parallel"
    assert memory.loss_kind(ParallelPlan(tp=1, ep=1, kernels="eager")) == "torch_eager"
    assert memory.loss_kind(ParallelPlan(tp=8, ep=1, loss_kernel="megatron_unfused")) == "megatron_unfused"


def test_a_fused_loss_counts_no_working_set():
    assert "loss" not in _memory(scenario(pp=1))
    assert memory.loss_kind(ParallelPlan(tp=1, ep=1)) is None


def test_with_pipelining_the_loss_counts_where_the_last_stage_peaks():
    # 1F1B, 2 ranks: rank 1 holds the last stage and one micro-batch at a time, so its peak is one
    # set of activations plus the loss; rank 0 (more in flight, no loss) may still be the busiest
    sc = scenario(pp=2, kernels="eager", recompute="none")
    costs = StepCosts(sc, build_schedule("1f1b", 2, sc.num_microbatches), load_profile("h100"), routing_loads(sc), 1.0)
    last = rank_memory(sc, costs)[1]
    ws = memory.loss_working_bytes(sc.model, sc.plan, sc.tokens_per_microbatch)
    assert last["loss"] == pytest.approx(ws)
    assert "loss" not in rank_memory(sc, costs)[0]


@pytest.mark.parametrize("plan", [
    {"kernels": "eager", "pp": 2, "schedule": "1f1b"},
    {"loss_kernel": "megatron_unfused", "pp": 2, "schedule": "interleaved-1f1b", "virtual_stages": 2},
    {"kernels": "fused_blocks", "pp": 1}])
def test_the_screen_counts_the_loss_as_the_simulator(plan):
    sc = scenario(**plan)
    costs = StepCosts(sc, build_schedule(sc.plan.schedule, sc.plan.pp, sc.num_microbatches, sc.plan.virtual_stages),
                      load_profile("h100"), routing_loads(sc), 1.0)
    exact = max(rank_memory(sc, costs), key=lambda b: sum(b.values()))
    assert screen(sc).memory_breakdown_bytes == pytest.approx(exact, rel=1e-12)


def test_a_recomputed_block_sits_beside_the_saved_activations_and_the_loss_beyond_it():
    full = scenario(pp=1, recompute="full")
    block = memory.activation_bytes(full.model, True, dataclasses.replace(full.plan, recompute="none"),
                                    full.tokens_per_microbatch)
    kept = memory.activation_bytes(full.model, True, full.plan, full.tokens_per_microbatch)
    got = _memory(full)
    assert block > kept and got["recompute"] == pytest.approx(block - kept)
    assert "recompute" not in _memory(scenario(pp=1, recompute="none"))
    # the loss's working set and the recomputed block are not alive together: the peak takes the larger
    eager = _memory(scenario(pp=1, recompute="full", kernels="eager"))
    ws = memory.loss_working_bytes(full.model, scenario(pp=1, kernels="eager").plan, full.tokens_per_microbatch)
    assert eager["recompute"] + eager.get("loss", 0.0) == pytest.approx(max(ws, block - kept))


def test_without_recomputation_the_ffn_norm_output_is_the_up_projections_input():
    # Korthikanti et al. 2022: a block keeps four hidden-width tensors (two norm inputs, two linear
    # inputs); with GQA and SwiGLU: q, k, v, the attention output (+ softmax statistics), and the
    # FFN's gate and up outputs and their product
    m = get_model("llama3.1-8b")
    d, h, kvh, hd, f = 4096, 32, 8, 128, 14336
    none = memory.activation_bytes_per_token(m, True, ParallelPlan(tp=1, ep=1, recompute="none", gemm_precision="bf16"))
    assert none == 2 * (4 * d + (h + 2 * kvh) * hd + h * hd + 3 * f) + 4 * h


def test_llama3s_layout_one_block_per_virtual_stage_and_empty_end_stages():
    # 6 layers on 2 ranks x 4 virtual stages = 8 stages: the first only the embedding, the last only
    # the head (Llama 3 paper section 3.3.2); more stages than that are refused
    model = {**DENSE, "num_layers": 6, "num_dense_layers": 6}
    sc = scenario(model=model, pp=2, schedule="interleaved-1f1b", virtual_stages=4)
    costs = StepCosts(sc, build_schedule("interleaved-1f1b", 2, sc.num_microbatches, 4), load_profile("h100"),
                      routing_loads(sc), 1.0)
    assert [len(r) for r in costs.layers] == [0, 1, 1, 1, 1, 1, 1, 0]
    assert simulate_step(sc, record_events=False).step_time_s > 0
    with pytest.raises(ScenarioError, match="at most 8 model stages for 6 layers"):
        scenario(model=model, pp=2, schedule="interleaved-1f1b", virtual_stages=5)


def test_the_h100s_capacity_is_what_torch_reports_on_ours():
    # torch.cuda.get_device_properties(0).total_memory, recorded with every H100 measurement
    envs = sorted((ROOT / "calibration" / "measurements" / "h100").glob("env*.json"))
    totals = {json.loads(p.read_text())["total_memory_bytes"] for p in envs}
    assert envs and totals == {get_gpu("h100").hbm_bytes}

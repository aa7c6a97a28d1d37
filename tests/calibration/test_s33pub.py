"""s33pub (docs/notes/s33pub.md): why the Llama 3 405B 8K row on 8,192 GPUs is refused, held live.

Two findings of the note, each recomputed here so the note cannot go stale:
1. The in-flight count the twin charges (141 layer micro-batches on pipeline rank 1) is also what
   PyTorch's interleaved schedule with a tunable N gives: the rule N = M / max(1, M // PP) that
   reproduces the Llama 3 paper's Figure 6 (PP 4, micro-batches 0-9, "in this case N = 5") gives
   N = 16 at the row's PP 16 and 32 micro-batches, and the same 141 as Megatron's depth-first warm-up.
2. No reading of the memory outside torch's allocator makes the row's count fit: under the row's
   ZeRO-1 (Meta's ISCA'25 rule: bs 32 >= 2 x pp) every chunk's FP32 accumulator is alive beside the
   141 saved sets, so the count is over the whole card; with only a CUDA context outside (the committed
   runtime_memory record's first stage), Meta's saved set a layer micro-batch must be at least 14%
   under the twin's 65,088 B a token (the least a block keeps without recomputing).
"""

from __future__ import annotations

import pytest

from calibration import records_io
from calibration.published_runs import load_runs, scenario_of
from calibration.runtime_memory import committed_record
from twin.core.schedules import build_schedule, torch_time_steps
from twin.costs import memory
from twin.planning.screen import screen
from twin.training import step

ROW = "l3-405b-8k-gpus8192"


def _peak_in_flight(ops) -> int:
    """Largest number of forwards whose full backward has not yet run, walking one rank's ops (None:
    an idle time step; interleaved programs hold forwards and full backwards only)."""
    live = peak = 0
    for op in ops:
        if op is None:
            continue
        assert op.kind in ("F", "BW"), op.kind
        live += 1 if op.kind == "F" else -1
        peak = max(peak, live)
    return peak


def test_torchs_tunable_n_reproduces_figure_6_and_gives_the_rows_in_flight_count():
    # Figure 6: PP 4, two chunks a rank, micro-batches 0-9, N = 5: rank 0 runs five forwards of chunk 0,
    # then five of chunk 1, before chunk 0 again
    fig6 = [(op.microbatch, op.chunk) for op in torch_time_steps(4, 10, 2)[0] if op is not None and op.kind == "F"]
    assert fig6[:11] == [(0, 0), (1, 0), (2, 0), (3, 0), (4, 0), (0, 1), (1, 1), (2, 1), (3, 1), (4, 1), (5, 0)]
    # the row: PP 16, V 8 (one layer a chunk), 32 micro-batches (batch 32 a DP rank, one sequence each)
    sc = scenario_of(next(r for r in load_runs()[0] if r.id == ROW))
    pp, m, v = sc.plan.pp, sc.num_microbatches, sc.plan.virtual_stages
    assert (pp, m, v) == (16, 32, 8)
    torch_peaks = [_peak_in_flight(steps) for steps in torch_time_steps(pp, m, v)]
    megatron = build_schedule("interleaved-1f1b", pp, m, v)
    megatron_peaks = [_peak_in_flight(prog) for prog in megatron.programs]
    # warm-up (V - 1) N + 2 (PP - 1 - r) forwards, then one more: 143 on rank 0, 141 on rank 1 (rank 0's
    # first chunk is the embedding alone, so rank 1 holds the most layers in flight)
    assert torch_peaks == megatron_peaks == [min((v - 1) * 16 + 2 * (pp - 1 - r), m * v) + 1 for r in range(pp)]
    assert torch_peaks[1] == 141


@pytest.fixture(scope="module")
def counted():
    sc = scenario_of(next(r for r in load_runs()[0] if r.id == ROW))
    res = step.simulate_step(sc, record_events=False, check_memory=False)
    return sc, dict(res.memory_breakdown_bytes)


def test_no_reading_of_the_memory_outside_the_allocator_fits_the_rows_count(counted):
    """Under the row's ZeRO-1 (Meta's ISCA'25 rule, published_runs.ADOPT_LLAMA3_ISCA_COMMS) every FP32 accumulator
    sits beside the 141 saved sets: the count is over the whole card, whatever lies outside the allocator, and the
    saved set a layer micro-batch Meta kept must be at least 14% under the twin's (docs/notes/s33pub.md 3b)."""
    sc, got = counted
    assert sc.plan.zero_stage == 1 and "grad_queue" not in got
    layer_set = memory.activation_bytes(sc.model, True, sc.plan, step.local_tokens(sc))
    assert layer_set == 65_088 * 8_192                       # the least a block keeps without recomputing
    assert got["activations"] == pytest.approx(141 * layer_set, rel=1e-12)
    params = got["weights"] / memory.WEIGHT_BYTES            # rank 1's BF16 weights: its eight layers, gathered
    assert got["gradients"] == pytest.approx(memory.GRAD_BYTES * params, rel=1e-12)   # unsharded FP32
    count = sum(got.values())
    assert count > sc.gpu.hbm_bytes > step.training_capacity_bytes(sc.gpu)   # nothing outside would not do
    rec = records_io.read_csv(committed_record())
    context_bytes = rec.loc[rec["stage"] == "context", "outside_bytes"].max()   # the CUDA context alone
    assert 0.5 * 2**30 < context_bytes < step.OUTSIDE_ALLOCATOR_BYTES
    room = sc.gpu.hbm_bytes - context_bytes - (count - got["activations"])
    assert room / 141 / layer_set < 0.86   # Meta's set a layer micro-batch: at most ~0.856 of the twin's


def test_zero2_accumulators_counted_when_born_in_the_simulator_and_the_screen(monkeypatch):
    """step.ADOPT_ZERO2_PP_GRADS_WHEN_BORN on the 16,384-GPU row (ZeRO-2, one reduce-scatter a stage, every
    forward first at M = PP): at the peak one chunk's FP32 accumulator (born at the first backward, beside every
    saved set), where the count without the switch puts all eight beside the forward peak."""
    sc = scenario_of(next(r for r in load_runs()[0] if r.id == "l3-405b-8k-gpus16384"))
    assert sc.plan.zero_stage == 2 and sc.plan.pp_grad_sync == "last_backward" and sc.num_microbatches == sc.plan.pp
    layer_grads = memory.GRAD_BYTES * memory.block_params_on_gpu(sc.model, True, sc.plan.tp, sc.plan.ep).total
    for on, grads in ((True, layer_grads), (False, 8 * layer_grads)):
        monkeypatch.setattr(step, "ADOPT_ZERO2_PP_GRADS_WHEN_BORN", on)
        got = step.simulate_step(sc, record_events=False, check_memory=False).memory_breakdown_bytes
        assert got["gradients"] == pytest.approx(grads, rel=1e-12)
        assert screen(sc).memory_per_gpu_bytes == pytest.approx(sum(got.values()), rel=1e-12)

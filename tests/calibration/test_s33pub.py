"""s33pub (docs/notes/s33pub.md): why the Llama 3 405B 8K row on 8,192 GPUs is refused, held live.

Two findings of the note, each recomputed here so the note cannot go stale:
1. The in-flight count the twin charges (141 layer micro-batches on pipeline rank 1) is also what
   PyTorch's interleaved schedule with a tunable N gives: the rule N = M / max(1, M // PP) that
   reproduces the Llama 3 paper's Figure 6 (PP 4, micro-batches 0-9, "in this case N = 5") gives
   N = 16 at the row's PP 16 and 32 micro-batches, and the same 141 as Megatron's depth-first warm-up.
2. No reading of the memory outside torch's allocator makes the row's whole count fit: its forward
   peak is refused against the measured 2.95 GiB floor; with the backward's own FP32 weight gradients
   it fits only beside less than one NCCL communicator as our record holds; with the FP32 gradients
   still waiting for their reduce-scatter (the twin's own timing) it exceeds the H100's capacity less
   the CUDA context alone (the record's first stage). So whatever let Meta's run fit lies in the count
   (activations, schedule or gradients) or in a far smaller NCCL, none of which the paper publishes.
"""

from __future__ import annotations

import pytest

from calibration import records_io
from calibration.published_runs import load_runs, scenario_of
from calibration.runtime_memory import committed_record
from twin.core.schedules import build_schedule, torch_time_steps
from twin.costs import memory
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


def test_no_reading_of_the_memory_outside_the_allocator_fits_the_rows_whole_count(counted):
    sc, got = counted
    extra = got.pop("grad_queue")   # beyond the forward peak: the backward's own FP32 gradients, then the backlog
    forward_peak = sum(got.values())
    whole = forward_peak + extra
    # the backward's own: the layer's FP32 weight gradients beside its two still-saved inputs, in place of its set
    schedule, costs = step._costs_and_memory(sc, None, step.Perturb())[:2]
    stage = schedule.stage_of(1, 0)
    layer_set = memory.activation_bytes(sc.model, True, sc.plan, step.local_tokens(sc))
    assert step.stage_activation_bytes(sc, costs, stage) == pytest.approx(layer_set, rel=1e-12)
    assert got["activations"] == pytest.approx(141 * layer_set, rel=1e-12)
    own = forward_peak + step.backward_inner_peak_bytes(sc, costs, 1, stage) - layer_set
    assert forward_peak < own < whole
    rec = records_io.read_csv(committed_record())
    outside = {stage_: rec.loc[rec["stage"] == stage_, "outside_bytes"].max()
               for stage_ in ("context", "block_fwd_bwd", "nccl_world", "nccl_groups", "steady")}
    assert outside["steady"] == pytest.approx(step.OUTSIDE_ALLOCATOR_BYTES)
    capacity = {k: sc.gpu.hbm_bytes - v for k, v in outside.items()}
    # docs/notes/s33pub.md section 3's table, row by row: which of the three levels fits
    fits = {k: (forward_peak <= c, own <= c, whole <= c) for k, c in capacity.items()}
    assert fits == {"context": (True, True, False), "block_fwd_bwd": (True, True, False),
                    "nccl_world": (True, False, False), "nccl_groups": (False, False, False),
                    "steady": (False, False, False)}
    assert whole <= sc.gpu.hbm_bytes   # only with nothing at all outside the allocator
    # refused today on the forward peak against the measured floor (s26mem3)
    assert step.ADOPT_OUTSIDE_ALLOCATOR_RESERVE and forward_peak > step.training_capacity_bytes(sc.gpu)
    # the shortfall in layer micro-batches of activations (0.497 GiB each) against the floor: 2 for the
    # forward peak, 6 for the whole count
    short = [(need - step.training_capacity_bytes(sc.gpu)) / layer_set for need in (forward_peak, whole)]
    assert [int(-(-s // 1)) for s in short] == [2, 6]

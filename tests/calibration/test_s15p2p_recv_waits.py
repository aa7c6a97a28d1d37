"""s15p2p (docs/notes/s15p2p_rule.md): DualPipe's measured idle is dataflow, not an NCCL rendezvous.

On the FITTING split of the four multi-GPU records folders, DualPipe's receives end a transfer after
the peer's producing op ends (never a rendezvous of milliseconds), its sends barely hold the compute
stream, each rank's idle is its compute's gap to the step's slowest rank, and the twin's point-to-point
delay is not shorter than the measured transfer. Each assertion fails if the records show otherwise."""

import json
from pathlib import Path

import pytest

from calibration import p2p_waits as pw
from calibration import pipeline as pipe
from calibration.fit import PROFILES_DIR
from calibration.pipeline import PipelineCosts, StageCost
from calibration.predict import gpu_spec
from calibration.whole_step import with_measured_collectives
from twin.costs.profile import profile_from_json
from twin.sim.pipeline import simulate_pipeline

MEASUREMENTS = Path(__file__).resolve().parents[2] / "calibration/measurements"
FOLDERS = ("h100x2", "h200x2", "h100x4", "h200x4")
# the smallest idle miss on these folders is 5.8 ms (2xH200 DualPipe rank 1 at 4): a rendezvous that
# could carry it would hold a receive for milliseconds past its producer; 1 ms is far below that
RENDEZVOUS_BOUND_S = 1e-3
IDLE_FLOOR_OF_STEP = 0.01   # the idle target's own floor (tests/calibration/test_whole_runs.py)


def _fitting_rows(folder: str, schedule: str) -> list:
    """(pipeline_step row, its pipeline_ops rows) of the folder's fitting configurations of a schedule."""
    steps, ops = pipe.load(MEASUREMENTS / folder)
    rows = steps[(steps["bench"] == "pipeline_step") & (steps["schedule"] == schedule) & (steps["split"] == "fit")]
    return [(row, pipe.ops_of(row, ops)) for _, row in rows.iterrows()]


def _fitting_dualpipe(folder: str) -> list:
    return _fitting_rows(folder, "dualpipe")


@pytest.mark.parametrize("folder", FOLDERS)
def test_dualpipe_receives_end_a_transfer_after_their_producer(folder):
    configs = _fitting_dualpipe(folder)
    assert configs, f"no fitting DualPipe rows in {folder}"
    for row, ops in configs:
        waits = pw.recv_waits(ops, int(row["pp"]))
        assert len(waits) and waits["producer_end_s"].notna().all(), "every receive matched to one send (pp 2)"
        late = waits[waits["after_producer_s"] > RENDEZVOUS_BOUND_S]
        assert late.empty, f"{folder} n{row['num_microbatches']}: receives held past their producer:\n{late}"
        # most of the waiting is for the peer's op itself
        assert waits["before_producer_s"].sum() > waits["after_producer_s"].sum()


@pytest.mark.parametrize("folder", FOLDERS)
def test_dualpipe_sends_do_not_hold_the_compute_stream(folder):
    for row, ops in _fitting_dualpipe(folder):
        for _, step in ops.groupby("rep"):
            span_s = step["end_s"].max() - step["start_s"].min()
            sends = step[step["kind"] == "send"]
            per_rank_s = (sends["end_s"] - sends["start_s"]).groupby(sends["rank"]).sum()
            assert (per_rank_s < IDLE_FLOOR_OF_STEP * span_s).all(), per_rank_s


@pytest.mark.parametrize("folder", FOLDERS)
def test_dualpipe_idle_is_the_gap_to_the_slowest_rank(folder):
    for row, ops in _fitting_dualpipe(folder):
        s = pw.rank_steps(ops)
        gap_s = s["slowest_compute_s"] - s["compute_s"]
        assert ((s["idle_s"] - gap_s).abs() <= IDLE_FLOOR_OF_STEP * s["span_s"]).all(), s
        # the idle sits in the receives (the rest: op boundaries, a few us each)
        assert ((s["idle_s"] - s["recv_s"]).abs() <= IDLE_FLOOR_OF_STEP * s["span_s"]).all(), s


@pytest.mark.parametrize("folder", FOLDERS)
def test_twin_p2p_delay_not_shorter_than_the_measured_transfer(folder):
    gpu = folder[:4]
    profile = with_measured_collectives(profile_from_json(json.loads((PROFILES_DIR / f"{gpu}.json").read_text())),
                                        MEASUREMENTS / folder)
    for row, ops in _fitting_dualpipe(folder):
        spec = pipe._spec_of(row)
        num_bytes = int(row["micro_batch_seqs"]) * int(row["seq_len"]) * spec.hidden_size * pipe.BF16_BYTES
        measured_s = float(pw.recv_waits(ops, int(row["pp"]))["after_producer_s"].median())
        assert pipe.p2p_s(num_bytes, gpu_spec(gpu), profile) >= measured_s


@pytest.mark.parametrize("folder", FOLDERS)
def test_zb1p_gradients_sent_before_the_last_stages_w_arrive_late(folder):
    """Not modelled (the twin's p2p is a pure delay): a gradient the last stage sends right before its
    W reaches stage 0 milliseconds after its producer ended; every other receive a transfer after."""
    waits = [pw.recv_waits(ops, int(row["pp"])) for row, ops in _fitting_rows(folder, "zb1p")]
    assert waits, f"no fitting ZB1P rows in {folder}"
    for w in waits:
        late = w["after_producer_s"] > RENDEZVOUS_BOUND_S
        before_w = w["sender_next"].str.startswith("W")
        assert not (late & ~before_w).any(), w[late & ~before_w]
        assert late[before_w].mean() > 0.5, w[before_w]


# ---- candidate L (calibration.pipeline.ADOPT_SEND_HOLD_BEFORE_LAST_W), both settings

def test_held_sends_are_the_backwards_before_the_last_stages_w():
    zb1p = pipe.build_schedule("zb1p", 2, 4)
    held = pipe.held_before_last_w(zb1p)
    assert held and all(rank == 1 for rank, _, _ in held)   # stage 1 is the last
    for rank, mb, chunk in held:
        program = zb1p.programs[rank]
        k = next(i for i, op in enumerate(program) if op.backward_part == (mb, chunk))
        assert program[k + 1].kind == "W"
    for name in ("1f1b", "dualpipe"):   # at pp 2 their sends never precede the last stage's W
        assert not pipe.held_before_last_w(pipe.build_schedule(name, 2, 8))


@pytest.mark.parametrize("folder", FOLDERS)
def test_measured_hold_is_the_late_receives_excess(folder):
    steps, ops = pipe.load(MEASUREMENTS / folder)
    hold_s = pipe.measured_hold_before_last_w_s(steps, ops)
    # the late receives' excess over a plain transfer: milliseconds, far above the transfer itself
    assert 1e-3 < hold_s < 5e-3


def test_hold_delays_the_held_gradients_consumer_in_the_sim():
    """twin.sim.pipeline with PipelineCosts: equal stage costs, ZB1P at 4: with a hold the last
    backward's input reaches stage 0 later, so the step lengthens by the hold (it is on the critical
    path there); without one (hold 0) the timeline is the same as before the hook."""
    schedule = pipe.build_schedule("zb1p", 2, 4)
    costs = {s: StageCost(f_s=0.01, b_s=0.01, w_s=0.01) for s in (0, 1)}
    off = simulate_pipeline(schedule, PipelineCosts(schedule, costs, 1e-4), streams=("compute",))
    on = simulate_pipeline(schedule, PipelineCosts(schedule, costs, 1e-4, None, 2e-3), streams=("compute",))
    assert on.makespan_s == pytest.approx(off.makespan_s + 2e-3)


@pytest.mark.parametrize("adopt", [False, True])
def test_adopt_switch_moves_only_zb1p_and_dualpipev_rows(adopt, monkeypatch):
    """The switch (off: s15p2p's rule not met) on 4xH100's folder, where validation moved ZB1P's and
    DualPipeV's stage idle by 0.3-0.9 ms: on, the hold is the folder's measured one and no 1F1B or
    DualPipe row moves; off, nothing is held."""
    folder = MEASUREMENTS / "h100x4"
    steps, ops = pipe.load(folder)
    monkeypatch.setattr(pipe, "ADOPT_SEND_HOLD_BEFORE_LAST_W", adopt)
    prof = profile_from_json(json.loads((PROFILES_DIR / "h100.json").read_text()))
    rows = steps[(steps["bench"] == "pipeline_step") & (steps["split"] == "fit") & (steps["num_microbatches"] == 4)]
    hold_s = pipe.measured_hold_before_last_w_s(steps, ops) if pipe.ADOPT_SEND_HOLD_BEFORE_LAST_W else 0.0
    assert (hold_s > 0) == adopt
    for _, row in rows.iterrows():
        off = pipe.simulate_row(row, gpu_spec("h100"), prof)
        on = pipe.simulate_row(row, gpu_spec("h100"), prof, hold_before_last_w_s=hold_s)
        if not adopt or row["schedule"] in ("1f1b", "dualpipe"):
            assert on[0].op_spans == off[0].op_spans and on[1] == off[1]
        else:
            assert on[1] >= off[1] and max(on[0].idle_s) >= max(off[0].idle_s)

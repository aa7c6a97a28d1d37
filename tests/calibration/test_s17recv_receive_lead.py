"""docs/notes/s17recv_rule.md: a receive is a stream wait in real/pipeline/engine.py (`_receive`:
irecv(...).wait() makes the compute stream wait, the host goes on), and the twin's host_led_parts
already carries the host's lead through it: the host keeps issuing the next op while the GPU waits
for its input, so a host-bound op that starts late on the GPU runs shorter by the wait, up to its
first host synchronisation (EP dispatch)."""

import pytest

from calibration.pipeline import StageOps, host_led_parts
from twin.core.schedules import build_schedule

LAUNCH_HOST_S, KERNEL_S, LAUNCHES = 1e-3, 0.1e-3, 10   # host-bound: the host is 10x the kernel
WAIT_S = 5e-3


def _host_bound(sync_first: bool) -> list:
    ops = [(LAUNCH_HOST_S, KERNEL_S)] * LAUNCHES
    return [(None, 0.0)] + ops if sync_first else ops


def _rank1_second_op_s(wait_s: float, sync_first: bool) -> float:
    """GPU seconds of DualPipe PP2 n4 rank 1's second op (F0.0, the op after the receive) when the
    GPU can start it `wait_s` after its predecessor ends (its input arriving late)."""
    schedule = build_schedule("dualpipe", 2, 4)
    assert [str(op) for op in schedule.programs[1][:2]] == ["F2.1", "F0.0"]
    ops_list = _host_bound(sync_first)
    ops = {s: StageOps(ops_list, ops_list, ops_list) for s in range(schedule.num_model_stages)}
    first_op_s = LAUNCHES * LAUNCH_HOST_S + KERNEL_S   # a host-bound first op from level
    starts = {(r, k): 1.0 + k for r, program in enumerate(schedule.programs) for k in range(len(program))}
    starts[1, 0], starts[1, 1] = 0.0, first_op_s + wait_s
    return host_led_parts(schedule, ops, starts)[1, 1][0]


def test_a_receive_wait_does_not_hold_the_host():
    level = _rank1_second_op_s(0.0, sync_first=False)
    waited = _rank1_second_op_s(WAIT_S, sync_first=False)
    assert level == pytest.approx(LAUNCHES * LAUNCH_HOST_S, rel=0.02)
    # the host issued WAIT_S of the op's launches while the GPU waited: the op is shorter by the wait
    assert waited == pytest.approx(level - WAIT_S, rel=0.02)


def test_a_host_synchronisation_at_the_op_start_spends_the_lead():
    level = _rank1_second_op_s(0.0, sync_first=True)
    waited = _rank1_second_op_s(WAIT_S, sync_first=True)
    assert waited == pytest.approx(level, rel=1e-9)

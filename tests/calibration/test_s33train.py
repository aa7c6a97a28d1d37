"""calibration/s33train.py (session s33train, issue 13): the committed train_step records are all priced short, and the
profiled steps of calibration/measurements/h200/s33train/trace/ place the shortfall in the GPU's idle time inside
the step, not in the kernels (docs/notes/s33train.md). ~4 s CPU: the traces' five cases and the committed rows priced
once (module-scoped)."""

import pytest

from calibration import records as rec
from calibration import s33bubble, s33train

MOE_FORWARDS = {("olmoe-slice", 1, "bf16"), ("olmoe-slice", 2, "bf16"), ("phi35moe-slice", 1, "bf16"),
                ("olmoe-slice", 1, "fp8-blockwise")}


@pytest.fixture(scope="module")
def cases():
    """The traces beside the twin the diagnostic judged: without s33bubble's kernel bubble (adopted after it: the
    twin's idle now carries ~1.5 us an op, docs/notes/s33bubble.md)."""
    folders = dict(s33train.trace_folders())
    assert "h200" in folders, "the committed traces: calibration/measurements/h200/s33train/trace/"
    with s33bubble.candidate(False):
        return {(c["model"], c["batch"], c["precision"]): c for c in s33train.trace_cases(folders["h200"], "h200")}


@pytest.fixture(scope="module")
def committed():
    return s33train.committed(rec.records_root())


def test_traces_hold_the_campaign_cases(cases):
    assert set(cases) == MOE_FORWARDS | {("llama3-8b-slice", 3, "bf16")}
    for c in cases.values():
        # both profiled steps' kernels matched index by index to the with_host step's phases
        assert c["phases_matched_steps"] == 2
        # the split adds up: residual = kernels + overlap + (gaps - twin idle) + head/tail + (timed - profiled)
        #                               + (the twin's window - its predicted step)
        assert abs(c["split_check_s"]) < 1e-6
        # (the kernel rows' times carry 6 significant digits: 1 us at a 120 ms step)
        assert abs(sum(c["measured_category_s"].values()) - c["kernel_sum_s"]) < 5e-6


def test_kernels_are_priced_and_the_idle_is_not(cases):
    """The finding: the kernels sum within 2.5% of the twin's GPU seconds on every case, while the GPU sits idle
    inside the profiled step at least 1 ms longer than the twin's idle, and every timed step is under-predicted."""
    for key, c in cases.items():
        assert abs(c["kernel_sum_s"] / c["twin_gpu_s"] - 1) < 0.025, (key, c["kernel_sum_s"], c["twin_gpu_s"])
        assert c["gap_s"] - c["twin_idle_s"] > 1e-3, (key, c["gap_s"], c["twin_idle_s"])
        assert c["residual_s"] > 0, key


def test_moe_forwards_wait_on_the_host(cases):
    """The MoE slices' forwards wait on the host (gaps > 20 us) 2 ms or more a step; the dense slice's forward only
    at the step's start (< 0.5 ms); no backward waits more than 0.6 ms."""
    for key, c in cases.items():
        wait = c["measured_phase_host_wait_s"]
        if key in MOE_FORWARDS:
            assert wait["fwd"] > 2e-3, (key, wait)
        else:
            assert wait["fwd"] < 0.5e-3, (key, wait)
        assert wait.get("bwd", 0.0) < 0.6e-3, (key, wait)


@pytest.mark.xfail(strict=True, reason="issue 13: the twin prices every committed one-GPU train_step short "
                   "(docs/notes/s33train.md); this passes once no more than 80% of a GPU's rows fall on one side")
def test_train_step_is_not_biased(committed):
    summary = s33train.committed_summary(committed)
    live = {g: f"{s['under']} of {s['rows']} under, signed median {s['median_rel_error']:+.2%}"
            for g, s in summary.items()}
    print(f"live: {live}")
    assert all(s["under"] <= 0.8 * s["rows"] for s in summary.values()), live

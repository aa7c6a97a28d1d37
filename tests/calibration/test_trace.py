"""Rung 3: the twin against DeepSeek's H800 chunk-pair trace. These assert the targets; if they fail,
the twin (or its profile) disagrees with the trace - report it, never tune to it."""

import pytest

from calibration import trace

RESULT = None


def _result():
    global RESULT
    if RESULT is None:
        RESULT = trace.compare()
    return RESULT


def test_trace_figures_carry_sources():
    t = trace.load_trace()
    assert t["chunk_pair"]["gpu_span_us"] == 129012
    assert "prof.train.gpu_span" in t["chunk_pair"]["source"]
    assert "prof.train.phase_means" in t["phase_means_us"]["source"]


def test_twin_uses_a_middle_stage_of_four_moe_layers():
    r = _result()
    assert r["gpu"] == "h800" or "H800" in r["gpu"]
    assert r["stage"] >= 1


# History: attn_F met since 2026-11-24 (-24% -> -19%) with the measured sustained-load ratios;
# attn_W (-31%) and mlp_W (-41%) met since 2026-11-24 (session 3) with DeepSeek's FP8 stack as the
# V3 report describes it (separate cast kernels, 1x128 x 1x128 weight-gradient GEMMs; measured in
# calibration/measurements/<gpu>/fp8_stack.csv) and DualPipe's deferred weight gradients.


def test_chunk_pair_within_10_percent():
    c = _result()["chunk_pair"]
    assert abs(c["rel_error"]) <= trace.CHUNK_PAIR_TARGET, trace.format_table(_result())


@pytest.mark.parametrize("phase", list(trace.COMPUTE_PHASES))
def test_compute_phase_within_20_percent(phase):
    row = next(r for r in _result()["phases"] if r["phase"] == phase)
    assert abs(row["rel_error"]) <= trace.PHASE_TARGET, (
        f"{phase}: twin {row['predicted_us']:.0f} us vs trace {row['trace_us']:.0f} us ({row['rel_error']:+.1%})")


def test_communication_phases_are_judged_and_reported_against_the_same_target():
    # the table must say plainly whether each all-to-all phase meets the 20% target
    rows = [r for r in _result()["phases"] if r["kind"] == "comm"]
    assert [r["phase"] for r in rows] == list(trace.COMM_PHASES)
    for r in rows:
        assert r["target"] == trace.PHASE_TARGET
        assert r["meets_target"] == (abs(r["rel_error"]) <= trace.PHASE_TARGET)
    table = trace.format_table(_result())
    assert all(("NOT met" in line) != r["meets_target"] for r in rows for line in table.splitlines()
               if line.startswith(r["phase"] + " "))


# Blocked (issue 5): the twin has no in-situ term for DeepEP (peer synchronisation in the notify
# kernels, data kernels slower beside concurrent GEMMs); the isolated published rate leaves it
# 32-61% short. Modelling it needs a multi-node run no lent machine can make. Strict: the day a
# sourced term closes the gap, this starts passing and must be turned into a plain test.
@pytest.mark.xfail(strict=True, reason="blocked: in-situ DeepEP slowdown needs a multi-node measurement")
@pytest.mark.parametrize("phase", list(trace.COMM_PHASES))
def test_communication_phase_within_20_percent(phase):
    row = next(r for r in _result()["phases"] if r["phase"] == phase)
    assert abs(row["rel_error"]) <= trace.PHASE_TARGET, (
        f"{phase}: twin {row['predicted_us']:.0f} us vs trace {row['trace_us']:.0f} us ({row['rel_error']:+.1%})")

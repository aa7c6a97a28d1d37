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


# Targets the twin does not meet yet (issue 5 stays open until they pass). strict=True: the day a
# calibrated profile meets one, the xpass fails CI and this list must shrink.
KNOWN_MISSES = {
    "mlp_W": "the trace splits MoE weight gradients over two streams (3540 + 2839 us); the twin has one: -41% "
             "against their sum, +6% against the main stream alone",
    "attn_W": "-32%: the MLA projections' weight-gradient GEMMs at V3's 4K-token microbatch run closer to peak in "
              "the CUDA-graph-fitted dense curves (sustained-load ratio 0.96 applied) than in the trace",
}
# attn_F met since 2026-11-24 (-24% -> -19%): the profile's measured sustained-load ratios (attention
# 0.90 of its burst rate after 30 s at the power limit, calibration/measurements/<gpu>/sustained.csv)


def _known(name):
    return pytest.mark.xfail(strict=True, reason=KNOWN_MISSES[name]) if name in KNOWN_MISSES else ()


def test_chunk_pair_within_10_percent():
    c = _result()["chunk_pair"]
    assert abs(c["rel_error"]) <= trace.CHUNK_PAIR_TARGET, trace.format_table(_result())


@pytest.mark.parametrize("phase", [pytest.param(p, marks=_known(p)) for p in trace.COMPUTE_PHASES])
def test_compute_phase_within_20_percent(phase):
    row = next(r for r in _result()["phases"] if r["phase"] == phase)
    assert abs(row["rel_error"]) <= trace.COMPUTE_PHASE_TARGET, (
        f"{phase}: twin {row['predicted_us']:.0f} us vs trace {row['trace_us']:.0f} us ({row['rel_error']:+.1%})")

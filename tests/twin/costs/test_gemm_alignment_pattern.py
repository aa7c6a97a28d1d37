"""The alignment term's second form (twin.costs.gemm_alignment pattern functions, the
ADOPT_GEMM_ALIGNMENT_PATTERN switch of twin/costs/compute.py, docs/notes/s23align2_rule.md): a
GEMM's operand pattern, the factor lookup, and that the factor scales the compute term only, under
both settings."""

from __future__ import annotations

import dataclasses

import pytest

from calibration.predict import Eager
from twin.core.specs import get_gpu, get_model
from twin.costs import compute, gemm_alignment as ga
from twin.costs.flops import Op, OpKind, dense_ffn_ops
from twin.costs.profile import load_profile

H100 = get_gpu("h100")
PROF = load_profile("h100")
# round numbers for the mechanism tests (not a fit)
TABLE = {"pattern_fits": {"h100": {"factors": {"align1/c": 8.0, "align1/ab": 5.0, "align2/c": 3.0},
                                   "family_factors": {"align1": 6.0, "align2": 2.5}}}}


@pytest.fixture
def table(monkeypatch):
    monkeypatch.setattr(ga, "_table", lambda: TABLE)


def test_operand_alignments_and_patterns():
    # vocab 50257 x 2048: the forward writes the odd row, the backward reads it
    assert ga.operand_alignments(50257, 2048, "fwd") == (8, 8, 1)
    assert ga.operand_alignments(50257, 2048, "dgrad") == ga.operand_alignments(50257, 2048, "wgrad") == (1, 8, 8)
    assert ga.pattern_key((8, 8, 1)) == "align1/c" and ga.pattern_key((1, 8, 8)) == "align1/a"
    # FFN 5460 down (2048 x 5460): 4-element rows take the align2 kernels
    assert ga.pattern_key(ga.operand_alignments(2048, 5460, "fwd")) == "align2/ab"
    assert ga.pattern_key((8, 8, 8)) == "aligned/" and ga.kernel_family((4, 2, 8)) == "align2"


def test_pattern_factor_lookup(table):
    f = ga.pattern_factor
    assert f("h100", (8, 8, 8)) == 1.0 and f("h100", (8, 8, 1)) == 8.0 and f("h100", (1, 1, 8)) == 5.0
    assert f("h100", (1, 1, 1)) == 6.0        # no such pattern: its family's factor
    assert f("h100", (4, 8, 8)) == 2.5
    assert f("h200", (8, 8, 1)) == 1.0        # a profile without a fit: unpriced


@pytest.mark.parametrize("adopt", [False, True])
def test_factor_scales_the_compute_term_only(table, monkeypatch, adopt):
    monkeypatch.setattr(compute, "ADOPT_GEMM_ALIGNMENT_PATTERN", adopt)
    t = lambda m, n, k, **kw: compute.gemm_time_s(m, n, k, "bf16", H100, PROF, **kw)  # noqa: E731
    big = t(8192, 50257, 2048)
    assert t(8192, 50257, 2048, widths=(50304, 2048)) == big          # aligned widths: today's time
    odd = t(8192, 50257, 2048, widths=(50257, 2048))
    if not adopt:
        assert odd == big
    else:   # compute-bound: close to the factor, never past it (launch and memory terms unscaled)
        assert 0.95 * 8.0 * big < odd < 8.0 * big
    # a launch-bound router GEMM (T x 60 x 2048): the launch time is not multiplied
    tiny = t(8, 60, 2048)
    tiny_odd = t(8, 60, 2048, widths=(60, 2048))
    if not adopt:
        assert tiny_odd == tiny
    else:   # class 4 (align2/c, 2.5 here): the rise is at most 1.5 x the time beyond the launch
        assert tiny < tiny_odd <= tiny + 1.5 * (tiny - PROF.launch_s) * (1 + 1e-12)
    # grouped and FP8 GEMMs are outside the change
    assert t(256, 50257, 2048, groups=4, widths=(50257, 2048)) == t(256, 50257, 2048, groups=4)
    fp8 = compute.gemm_time_s(8192, 50257, 2048, "fp8", H100, PROF)
    assert compute.gemm_time_s(8192, 50257, 2048, "fp8", H100, PROF, widths=(50257, 2048)) == fp8


@pytest.mark.parametrize("adopt", [False, True])
def test_eager_passes_the_layers_widths(table, monkeypatch, adopt):
    """Eager.gemm's forward (T, O, I), input gradient (T, I, O) and weight gradient (O, I, T) price
    the layer (O, I)'s operands of that pass."""
    monkeypatch.setattr(compute, "ADOPT_GEMM_ALIGNMENT_PATTERN", adopt)
    O, I, T = 50257, 2048, 3072
    for args, pass_ in (((T, O, I), "fwd"), ((T, I, O), "dgrad"), ((O, I, T), "wgrad")):
        e = Eager(H100, PROF)
        e.gemm(*args, "bf16", pass_=pass_)
        want = compute.gemm_time_s(*args, "bf16", H100, PROF, pass_=pass_, widths=(O, I))
        assert sum(s for _, s in e.ops) == pytest.approx(want, rel=1e-12)
        assert (want > compute.gemm_time_s(*args, "bf16", H100, PROF)) is adopt


@pytest.mark.parametrize("adopt", [False, True])
def test_planner_ops_and_the_megatron_stand_in(table, monkeypatch, adopt):
    """A catalog FFN of odd width is priced by its operands in every phase; Megatron's 8h/3 stand-in
    (Op.align 8) costs as aligned under either setting."""
    monkeypatch.setattr(compute, "ADOPT_GEMM_ALIGNMENT_PATTERN", adopt)
    gpt = get_model("megatron-gpt-1.7b")
    real_width = dataclasses.replace(gpt, ffn_width_stand_in=False)
    for phase in ("fwd", "bwd_input", "bwd_weight"):
        stand_in = {op.name: compute.op_time_s(op, phase, "bf16", H100, PROF) for op in dense_ffn_ops(gpt, 3072)}
        real = {op.name: compute.op_time_s(op, phase, "bf16", H100, PROF) for op in dense_ffn_ops(real_width, 3072)}
        assert (real["ffn_down"] > stand_in["ffn_down"]) is adopt
        assert real["swiglu"] == stand_in["swiglu"]
    router = Op("router", OpKind.GEMM, "moe", 4096, 60, 2048)
    assert compute.layer_widths(router) == (60, 2048)
    assert compute.layer_widths(dataclasses.replace(router, align=8)) is None

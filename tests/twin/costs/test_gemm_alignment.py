"""GEMMs whose widths are not multiples of 8 elements (twin/costs/gemm_alignment.py, the
ADOPT_GEMM_ALIGNMENT switch of twin/costs/compute.py, docs/notes/s23align_rule.md): the class of a
GEMM, its factor lookup and where the factor applies, under both settings."""

from __future__ import annotations

import dataclasses

import pytest

from calibration.predict import Eager
from twin.core.specs import get_gpu, get_model
from twin.costs import compute, gemm_alignment
from twin.costs.flops import dense_ffn_ops
from twin.costs.profile import load_profile

H100 = get_gpu("h100")
PROF = load_profile("h100")
# round numbers for the mechanism tests (not a fit)
TABLE = {"fits": {"h100": {"form": "class", "factors": {"1": 2.0, "4": 1.25}}}}
TABLE_PASS = {"fits": {"h100": {"form": "class_pass", "factors": {"2/fwd": 1.5, "2/dgrad": 1.75, "1/wgrad": 3.0}}}}


@pytest.fixture
def table(monkeypatch):
    def use(t):
        monkeypatch.setattr(gemm_alignment, "_table", lambda: t)
    return use


def test_align_class_is_the_coarsest_width():
    assert [gemm_alignment.align_elements(w) for w in (5456, 5460, 5462, 5461, 10922, 50257)] == [8, 4, 2, 1, 2, 1]
    assert gemm_alignment.align_class(10922, 2048) == 2 and gemm_alignment.align_class(2048, 5461) == 1
    assert gemm_alignment.align_class(4096, 7168) == 8


def test_factor_lookup(table):
    table(TABLE)
    f = gemm_alignment.alignment_factor
    assert f("h100", 8) == 1.0 and f("h100", 1) == 2.0 and f("h100", 4) == 1.25
    assert f("h100", 2) == 2.0            # no class-2 factor: runs as the coarser class 1
    assert f("h200", 1) == 1.0            # a profile without a fit: unpriced
    table(TABLE_PASS)
    assert (f("h100", 2, "fwd"), f("h100", 2, "dgrad"), f("h100", 2, "wgrad")) == (1.5, 1.75, 3.0)


@pytest.mark.parametrize("adopt", [False, True])
def test_gemm_time_by_class_under_both_settings(table, monkeypatch, adopt):
    table(TABLE)
    monkeypatch.setattr(compute, "ADOPT_GEMM_ALIGNMENT", adopt)
    t = lambda **kw: compute.gemm_time_s(3072, 10922, 2048, "bf16", H100, PROF, **kw)  # noqa: E731
    aligned = t()
    assert t(align=8) == aligned          # class 8: today's time under either setting
    assert t(align=1) == pytest.approx(aligned * (2.0 if adopt else 1.0), rel=1e-12)
    # grouped and FP8 GEMMs are outside the change
    fp8 = compute.gemm_time_s(3072, 10922, 2048, "fp8", H100, PROF)
    assert compute.gemm_time_s(3072, 10922, 2048, "fp8", H100, PROF, align=1) == fp8
    grouped = compute.gemm_time_s(256, 10922, 2048, "bf16", H100, PROF, groups=4)
    assert compute.gemm_time_s(256, 10922, 2048, "bf16", H100, PROF, groups=4, align=1) == grouped


@pytest.mark.parametrize("adopt", [False, True])
def test_eager_classes_by_the_layers_widths(table, monkeypatch, adopt):
    """Forward and input gradient by n, k; the weight gradient by m, n; an odd token count never
    misaligns (it is no tensor's row length)."""
    table(TABLE_PASS)
    monkeypatch.setattr(compute, "ADOPT_GEMM_ALIGNMENT", adopt)

    def seconds(*calls, wgrad=False):
        e = Eager(H100, PROF)
        for args, kw in calls:
            if wgrad:
                with e.weight_grad():
                    e.gemm(*args, **kw)
            else:
                e.gemm(*args, **kw)
        return sum(s for _, s in e.ops)

    base = lambda m, n, k: compute.gemm_time_s(m, n, k, "bf16", H100, PROF)  # noqa: E731
    on = 1.0 if not adopt else None
    assert seconds(((3071, 4096, 2048, "bf16"), {})) == pytest.approx(base(3071, 4096, 2048), rel=1e-12)
    assert seconds(((3072, 10922, 2048, "bf16"), {})) == pytest.approx(base(3072, 10922, 2048) * (on or 1.5), rel=1e-12)
    assert seconds(((3072, 10922, 2048, "bf16"), {"pass_": "dgrad"})) == pytest.approx(
        base(3072, 10922, 2048) * (on or 1.75), rel=1e-12)
    # a weight gradient (m x n the weight, k the tokens): 2048 x 5461 is class 1; tokens 3071 alone are not
    assert seconds(((2048, 5461, 3072, "bf16"), {}), wgrad=True) == pytest.approx(base(2048, 5461, 3072) * (on or 3.0),
                                                                                    rel=1e-12)
    assert seconds(((2048, 4096, 3071, "bf16"), {"pass_": "wgrad"})) == pytest.approx(base(2048, 4096, 3071), rel=1e-12)


def test_committed_table_is_read():
    """The committed data file loads and names a form for every fitted profile."""
    gemm_alignment._table.cache_clear()
    fits = gemm_alignment._table()["fits"]
    assert all(f["form"] in ("class", "class_pass", "rounded") for f in fits.values())


@pytest.mark.parametrize("adopt", [False, True])
def test_planner_ops_by_class_and_the_megatron_stand_in(table, monkeypatch, adopt):
    """A catalog FFN of odd width (a SwiGLU whose width is real) is priced by its class in every
    phase; Megatron's 8h/3 stand-in (ModelSpec.ffn_width_stand_in: its runs' GeLU 4h is aligned)
    costs as aligned under either setting."""
    table(TABLE)
    monkeypatch.setattr(compute, "ADOPT_GEMM_ALIGNMENT", adopt)
    gpt = get_model("megatron-gpt-1.7b")
    assert gpt.ffn_width_stand_in and gpt.intermediate_size == 5461
    real_width = dataclasses.replace(gpt, ffn_width_stand_in=False)
    for phase in ("fwd", "bwd_input", "bwd_weight"):
        stand_in = {op.name: compute.op_time_s(op, phase, "bf16", H100, PROF) for op in dense_ffn_ops(gpt, 3072)}
        real = {op.name: compute.op_time_s(op, phase, "bf16", H100, PROF) for op in dense_ffn_ops(real_width, 3072)}
        # gate/up 10922 x 2048 is class 2 (no class-2 factor: class 1's 2.0); down 2048 x 5461 class 1
        assert real["ffn_gate_up"] == pytest.approx(stand_in["ffn_gate_up"] * (2.0 if adopt else 1.0), rel=1e-12)
        assert real["ffn_down"] == pytest.approx(stand_in["ffn_down"] * (2.0 if adopt else 1.0), rel=1e-12)
        assert real["swiglu"] == stand_in["swiglu"]

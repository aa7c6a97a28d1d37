"""s16rx (docs/notes/s16rx_rule.md): the MoE index sorts' radix passes at their measured seconds a
pass, on their own switches: index_put_'s (ADOPT_RADIX_PASSES, s15bw2's third law alone) and the
forward's argsorts (ADOPT_ARGSORT_PASSES); both settings of each tested."""

import pandas as pd
import pytest

import calibration.predict as P
import calibration.whole_step as ws
from calibration import b_kernels as bk
from calibration.fit import PROFILES_DIR
from calibration.validate import load_fitted_profile
from twin.core.specs import get_model

H800 = "NVIDIA H800 SXM5 80GB"
SWEEP = "void at_cuda_detail::cub::detail::radix_sort::DeviceRadixSortOnesweepKernel<x>"
SWITCHES = ("ADOPT_B_KERNEL_RATES", "ADOPT_RADIX_PASSES", "ADOPT_ARGSORT_PASSES")


def _profile(gpu: str):
    prof, _ = load_fitted_profile(gpu, None, PROFILES_DIR)
    return prof


def _only(monkeypatch, *on):
    for name in SWITCHES:
        monkeypatch.setattr(P, name, name in on)


def _gpu_s(e) -> float:
    return sum(g for _, g in e.ops) + sum(g for _, g in e.w_ops)


def test_argsort_passes_of_int64_keys():
    # 64-bit keys, 8 bits a onesweep pass: the records' 16 calls a one-GPU MoE layer forward (two sorts)
    assert bk.ARGSORT_PASSES == 8


def test_pass_times_by_op_kind_worked_example():
    """F ops give the argsort pass, B ops the index_put_ pass; only fitting rows without EP."""
    base = {"split": "fit", "ep": 1, "kernel": SWEEP, "model": "v2-lite-slice"}
    rows = [{**base, "kind": "F", "calls": 64, "time_s": 64 * 6e-6},
            {**base, "kind": "B", "calls": 24, "time_s": 24 * 9e-6},
            {**base, "kind": "F", "calls": 10, "time_s": 1.0, "ep": 2},
            {**base, "kind": "F", "calls": 10, "time_s": 1.0, "split": "holdout"},
            {**base, "kind": "F", "calls": 10, "time_s": 1.0, "kernel": "other"}]
    k = pd.DataFrame(rows)
    assert bk.pass_times(k, "F") == [pytest.approx(6e-6, rel=1e-12)]
    assert bk.pass_times(k, "B") == [pytest.approx(9e-6, rel=1e-12)] == bk.pass_times(k)


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_measured_argsort_pass(gpu):
    """The fitting split's forward onesweep calls: 5.8-6.6 us a pass on both GPUs (s16rx note), faster
    than index_put_'s backward passes (8-9 us); no records, no law."""
    law = bk.measured(P.gpu_spec(gpu).name)
    assert 5.8e-6 < law["argsort_pass_s"] < 6.6e-6 < law["radix_pass_s"]
    assert bk.law(H800, "argsort_pass_s") is None


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_index_put_radix_passes_alone(gpu, monkeypatch):
    """ADOPT_RADIX_PASSES: index_put_ gains its passes past their launches, not J's unnamed fill; a
    fill stays a streaming kernel. Off: as before."""
    spec, prof = P.gpu_spec(gpu), _profile(gpu)
    law = bk.measured(spec.name)

    def ops(*on):
        _only(monkeypatch, *on)
        e = P.Eager(spec, prof)
        e.fill(25536 * 2048 * 2)
        e.index_put(24576, 2048, dest_rows=4096, unnamed_fill_rows=4096)
        return e.ops

    off, on = ops(), ops("ADOPT_RADIX_PASSES")
    _only(monkeypatch)
    ref = P.Eager(spec, prof)
    ref.mem(25536 * 2048 * 2)
    ref.index_put(24576, 2048)
    assert off == ref.ops
    assert on[0] == off[0] and len(on) == len(off)
    assert on[1][1] - off[1][1] == pytest.approx(2 * (law["radix_pass_s"] - prof.launch_s), rel=1e-9)


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_argsort_both_settings(gpu, monkeypatch):
    """Off: three streaming kernels, as Eager.mem charged them. On: the first also holds 8 passes
    past their launches above SMALL_SORT_ELEMS keys; none on the small-sort path or with passes=False."""
    spec, prof = P.gpu_spec(gpu), _profile(gpu)
    law = bk.measured(spec.name)

    def sort_ops(elems, passes=True):
        e = P.Eager(spec, prof)
        e.argsort(elems, passes)
        return e.ops

    _only(monkeypatch)
    ref = P.Eager(spec, prof)
    ref.mem(24576 * 8 * 2 * 4, kernels=3)
    assert sort_ops(24576) == ref.ops
    off_small = sort_ops(P.SMALL_SORT_ELEMS)
    _only(monkeypatch, "ADOPT_ARGSORT_PASSES")
    on = sort_ops(24576)
    assert on[1:] == ref.ops[1:] and len(on) == 3
    assert on[0][1] - ref.ops[0][1] == pytest.approx(8 * (law["argsort_pass_s"] - prof.launch_s), rel=1e-9)
    assert sort_ops(P.SMALL_SORT_ELEMS) == off_small
    assert sort_ops(24576, passes=False) == ref.ops


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_moe_layers_both_settings(gpu, monkeypatch):
    """One-GPU MoE layer: the forward's two argsorts take 8 passes each, the backward's three
    index_put_ 2 each. EP layer: dispatch's and combine's four argsorts (real/ep.py), not the local
    layer's token-side pair; its backward's five index_put_. Op counts (host time) unchanged."""
    spec_gpu, prof = P.gpu_spec(gpu), _profile(gpu)
    m = get_model("v2-lite-slice")
    T = 4096
    N = T * m.top_k
    law = bk.measured(spec_gpu.name)
    fwd_sort_s = 8 * (law["argsort_pass_s"] - prof.launch_s)
    bwd_sort_s = 2 * (law["radix_pass_s"] - prof.launch_s)

    def layers(*on):
        _only(monkeypatch, *on)
        return (P.moe_layer_ops(m, T, ws.balanced_counts(m, T), "bf16", spec_gpu, prof),
                ws.ep_moe_ops(m, T, 2, float(N), "bf16", spec_gpu, prof))

    (f0, b0), (ef0, eb0) = layers()
    (f1, b1), (ef1, eb1) = layers("ADOPT_RADIX_PASSES")
    (f2, b2), (ef2, eb2) = layers("ADOPT_RADIX_PASSES", "ADOPT_ARGSORT_PASSES")
    for a, b in ((f0, f1), (b0, b1), (ef0, ef1), (eb0, eb1), (f1, f2), (eb1, eb2)):
        assert len(a.ops) == len(b.ops)
    assert f1.ops == f0.ops and ef1.ops == ef0.ops
    assert _gpu_s(b1) - _gpu_s(b0) == pytest.approx(3 * bwd_sort_s, rel=1e-9)
    assert _gpu_s(eb1) - _gpu_s(eb0) == pytest.approx(5 * bwd_sort_s, rel=1e-9)
    assert b2.ops == b1.ops and eb2.ops == eb1.ops
    assert _gpu_s(f2) - _gpu_s(f1) == pytest.approx(2 * fwd_sort_s, rel=1e-9)
    assert _gpu_s(ef2) - _gpu_s(ef1) == pytest.approx(4 * fwd_sort_s, rel=1e-9)


def test_decode_sized_layer_takes_no_argsort_passes(monkeypatch):
    """A decode batch's sorts (64 tokens x top-6 = 384 keys) run torch's in-place small sort."""
    spec_gpu, prof = P.gpu_spec("h100"), _profile("h100")
    m = get_model("v2-lite-slice")
    outs = []
    for on in ((), ("ADOPT_ARGSORT_PASSES",)):
        _only(monkeypatch, *on)
        outs.append(P.moe_layer_ops(m, 64, ws.balanced_counts(m, 64), "bf16", spec_gpu, prof)[0].ops)
    assert outs[0] == outs[1]


def test_switch_defaults():
    """The outcome under the rule (docs/notes/s16rx_rule.md, Result): R adopted, A not."""
    assert P.ADOPT_RADIX_PASSES is True
    assert P.ADOPT_ARGSORT_PASSES is False

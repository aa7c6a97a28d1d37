"""s15bw2 (docs/notes/s15bw2_rule.md): candidate J, BF16 zero fills, index_put_'s radix passes and
cross entropy's softmax at their measured rates (calibration.b_kernels, ADOPT_B_KERNEL_RATES);
both settings tested."""

import pandas as pd
import pytest

import calibration.predict as P
import calibration.whole_step as ws
from calibration import b_kernels as bk
from calibration.fit import PROFILES_DIR
from calibration.validate import load_fitted_profile
from twin.core.specs import get_model

H100 = "NVIDIA H100 SXM5 80GB"
H200 = "NVIDIA H200 SXM5 141GB"
H800 = "NVIDIA H800 SXM5 80GB"


def test_radix_passes_worked_examples():
    # cub get_num_bits = the bit length of the row count; onesweep sorts 8 bits a pass
    assert bk.radix_passes(4096) == 2        # 13 bits
    assert bk.radix_passes(25552) == 2       # 15 bits
    assert bk.radix_passes(255) == 1         # 8 bits
    assert bk.radix_passes(256) == 2         # 9 bits
    assert bk.radix_passes(131072) == 3      # 18 bits


def test_capacity_rows_worked_example():
    # v2-lite-slice: 4,096 tokens x top-6 = 24,576 rows + 64 experts x 15 = 25,536, a multiple of 16
    assert bk.capacity_rows("v2-lite-slice", 4096) == 25536
    assert bk.capacity_rows("v2-lite-slice", 4097) == 25552   # 25,542 rounded up to 16


def _row(**kw):
    base = {"split": "fit", "kind": "F", "ep": 1, "model": "v2-lite-slice", "micro_batch_seqs": 1,
            "seq_len": 4096, "calls": 4, "time_s": 1.0e-4, "kernel": "x"}
    return {**base, **kw}


def test_laws_from_kernels_worked_examples():
    """Only fitting rows of the right op kind and kernel count; fills and passes only without EP."""
    fill = "void at::native::vectorized_elementwise_kernel<8, at::native::FillFunctor<c10::BFloat16>, std::array<char*, 1ul> >"
    sm_b = "void at::native::(anonymous namespace)::cunn_SoftMaxBackward<4, float, float, float>"
    sweep = "void at_cuda_detail::cub::detail::radix_sort::DeviceRadixSortOnesweepKernel<x>"
    rows = [_row(kernel=fill, time_s=128e-6),                       # 4 fills of 25,536 x 2,048 x 2 B
            _row(kernel=fill, ep=2), _row(kernel=fill, split="holdout"), _row(kernel=fill, kind="B"),
            _row(kernel=sm_b, kind="B", calls=1, time_s=2.0e-3),   # 4,096 x 102,400 logits
            _row(kernel=sm_b, kind="F"),
            _row(kernel=sweep, kind="B", calls=12, time_s=96e-6),  # 8 us a pass
            _row(kernel=sweep, kind="B", ep=2), _row(kernel=sweep, kind="F")]
    k = pd.DataFrame(rows)
    (fill_rate,) = bk.fill_rates(k)
    assert fill_rate == pytest.approx(128e-6 / (4 * 25536 * 2048 * 2), rel=1e-12)
    (sm,) = bk.softmax_rates(k, "bwd")
    assert sm == pytest.approx(2.0e-3 / (4096 * 102400), rel=1e-12)
    assert bk.pass_times(k) == [pytest.approx(8e-6, rel=1e-12)]


def test_measured_laws_per_gpu():
    """The fitting split's pipeline kernels (the note): fills ~3.25-3.29 TB/s on both GPUs; softmax
    H100 5.3-5.5 ps a logit, H200 3.8-4.1, backward slower than forward; a onesweep pass 7-9.1 us;
    no records, no law."""
    h100, h200 = bk.measured(H100), bk.measured(H200)
    for m in (h100, h200):
        assert 3.2e12 < 1.0 / m["fill_s_per_byte"] < 3.35e12
        assert 7e-6 < m["radix_pass_s"] < 9.1e-6
        assert m["softmax_bwd_s_per_elem"] > m["softmax_fwd_s_per_elem"]
    assert 5.3e-12 < h100["softmax_fwd_s_per_elem"] < h100["softmax_bwd_s_per_elem"] < 5.5e-12
    assert 3.8e-12 < h200["softmax_fwd_s_per_elem"] < h200["softmax_bwd_s_per_elem"] < 4.1e-12
    assert bk.measured(H800) is None and bk.law(H800, "fill_s_per_byte") is None


def _profile(gpu: str):
    prof, _ = load_fitted_profile(gpu, None, PROFILES_DIR)
    return prof


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_fill_and_index_put_both_settings(gpu, monkeypatch):
    """Off: a fill is a streaming kernel (Eager.mem) and index_put_ holds only its kernel. On: the
    fill at the measured rate; index_put_ adds its radix passes past their launches and an unnamed
    fill, in the same one op."""
    spec, prof = P.gpu_spec(gpu), _profile(gpu)
    nbytes, rows, width = 25536 * 2048 * 2, 24576, 2048
    # J as its rule judged it: against index_put_ without its radix passes (s16rx's ADOPT_RADIX_PASSES off)
    monkeypatch.setattr(P, "ADOPT_RADIX_PASSES", False)
    monkeypatch.setattr(P, "ADOPT_B_KERNEL_RATES", False)
    off, ref = P.Eager(spec, prof), P.Eager(spec, prof)
    off.fill(nbytes)
    off.index_put(rows, width, dest_rows=4096, unnamed_fill_rows=4096)
    ref.mem(nbytes)
    ref.index_put(rows, width)
    assert off.ops == ref.ops
    monkeypatch.setattr(P, "ADOPT_B_KERNEL_RATES", True)
    on = P.Eager(spec, prof)
    on.fill(nbytes)
    on.index_put(rows, width, dest_rows=4096, unnamed_fill_rows=4096)
    law = bk.measured(spec.name)
    assert len(on.ops) == 2
    assert on.ops[0][1] == pytest.approx(nbytes * law["fill_s_per_byte"], rel=1e-12)
    extra = 2 * (law["radix_pass_s"] - prof.launch_s) + 4096 * width * 2 * law["fill_s_per_byte"]
    assert on.ops[1][1] - off.ops[1][1] == pytest.approx(extra, rel=1e-9)


def _gpu_s(e) -> float:
    return sum(g for _, g in e.ops) + sum(g for _, g in e.w_ops)


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_moe_layers_both_settings(gpu, monkeypatch):
    """One-GPU MoE layer: the forward's capacity fill and the backward's two named fills move to the
    fill rate, its three index_put_ gain two radix passes each and the x_TD gradient's fill; the EP
    layer's backward two more named fills and index_put_ sorts. Op counts (and so host time) stay."""
    spec_gpu, prof = P.gpu_spec(gpu), _profile(gpu)
    m = get_model("v2-lite-slice")
    T, D = 4096, m.hidden_size
    N, Np = T * m.top_k, bk.capacity_rows("v2-lite-slice", T)
    law = bk.measured(spec_gpu.name)
    monkeypatch.setattr(P, "ADOPT_RADIX_PASSES", False)   # J against its base (s16rx's passes off)

    def layers(flag):
        monkeypatch.setattr(P, "ADOPT_B_KERNEL_RATES", flag)
        return (P.moe_layer_ops(m, T, ws.balanced_counts(m, T), "bf16", spec_gpu, prof),
                ws.ep_moe_ops(m, T, 2, float(N), "bf16", spec_gpu, prof))

    def streaming(nbytes):
        e = P.Eager(spec_gpu, prof)
        e.mem(nbytes)
        return e.ops[0][1]

    def fill_move(rows):   # a named fill: measured rate instead of the streaming kernel
        return rows * D * 2 * law["fill_s_per_byte"] - streaming(rows * D * 2)

    sort_s = 2 * (law["radix_pass_s"] - prof.launch_s)
    (f0, b0), (ef0, eb0) = layers(False)
    (f1, b1), (ef1, eb1) = layers(True)
    assert len(f1.ops) == len(f0.ops) and len(b1.ops) == len(b0.ops) and len(eb1.ops) == len(eb0.ops)
    assert _gpu_s(f1) - _gpu_s(f0) == pytest.approx(fill_move(Np), rel=1e-9)
    one_bwd = fill_move(N) + fill_move(Np) + 3 * sort_s + T * D * 2 * law["fill_s_per_byte"]
    assert _gpu_s(b1) - _gpu_s(b0) == pytest.approx(one_bwd, rel=1e-9)
    # the EP layer's local experts run the one-GPU layer on the received rows (N of them: T tokens)
    # over 32 experts: capacity 24,576 + 32 x 15 = 25,056 rows
    Np_local = (N + 32 * 15 + 15) // 16 * 16
    local_bwd = fill_move(N) + fill_move(Np_local) + 3 * sort_s + T * D * 2 * law["fill_s_per_byte"]
    assert _gpu_s(eb1) - _gpu_s(eb0) == pytest.approx(local_bwd + 2 * (fill_move(N) + sort_s), rel=1e-9)


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_cross_entropy_both_settings(gpu, monkeypatch):
    """log_softmax over the vocabulary: off 16 B a logit at the streaming rate, on the measured
    seconds a logit of its kernel, forward and backward apart; the on charge is the slower one on
    both GPUs (the kernels run below memory_eff)."""
    spec, prof = P.gpu_spec(gpu), _profile(gpu)
    T, Y = 4096, 102400
    law = bk.measured(spec.name)
    for flag in (False, True):
        monkeypatch.setattr(P, "ADOPT_B_KERNEL_RATES", flag)
        f, b = P.Eager(spec, prof), P.Eager(spec, prof)
        ws._cross_entropy_fwd(f, T, Y)
        ws._cross_entropy_bwd(b, T, Y)
        ref = P.Eager(spec, prof)
        ref.mem(T * Y * 4 * 4.0)
        if flag:
            assert f.ops[1][1] == pytest.approx(T * Y * law["softmax_fwd_s_per_elem"], rel=1e-12)
            assert b.ops[2][1] == pytest.approx(T * Y * law["softmax_bwd_s_per_elem"], rel=1e-12)
            assert f.ops[1][1] > ref.ops[0][1] and b.ops[2][1] > ref.ops[0][1]
        else:
            assert f.ops[1] == ref.ops[0] and b.ops[2] == ref.ops[0]


def test_flag_default():
    """Candidate J's outcome under its rule (docs/notes/s15bw2_rule.md, Result)."""
    assert P.ADOPT_B_KERNEL_RATES is False

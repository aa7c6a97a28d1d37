"""s15bw (docs/notes/s15bw_rule.md): candidate I, the MoE backward's index_put_ (accumulate) kernels at
their measured seconds per element (calibration.index_put, ADOPT_INDEX_PUT_RATE) instead of a
gather at gather_eff; both settings tested."""

import pandas as pd
import pytest

import calibration.predict as P
import calibration.whole_step as ws
from calibration.fit import PROFILES_DIR
from calibration.index_put import gpu_key, index_put_s_per_elem, rates_from_kernels
from calibration.validate import load_fitted_profile
from twin.core.specs import get_model

H100 = "NVIDIA H100 SXM5 80GB"
H200 = "NVIDIA H200 SXM5 141GB"


def test_rates_from_kernels_worked_example():
    # one fit, skew-0 backward row: 5 calls of 2,048 tokens x 8 slots x 7,168 wide = 5.87e8 elements
    # in 1.5 ms -> 2.555e-12 s an element; the skewed, held-out and forward rows are left out
    base = {"bench": "moe_layer_ep_bwd", "skew": 0, "split": "fit", "calls": 5, "tokens_per_rank": 2048,
            "top_k": 8, "hidden_size": 7168, "time_s": 1.5e-3,
            "kernel": "void (anonymous namespace)::indexing_backward_kernel<c10::BFloat16, 4>(long const*)"}
    rows = [base, {**base, "skew": 1}, {**base, "split": "holdout"}, {**base, "bench": "moe_layer_ep_fwd"},
            {**base, "kernel": "vectorized_gather_kernel<16, long>"}]
    (rate,) = rates_from_kernels(pd.DataFrame(rows))
    assert rate == pytest.approx(1.5e-3 / (5 * 2048 * 8 * 7168), rel=1e-12)


def test_measured_rates_per_gpu():
    """The fitting split's s14epl records: H100 2.59-2.71 ps an element, H200 2.25-2.40 (the note);
    H200 faster, but by far less than its 1.43x bandwidth; no records, no rate."""
    h100, h200 = index_put_s_per_elem(H100), index_put_s_per_elem(H200)
    assert 2.5e-12 < h100 < 2.8e-12 and 2.2e-12 < h200 < 2.45e-12
    assert 1.0 < h100 / h200 < 1.3
    assert gpu_key("NVIDIA H800 SXM5 80GB") is None and index_put_s_per_elem("NVIDIA H800 SXM5 80GB") is None


def _profile(gpu: str):
    prof, _ = load_fitted_profile(gpu, None, PROFILES_DIR)
    return prof


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_index_put_both_settings(gpu, monkeypatch):
    """Off: a gather reading and writing the BF16 rows (4 bytes an element) at gather_eff, as
    before s15bw. On: rows x width x the measured rate, slower than the gather on both GPUs."""
    spec, prof = P.gpu_spec(gpu), _profile(gpu)
    rows, width = 24576, 2048
    monkeypatch.setattr(P, "ADOPT_INDEX_PUT_RATE", False)
    off, ref = P.Eager(spec, prof), P.Eager(spec, prof)
    off.index_put(rows, width)
    ref.gather(2 * rows * width * 2)
    assert off.ops == ref.ops
    monkeypatch.setattr(P, "ADOPT_INDEX_PUT_RATE", True)
    on = P.Eager(spec, prof)
    on.index_put(rows, width)
    assert on.ops[0][1] == pytest.approx(rows * width * index_put_s_per_elem(spec.name), rel=1e-12)
    assert on.ops[0][1] > off.ops[0][1]


def _gpu_s(e) -> float:
    return sum(g for _, g in e.ops) + sum(g for _, g in e.w_ops)


@pytest.mark.parametrize("flag", [False, True])
def test_moe_backwards_index_puts(flag, monkeypatch):
    """The one-GPU MoE layer's backward has three index_put_ kernels, the EP layer's five (real/ep.py's
    two received-row permutations more): under the flag each moves by the same per-call difference;
    forwards are unchanged."""
    spec_gpu, prof = P.gpu_spec("h100"), _profile("h100")
    m = get_model("v2-lite-slice")
    T = 4096
    N = T * m.top_k
    one = P.Eager(spec_gpu, prof)
    one.gather(2 * N * m.hidden_size * 2)
    per_call_off = one.ops[0][1]
    per_call_on = N * m.hidden_size * index_put_s_per_elem(spec_gpu.name)
    monkeypatch.setattr(P, "ADOPT_INDEX_PUT_RATE", flag)
    f, b = P.moe_layer_ops(m, T, ws.balanced_counts(m, T), "bf16", spec_gpu, prof)
    ef, eb = ws.ep_moe_ops(m, T, 2, float(N), "bf16", spec_gpu, prof)
    monkeypatch.setattr(P, "ADOPT_INDEX_PUT_RATE", not flag)
    f2, b2 = P.moe_layer_ops(m, T, ws.balanced_counts(m, T), "bf16", spec_gpu, prof)
    ef2, eb2 = ws.ep_moe_ops(m, T, 2, float(N), "bf16", spec_gpu, prof)
    sign = 1.0 if flag else -1.0
    step = per_call_on - per_call_off
    assert _gpu_s(f) == pytest.approx(_gpu_s(f2), rel=1e-12) and _gpu_s(ef) == pytest.approx(_gpu_s(ef2), rel=1e-12)
    assert _gpu_s(b) - _gpu_s(b2) == pytest.approx(sign * 3 * step, rel=1e-6)
    assert _gpu_s(eb) - _gpu_s(eb2) == pytest.approx(sign * 5 * step, rel=1e-6)

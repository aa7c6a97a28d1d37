"""calibration/decode_gemm.py: the batched-GEMM curves and cuBLAS kernel tables of real/'s eager
decode (issue 13, s8dec), on TEST FIXTURE records (not measurements) generated from known curves,
and the decode prediction's use of them."""

import dataclasses

import pandas as pd
import pytest

from calibration import decode_gemm as dg
from calibration import whole_step as ws
from calibration.predict import gpu_spec
from twin.core.specs import get_model
from twin.costs import compute
from twin.costs.profile import BatchedCurve, fitted_profile

# the fixture's "true" kernels: Hopper-aligned and the unaligned fallback, 4x slower at the top
TRUE = {8: BatchedCurve(0.6, 0.0, 40.0, 60.0), 1: BatchedCurve(0.15, 0.0, 20.0, 30.0, fixed_s=3e-6)}
OPS = ("scores_latent", "p_c", "scores_rope")


def _curves():
    return {f"bf16/{op}/align{a}": c for a, c in TRUE.items() for op in OPS}
H, P, R, C, O = 128, 128, 64, 512, 128


def _fixture(gpu: str) -> pd.DataFrame:
    prof = dataclasses.replace(fitted_profile(gpu), batched_gemm=_curves())
    g = gpu_spec(gpu)
    rows = []
    for B in (1, 8, 16, 32, 64, 128, 192, 256):
        for L in (513, 1025, 1032, 1041, 2049, 2056, 4097):
            a = 8 if L % 8 == 0 else 1
            for op, (nb, m, n, k) in (("scores_latent", (B, H, L, C)), ("p_c", (B, H, C, L)),
                                      ("scores_rope", (B, H, L, R))):
                t = compute.batched_gemm_time_s(nb, m, n, k, a, op, g, prof)
                # an operand copy beside the GEMM kernel in half the calls: left out of gemm_time_s
                copy_s = 0.1 * t if op == "p_c" else 0.0
                rows.append({"bench": "decode_bmm", "op": op, "weight": "", "model": "v3-slice-2l", "batch": B,
                             "cache_len": L, "num_heads": H, "batch_count": nb, "m": m, "n": n, "k": k,
                             "align_elems": a, "kernels": 2 if copy_s else 1, "kernel_s": t + copy_s,
                             "gemm_kernels": 1, "gemm_kernel_s": t, "time_s": t + copy_s})
        for op, eff in (("float", 0.5), ("softmax", 0.9)):
            if B < 32:
                continue
            L, n_bytes = 1025, B * H * 1025 * 6.0
            t = n_bytes / (g.hbm_bytes_per_s * prof.memory_eff) / eff + prof.launch_s
            rows.append({"bench": "decode_elementwise", "op": op, "weight": "", "model": "v3-slice-2l", "batch": B,
                         "cache_len": L, "num_heads": H, "align_elems": 1, "kernels": 1, "kernel_s": t,
                         "gemm_kernels": 0, "gemm_kernel_s": 0.0, "time_s": t if B not in (16, 192) else 9 * t,
                         "bytes": n_bytes})
        for w, n, k, extra in (("wq_a", 1536, 7168, 1 if B <= 64 else 0), ("head", 129280, 7168, 0)):
            rows.append({"bench": "decode_linear", "op": "linear", "weight": w, "model": "v3-slice-2l", "batch": B,
                         "cache_len": None, "num_heads": H, "batch_count": 1, "m": B, "n": n, "k": k,
                         "align_elems": 8, "kernels": 1 + extra, "kernel_s": 1e-5, "gemm_kernels": 1 + extra,
                         "gemm_kernel_s": 1e-5, "time_s": 1e-5})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    (root / "h200").mkdir()
    _fixture("h200").to_csv(root / "h200" / dg.FAMILY, index=False)
    return root


def test_the_fit_recovers_the_curves_and_predicts_the_held_out_rows(fixture_root):
    prof = fitted_profile("h200")
    terms = dg.decode_terms("h200", prof, fixture_root)
    assert set(terms["batched_gemm"]) == set(_curves())
    new = dg.with_decode_terms(prof, terms)
    errs = dg.held_out_errors("h200", new, fixture_root)
    # held out: batches 16, 192 and lengths 1041, 4097 (calibration/split.py), never fitted
    held = [c for c in errs["cases"] if c["held_out"]]
    assert held and all(c["batch"] in (16, 192) or c["cache_len"] in (1041, 4097) for c in held)
    assert errs["held_out"]["p90_abs_rel_error"] < 0.02
    # the operand copy is not the GEMM's: p_c's measured GEMM time is its kernel's alone
    p_c = next(c for c in errs["cases"] if c["op"] == "p_c")
    assert abs(p_c["rel_error"]) < 0.02


def test_kernel_tables_count_the_extra_kernels_per_shape_and_batch(fixture_root):
    tables = dg.decode_terms("h200", fitted_profile("h200"), fixture_root)["eager_decode"]["cublas_kernels"]
    # fitting rows only: batches 1..256 but 16 and 192
    assert tables["linear"]["1536x7168"] == {"1": 1, "8": 1, "32": 1, "64": 1, "128": 0, "256": 0}
    assert all(e == 0 for e in tables["linear"]["129280x7168"].values())
    assert dg.extra_kernels(tables["linear"]["1536x7168"], 16) == 1      # nearest: 8 and 32 (tie -> 8)
    assert dg.extra_kernels(tables["linear"]["1536x7168"], 192) == 0     # nearest: 256
    assert dg.extra_kernels(None, 4) == 0


def test_elementwise_rates_are_the_fitting_rows_own(fixture_root):
    effs = dg.decode_terms("h200", fitted_profile("h200"), fixture_root)["eager_decode"]["elementwise_eff"]
    # the held-out batch 192's rows (timed 9x slower in the fixture) never enter the median
    assert effs == pytest.approx({"float": 0.5, "softmax": 0.9}, rel=1e-6)


def test_extra_kernels_take_the_nearest_measured_point_in_log_scale():
    pts = {"1": 2, "8": 1, "256": 0}
    assert dg.extra_kernels(pts, 1) == 2 and dg.extra_kernels(pts, 4) == 1 and dg.extra_kernels(pts, 100) == 0


def test_decode_costs_the_cache_gemms_by_alignment_and_adds_the_counted_kernels():
    spec, g = get_model("v3-slice-2l"), gpu_spec("h200")
    prof = dataclasses.replace(fitted_profile("h200"), batched_gemm=_curves(),
                               eager_decode={"cublas_kernels": {"linear": {"1536x7168": {"1": 1, "256": 0}}}})
    # the baseline without any measured decode terms (the committed H200 profile carries its own since s12h200)
    base = dataclasses.replace(fitted_profile("h200"), batched_gemm={}, eager_decode={})
    aligned, unaligned = ws.decode_ops(spec, 256, 1032, g, prof), ws.decode_ops(spec, 256, 1033, g, prof)
    gpu_s = lambda e: sum(op[1] for op in e.ops)
    # the unaligned fallback is 4x slower at the top: 3 cache GEMMs x 2 layers, compute-bound at B 256
    assert gpu_s(unaligned) - gpu_s(aligned) > 0.4e-3   # ~0.55 ms of the 3.7 ms
    # wq_a (1536 x 7168) launches one split-K reduction at B 1 (one per layer), none at 256
    assert len(ws.decode_ops(spec, 1, 1033, g, prof).ops) == len(ws.decode_ops(spec, 1, 1033, g, base).ops) + 2
    assert len(ws.decode_ops(spec, 256, 1033, g, prof).ops) == len(ws.decode_ops(spec, 256, 1033, g, base).ops)


def test_a_decode_record_is_the_median_of_its_timed_steps():
    # real/bench/whole_model.py: prompt 1024, 32 generated -> 3 warm-ups, 28 timed steps over 1028..1055
    lens = list(ws.decode_cache_lens(1024, 32))
    assert lens[0] == 1028 and lens[-1] == 1055 and len(lens) == 28
    assert sum(1 for L in lens if L % 8 == 0) == 3        # 1032, 1040, 1048: the aligned steps


def test_drift_rounds_time_the_steps_after_the_warm_ups(tmp_path):
    # two rounds of 5 steps: the first 3 are warm-ups; round 1's timed steps take 2 and 4 ms
    rows = [{"batch": 1, "round": r, "condition": c, "step": s, "time_s": t, "host_s": t / 2, "sm_clock_mhz": 1980,
             "power_now_w": 100.0, "cpu_clock_mhz": 2000.0, "pstate": 0}
            for r, c, ts in ((0, "back_to_back", [9, 9, 9, 1, 1]), (1, "after_idle", [9, 9, 9, 2, 4]))
            for s, t in enumerate(x * 1e-3 for x in ts)]
    (tmp_path / "h100").mkdir()
    pd.DataFrame(rows).to_csv(tmp_path / "h100" / dg.DRIFT, index=False)
    out = dg.drift_rounds("h100", tmp_path)
    assert [(r["round"], r["condition"]) for r in out] == [(0, "back_to_back"), (1, "after_idle")]
    assert out[0]["time_s"] == pytest.approx(1e-3) and out[1]["time_s"] == pytest.approx(3e-3)
    assert out[1]["host_s"] == pytest.approx(1.5e-3) and out[1]["pstates"] == [0]

import dataclasses
import json
import math

import pytest

from calibration import records as rec
from calibration.fit import fit_profile, fit_rows, write_profile
from calibration.split import is_held_out, split
from calibration.records_io import read_json
from tests.calibration.conftest import TRUE
from twin.costs.profile import default_profile, profile_from_json


def test_fit_recovers_known_curves(synthetic_fit):
    """fit_gpu's profile (fit_profile's curves and terms; the synthetic folder has no sustained,
    fp8_stack, decode or collective records to add) recovers the curves the records came from."""
    prof, stats = synthetic_fit
    assert stats["rms_log_residual"] < 0.02  # data carry +-1% noise
    for table in ("gemm", "grouped_gemm"):
        for label in ("bf16", "fp8-rowwise"):
            got, want = getattr(prof, table)[label], getattr(TRUE, table)[label]
            assert got.e_max == pytest.approx(want.e_max, rel=0.03), (table, label)
            for f in ("m_half", "n_half", "k_half"):
                assert getattr(got, f) == pytest.approx(getattr(want, f), rel=0.15), (table, label, f)
        # the twin's fp8 curve is the measured FP8 kernel (rowwise here: no blockwise records)
        assert getattr(prof, table)["fp8"] == getattr(prof, table)["fp8-rowwise"]
    for d in ("fwd", "bwd"):
        assert prof.attention[d].e_max == pytest.approx(TRUE.attention[d].e_max, rel=0.03)
        assert prof.attention[d].s_half == pytest.approx(TRUE.attention[d].s_half, rel=0.15)
    assert prof.memory_eff == pytest.approx(TRUE.memory_eff, rel=0.02)
    assert not prof.fp8_quant_fused  # a fitted profile describes real/'s eager stack
    for cls in ("op", "gemm.bf16", "gemm.fp8-rowwise", "grouped_gemm.bf16", "grouped_gemm.fp8-rowwise"):
        assert prof.host(cls) == pytest.approx(TRUE.host(cls), rel=0.3), cls
    assert stats["quant_bytes_per_elem"] == pytest.approx(TRUE.quant_bytes_per_elem, rel=0.15)
    assert stats["gather_eff"] == pytest.approx(TRUE.gather_eff, rel=0.15)


def test_fit_uses_only_fitting_split(synthetic_root):
    df = rec.load_records("h100", synthetic_root)
    rows = fit_rows(df)
    assert not rows.apply(is_held_out, axis=1).any()
    assert set(rows.bench) <= set(rec.PRIMITIVE_BENCHES)
    held = split(df)
    assert held.sum() > 0 and (~held).sum() > 0


def test_split_is_by_shape_family():
    g = dict(bench="grouped_gemm", m=0, n=4096, k=7168, groups=16, tokens_per_group=128)
    assert is_held_out(g)
    assert not is_held_out({**g, "groups": 8})
    assert is_held_out({**g, "groups": 8, "tokens_per_group": 512})
    assert is_held_out(dict(bench="gemm", m=128, n=2112, k=7168))
    assert not is_held_out(dict(bench="gemm", m=128, n=24576, k=1536))
    moe = dict(bench="moe_layer_fwd", model="v3-slice-1l", num_experts=64, skew=1.0)
    assert not is_held_out(moe)
    assert is_held_out({**moe, "skew": 1.5}) and is_held_out({**moe, "num_experts": 32})
    assert is_held_out(dict(bench="train_step"))


def test_profile_json_round_trip_and_provenance(synthetic_fit, tmp_path):
    prof, stats = synthetic_fit
    path = write_profile(prof, tmp_path)
    data = read_json(path)
    back = profile_from_json(data)
    assert back == prof
    prov = back.provenance
    for key in ("records_sha256", "record_files_sha256", "git_commit", "fitted_utc", "gpu_name", "torch_version",
                "cuda_version", "num_fit_points"):
        assert key in prov, key
    assert len(prov["records_sha256"]) == 64
    assert set(prov["record_files_sha256"]) == {"gemm.csv", "attention.csv", "memory.csv", "moe_layer.csv"}
    assert prov["num_fit_points"] == stats["num_fit_points"] > 0
    assert prov["gpu_name"] == "NVIDIA H100 80GB HBM3" and prov["cuda_version"] == "12.8"
    assert back.calibrated and math.isfinite(back.launch_s)


def test_missing_records_say_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"twin calibrate --out DIR"):
        rec.load_records("h100", tmp_path)


def test_timing_methods_predict_what_each_measured():
    """cuda_graph: the kernels' GPU time only; batched_events: the slower of host and GPU per call;
    per_rep_events: host-bound repetitions (host 30 us > GPU 10 us per op) span the ops' dispatch."""
    from calibration.predict import window_s
    ops = [(30e-6, 10e-6), (30e-6, 10e-6)]
    assert window_s({"timing": "cuda_graph"}, [], ops) == pytest.approx(20e-6)
    assert window_s({"timing": "batched_events"}, [], ops) == pytest.approx(60e-6)
    assert window_s({}, [], ops) == pytest.approx(60e-6)


def test_fit_measures_launch_s_from_cuda_graph_rows(tmp_path):
    """Kernels timed in CUDA graphs expose the device-side cost per kernel: the fit recovers it."""
    import dataclasses
    import pandas as pd
    from tests.calibration.conftest import synthetic_records
    true = dataclasses.replace(TRUE, launch_s=9e-6)
    root = synthetic_records(tmp_path, true)
    for f in ("gemm.csv", "memory.csv"):  # re-time the single kernels as the harness now does
        path = root / "h100" / f
        df = pd.read_csv(path)
        df["timing"] = "cuda_graph"
        df.to_csv(path, index=False)
    df = rec.load_records("h100", root)
    # the dense BF16 GEMMs and the memory kernels: two kernel kinds share launch_s, so the fit must
    # separate it from a curve and from memory_eff; the grouped, FP8, attention and layer rows add
    # nothing to this and cost minutes of fitting (row-tile screens, stage 2)
    df = df[df.bench.isin(["gemm", "memory"]) & df.precision.isin(["bf16", ""])].reset_index(drop=True)
    assert set(df.timing) == {"cuda_graph"} and set(df.bench) == {"gemm", "memory"}
    from calibration.predict import gpu_spec, predict_s
    df["time_s"] = [predict_s(r, gpu_spec("h100"), true) for r in df.to_dict("records")]
    prof, _ = fit_profile(df, "h100")
    assert default_profile().launch_s != pytest.approx(9e-6, rel=0.2)   # the start is not the answer
    assert prof.launch_s == pytest.approx(9e-6, rel=0.2)


def test_grouped_fp8_kernel_configuration_follows_torch_dispatch():
    """torch._scaled_grouped_mm (SM90) picks its tile by mean rows per group m, n, k."""
    from calibration.predict import grouped_kernel
    assert grouped_kernel("fp8-rowwise", [128] * 8, 4096, 7168) == "fp8-rowwise/small"       # m <= 128
    assert grouped_kernel("fp8-rowwise", [1024] * 8, 2048, 1408) == "fp8-rowwise/medium"     # no two dims >= 2048
    assert grouped_kernel("fp8-rowwise", [2048] * 8, 2048, 1408) == "fp8-rowwise"            # m, n >= 2048
    assert grouped_kernel("fp8-rowwise", [256] * 8, 2816, 2048) == "fp8-rowwise"             # n, k >= 2048
    assert grouped_kernel("bf16", [128] * 8, 2048, 1408) == "bf16"


def test_group_rows_run_in_row_tiles():
    from twin.costs.compute import padded_group_rows
    assert [padded_group_rows(r, 256) for r in (0.03, 16, 100, 128, 192, 384, 768)] == pytest.approx(
        [3.84, 128, 128, 128, 256, 512, 768])
    assert padded_group_rows(192, 0) == 192


def test_sustained_ratios_from_burst_and_steady_windows(tmp_path):
    from calibration.fit import sustained_ratios
    rows = ["bench,config,precision,phase,window,elapsed_s,temperature_c,time_s,sm_clock_mhz,power_w"]
    for config, burst, steady in (("gemm m=1 n=1 k=1", 1.0, 1.25), ("grouped_gemm g=8x1", 2.0, 2.0),
                                  ("attention b=1 fwd", 1.0, 1.1), ("copy bytes=8", 1.0, 1.0)):
        rows.append(f"sustained,{config},bf16,burst,0,0,40,{burst},1900,500")
        # the first windows run faster (clocks not yet settled): only the second half counts
        for w, t in enumerate([burst, burst, steady, steady], start=1):
            rows.append(f"sustained,{config},bf16,sustained,{w},{w},60,{t},1400,700")
    path = tmp_path / "sustained.csv"
    path.write_text("\n".join(rows) + "\n")
    ratios, per_kernel = sustained_ratios(path)
    assert ratios["gemm"] == pytest.approx(0.9)          # median of 0.8 and 1.0
    assert ratios["attention"] == pytest.approx(1 / 1.1)
    assert ratios["memory"] == pytest.approx(1.0)
    assert len(per_kernel) == 4 and per_kernel[0]["sustained_power_w"] == 700
    assert sustained_ratios(tmp_path / "missing.csv") == ({}, [])


def test_sustained_load_slows_compute_not_the_fitted_curves():
    from twin.costs.compute import attention_time_s, gemm_time_s
    from twin.costs.flops import Op
    from twin.core.specs import get_gpu
    gpu = get_gpu("h100")
    prof = dataclasses.replace(TRUE, sustained={"gemm": 0.9, "attention": 0.8, "memory": 1.0})
    loaded = prof.under_sustained_load()
    assert loaded.sustained == {} and loaded.under_sustained_load() is loaded
    big = (8192, 8192, 8192, "bf16", gpu)
    assert gemm_time_s(*big, loaded) - loaded.launch_s == pytest.approx((gemm_time_s(*big, prof) - prof.launch_s) / 0.9)
    op = Op("attn_core", "attention", "attn", batch=1, seq_len=4096, heads=16, qk_dim=192, v_dim=128, causal=True)
    assert attention_time_s(op, "fwd", gpu, loaded) > attention_time_s(op, "fwd", gpu, prof) * 1.2
    assert profile_from_json(json.loads(json.dumps(prof.to_json()))).sustained == prof.sustained


def test_a_curve_measured_under_sustained_load_keeps_its_own_ratio():
    # H100 records: the BF16 dense GEMM settles at 0.90 of its burst rate, the class median is 0.96
    from calibration.fit import sustained_curve_ratios
    per_kernel = [{"config": "gemm m=8192 n=4096 k=7168", "precision": "bf16", "ratio": 0.9},
                  {"config": "grouped_gemm g=8x4096", "precision": "bf16", "ratio": 0.99},
                  {"config": "attention b=2 fwd", "precision": "bf16", "ratio": 0.8}]
    own = sustained_curve_ratios(per_kernel, TRUE)
    assert own["gemm/bf16"] == 0.9 and own["grouped_gemm/bf16"] == 0.99
    assert not any(k.startswith("attention") for k in own)
    prof = dataclasses.replace(TRUE, sustained={"gemm": 0.96, "attention": 0.8, "memory": 1.0}, sustained_curves=own)
    loaded = prof.under_sustained_load()
    assert loaded.gemm["bf16"].e_max == pytest.approx(TRUE.gemm["bf16"].e_max * 0.9)
    assert loaded.grouped_gemm["bf16"].e_max == pytest.approx(TRUE.grouped_gemm["bf16"].e_max * 0.99)
    unmeasured = [k for k in TRUE.gemm if f"gemm/{k}" not in own]
    assert unmeasured and all(loaded.gemm[k].e_max == pytest.approx(TRUE.gemm[k].e_max * 0.96) for k in unmeasured)
    assert loaded.sustained_curves == {} and loaded.under_sustained_load() is loaded
    assert profile_from_json(json.loads(json.dumps(prof.to_json()))).sustained_curves == own


def test_fit_topk_recovers_a_select_cost():
    import pandas as pd
    from calibration.fit import fit_topk
    true = {"fixed_s": 9e-6, "row_s": 1.5e-9, "elem_s": 4.3e-11}
    rows = [(n, w) for n in (1024, 4096, 16384, 65536) for w in (8, 32, 256)]
    df = pd.DataFrame({"tokens": [n for n, _ in rows], "width": [w for _, w in rows],
                       "time_s": [true["fixed_s"] + n * (true["row_s"] + true["elem_s"] * w) for n, w in rows]})
    got = fit_topk(df, 2e-6)
    for k, v in true.items():
        assert got[k] == pytest.approx(v, rel=0.02)
    assert fit_topk(df.head(3), 2e-6) == {}


def test_fp8_stack_terms_from_their_records(tmp_path):
    """The speed ratio is time(1x128 x 128x128) / time(1x128 x 1x128, FP32 out) per shape, median;
    cast bandwidth fractions are achieved bytes/s over the HBM peak."""
    import pandas as pd

    from calibration.fit import fp8_stack_terms
    rows = []
    for m, t_2d, t_1d in ((2112, 1.0, 1.25), (7168, 2.0, 2.5), (4096, 1.0, 2.0)):
        rows += [{"bench": "gemm_wgrad", "op": "dW", "m": m, "n": 7168, "k": 4096, "precision": "fp8-blockwise",
                  "time_s": t_2d, "achieved_bytes_per_s": 0.0},
                 {"bench": "gemm_wgrad", "op": "dW", "m": m, "n": 7168, "k": 4096, "precision": "fp8-1d1d-f32",
                  "time_s": t_1d, "achieved_bytes_per_s": 0.0}]
    rows += [{"bench": "cast", "op": "cast_1x128", "m": 4096, "n": 0, "k": 7168, "precision": "fp8",
              "time_s": 1e-5, "achieved_bytes_per_s": 3.0e12},
             {"bench": "cast", "op": "requant_transpose", "m": 4096, "n": 0, "k": 7168, "precision": "fp8",
              "time_s": 1e-5, "achieved_bytes_per_s": 1.5e12}]
    path = tmp_path / "fp8_stack.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    terms = fp8_stack_terms(path, hbm_bytes_per_s=3.0e12)
    assert terms["wgrad_1d1d_speed"] == pytest.approx(0.8)
    assert terms["cast_eff"] == pytest.approx(1.0) and terms["requant_transpose_eff"] == pytest.approx(0.5)
    assert fp8_stack_terms(tmp_path / "missing.csv", 3.0e12) == {}

"""calibration.predict_vec: the fit's stage 1 in arrays gives predict_s's floats exactly (==, not
approx), so a fit takes the same steps and writes the same profile. Each case compares every row."""

import dataclasses

import numpy as np
import pytest

from calibration import records as rec
from calibration.fit import _PrimitiveProblem, _select_primitive_rows, fit_rows
from calibration.predict import gpu_spec, predict_s
from calibration.predict_vec import PrimitivePredictor
from tests.calibration.conftest import TRUE
from twin.costs import compute
from twin.costs.profile import default_profile, fitted_profile


@pytest.fixture(scope="module")
def h100_primitive_rows():
    """Every primitive record row of the committed H100 folder, both splits (topk and cat rows too)."""
    df = rec.load_records("h100")
    return df[df.bench.isin(rec.PRIMITIVE_BENCHES)].reset_index(drop=True).to_dict("records")


def scalar(records, spec, prof) -> np.ndarray:
    return np.array([predict_s(r, spec, prof) for r in records])


def assert_same(records, prof, gpu="h100"):
    spec = gpu_spec(gpu)
    got, want = PrimitivePredictor(records, spec).predict(prof), scalar(records, spec, prof)
    diff = np.flatnonzero(got != want)
    assert not len(diff), [(records[i]["bench"], records[i].get("op"), got[i], want[i]) for i in diff[:5]]


def test_committed_rows_under_the_committed_profile(h100_primitive_rows):
    """The committed profile (wave tiles on two curves, row tile 256, topk terms, measured host_s)."""
    assert_same(h100_primitive_rows, fitted_profile("h100"))


def test_the_fits_stage1_rows_run_in_arrays_alone(h100_primitive_rows):
    """The committed fitting rows of stage 1 need no row-by-row fallback: the speed-up holds for them."""
    df = rec.load_records("h100")
    rows, _, _, _ = _select_primitive_rows(df, "h100")
    pred = PrimitivePredictor(rows.to_dict("records"), gpu_spec("h100"))
    assert pred.scalar_idx == [] and len(pred.blocks) >= 5
    # of all primitive rows, only memory rows of the branches not in arrays go row by row
    everything = PrimitivePredictor(h100_primitive_rows, gpu_spec("h100"))
    slow = {h100_primitive_rows[i]["op"] for i in everything.scalar_idx}
    assert slow and all(op.startswith(("topk", "router_topk", "mla_qk_cat", "fp8_quant")) for op in slow), slow


def test_trial_profiles_of_the_fit(synthetic_root):
    """The residuals the optimiser sees, vectorised or row by row, at random points of the bounds,
    with the tile-wave model on every GEMM curve or none, at each candidate row tile, on a subset
    of rows (choose_wave_tiles): equal."""
    for root, gpu in ((synthetic_root, "h100"), (rec.MEASUREMENTS_DIR, "h200")):
        rows, _, _, layout = _select_primitive_rows(rec.load_records(gpu, root), gpu)
        curves = sorted({(t, k) for t, k, _ in layout if t in ("gemm", "grouped_gemm")})
        rng = np.random.default_rng(1)
        for tile in (0, 128, 256):
            vec = _PrimitiveProblem.build(gpu, rows, layout, dataclasses.replace(default_profile(), group_row_tile=tile))
            row = dataclasses.replace(vec, vectorized=False)
            for x in (vec.x0, vec.lo + (np.minimum(vec.hi, 5e3) - vec.lo) * rng.uniform(size=len(vec.x0))):
                for waves in ({}, {c: 128 for c in curves}):
                    assert np.array_equal(vec.residuals(x, waves), row.residuals(x, waves)), (gpu, tile, waves)
            sub = [i for i, r in enumerate(vec.records) if (r["table"], r["kernel"]) == curves[-1]]
            assert np.array_equal(vec.residuals(vec.x0, {curves[-1]: 128}, sub), row.residuals(vec.x0, {curves[-1]: 128}, sub))


def test_profile_features_the_blocks_pass_to_predict_s(h100_primitive_rows, monkeypatch):
    """In-layer factors (dropped for primitives; GEMM ones on compute only), curves at a layer clock
    or speed (row by row), the GEMM alignment switches (dense BF16 rows row by row): still equal."""
    prof = fitted_profile("h100")
    layer = {"gemm/bf16": 0.9, "grouped_gemm/fp8": 0.95, "memory": 1.1}
    for p in (dataclasses.replace(prof, in_layer=layer),
              dataclasses.replace(prof, in_layer=layer, in_layer_gemm_compute_only=True),
              dataclasses.replace(prof, gemm_clock_mhz={"bf16": 1700.0, "fp8": 1650.0}),
              dataclasses.replace(prof, bf16_layer_speedup=1.05)):
        assert_same(h100_primitive_rows, p)
    for switch in ("ADOPT_GEMM_ALIGNMENT", "ADOPT_GEMM_ALIGNMENT_PATTERN", "ADOPT_GEMM_ALIGNMENT_CURVE"):
        monkeypatch.setattr(compute, switch, True)
        assert_same(h100_primitive_rows[:300], prof)
        monkeypatch.setattr(compute, switch, False)


def test_memory_kernels_and_timing_methods():
    """Each _memory_ops branch under each timing method (a missing column: per repetition),
    at a gather_eff and cat_eff of their own; the branches not in arrays go to predict_s."""
    ops = ("copy", "softmax", "rmsnorm", "swiglu", "silu_strided", "mul_strided", "index_gather", "index_copy",
           "index_put_acc", "router_topk", "topk8", "mla_qk_cat", "fp8_quant_1x128")
    records = []
    for timing in ("cuda_graph", "batched_events", "per_rep_events", None):
        for op in ops:
            for t in (1024, 65536):
                r = dict(bench="memory", op=op, tokens=t, width=256 if "topk" in op else 7168,
                         bytes_moved=4.0 * t * 7168)
                records.append(r if timing is None else {**r, "timing": timing})
    records.append({**records[0], "bench": "memory_alone"})
    prof = dataclasses.replace(TRUE, gather_eff=0.55, cat_eff=0.7, topk={"fixed_s": 9e-6, "row_s": 1e-9, "elem_s": 1e-11})
    assert_same(records, prof)
    attn = fit_rows(rec.load_records("h100"))
    attn = attn[attn.bench.isin(["attn_fwd", "attn_bwd"])].to_dict("records")
    assert_same([{**r, "timing": t} for r in attn[:8] for t in ("batched_events", "per_rep_events")], prof)


def test_an_fp8_grouped_weight_gradient_row_is_timed_with_the_curve_the_fit_names(h100_primitive_rows):
    """s27walk: row_kernel names an FP8 grouped_gemm_wgrad row's curve `<label>/wgrad` (the curve a fit fits),
    and the predictors now read it (they read `fp8/wgrad`, which no fit writes, so a fitted FP8 weight-gradient
    curve moved no prediction). A curve at half the forward's speed roughly doubles the row; both paths agree;
    build_profile makes it the twin's `fp8/wgrad` as it makes the label's forward curve the twin's `fp8`."""
    from calibration.fit import build_profile
    from calibration.predict import row_kernel
    rows = [{**r, "precision": "fp8-rowwise"} for r in h100_primitive_rows
            if r["bench"] == "grouped_gemm_wgrad" and int(r["tokens_per_group"]) >= 4096][:4]
    assert rows and {row_kernel(r) for r in rows} == {"fp8-rowwise/wgrad"}
    prof = fitted_profile("h100")
    fwd = prof.grouped_gemm["fp8-rowwise"]
    slow = dataclasses.replace(prof, grouped_gemm={**prof.grouped_gemm, "fp8-rowwise/wgrad":
                                                   dataclasses.replace(fwd, e_max=fwd.e_max / 2)})
    spec = gpu_spec("h100")
    before, after = scalar(rows, spec, prof), scalar(rows, spec, slow)
    assert np.all(after > 1.5 * before), (before, after)
    assert_same(rows, slow)
    layout = [("grouped_gemm", c, f) for c in ("fp8-rowwise", "fp8-rowwise/wgrad") for f in ("e_max", "m_half", "n_half", "k_half")]
    built = build_profile("h100", [0.6, 1.0, 2.0, 3.0, 0.3, 1.0, 2.0, 3.0], layout, prof)
    assert built.grouped_gemm["fp8/wgrad"] == built.grouped_gemm["fp8-rowwise/wgrad"]

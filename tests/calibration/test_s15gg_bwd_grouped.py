"""s15gg (docs/notes/s15gg_rule.md): candidate K, the MoE backward's dgrad and wgrad grouped GEMMs at
their layout's measured rate relative to the forward's in the same layer (calibration.bwd_grouped,
ADOPT_BWD_GROUPED_LAYOUT); both settings tested."""

import numpy as np
import pytest

import calibration.predict as P
from calibration.bwd_grouped import _roles, gpu_folder, layout_factors, layout_table, template_tag
from calibration.fit import PROFILES_DIR
from calibration.validate import load_fitted_profile
from twin.core.specs import get_model

H100 = "NVIDIA H100 SXM5 80GB"
H200 = "NVIDIA H200 SXM5 141GB"
CUT = "_ZN7cutlass13device_kernelIN2at4cuda6detail25enable_3x_kernel_for_sm9xINS_4gemm6kernel13GemmUniversalINS5_17GroupProblem..."


def test_template_tag_and_roles():
    # the profiler's cut names differ only in the tail tag; the grouped setup kernel is not a GEMM
    assert template_tag(CUT + "x4_LDSM_NENS9_14SM90_TMA_STOREES26_NS9_17SM90_U32x4_STSM_NENS9_9Copy") == "S26"
    assert template_tag("void at::cuda::detail::prepare_grouped_gemm_data<cutlass::bfloat16_t>") is None
    assert template_tag("vectorized_gather_kernel<16, long>") is None
    # the forward's tag is the forward's; of the backward's two others the slower is the weight gradient
    assert _roles({"S24"}, {"S24": 4.2e-3, "S26": 5.1e-3, "S2A": 4.2e-3}) == {"S24": "fwd", "S2A": "dgrad", "S26": "wgrad"}


def test_fitting_layers_and_factors():
    """Fitting split only: 4 BF16 layers a GPU (EP2 at 2,048 and 8,192 tokens a rank, one GPU at
    1,024 / 128 experts and 16,384 / 64). The ~10% the twin over-costs is shared by the forward
    at >= 1,024 rows a group; relative to it the wgrad is a few % further over, the dgrad ~1%."""
    for gpu, name in (("h100", H100), ("h200", H200)):
        t = layout_table(gpu)
        assert len(t) == 4
        big = t[t["rows_per_group"] >= 1024]
        assert (big["fwd_ratio"] < 0.92).all() and (big["fwd_ratio"] > 0.85).all()
        f = layout_factors(name)
        assert 0.98 < f["dgrad"] < 1.0 and 0.95 < f["wgrad"] < 0.99 and f["wgrad"] < f["dgrad"]
        assert f["wgrad"] == pytest.approx(np.median(t["wgrad_vs_fwd"]), rel=1e-12)
    assert gpu_folder("NVIDIA H800 SXM5 80GB") is None and layout_factors("NVIDIA H800 SXM5 80GB") == {}


def _grouped_s(eager) -> float:
    return eager.component_s.get("grouped_gemm", 0.0) + eager.w_component_s.get("grouped_gemm", 0.0)


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_moe_backward_both_settings(gpu, monkeypatch):
    """Off: the backward's four grouped GEMMs as before s15gg. On: the dgrad pair x its factor and the
    wgrad pair x its factor; the forward unchanged."""
    spec, prof = P.gpu_spec(gpu), load_fitted_profile(gpu, None, PROFILES_DIR)[0]
    model = get_model("v3-slice-1l")
    counts = [2048 * 8 / 32] * 32
    monkeypatch.setattr(P, "ADOPT_BWD_GROUPED_LAYOUT", False)
    f_off, b_off = P.moe_layer_ops(model, 2048, counts, "bf16", spec, prof)
    monkeypatch.setattr(P, "ADOPT_BWD_GROUPED_LAYOUT", True)
    f_on, b_on = P.moe_layer_ops(model, 2048, counts, "bf16", spec, prof)
    assert f_on.ops == f_off.ops
    fac = layout_factors(spec.name)
    off_ops = [g for _, g in b_off.ops]
    on_ops = [g for _, g in b_on.ops]
    changed = [(a, b) for a, b in zip(off_ops, on_ops) if a != b]
    assert len(changed) == 4    # two dgrad, two wgrad
    ratios = sorted(b / a for a, b in changed)
    assert ratios[:2] == pytest.approx([fac["wgrad"]] * 2, rel=1e-12)
    assert ratios[2:] == pytest.approx([fac["dgrad"]] * 2, rel=1e-12)
    assert fac["wgrad"] < _grouped_s(b_on) / _grouped_s(b_off) < fac["dgrad"]

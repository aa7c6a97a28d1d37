"""The EP forward's local experts and dispatch/combine's row gathers (s12ep, calibration.whole_step;
rule and result in docs/notes/s12ep_rule.md): what each correction changes in the op list, and the
measured vectorized_gather rate it uses."""

import dataclasses

import pytest

from calibration import whole_step as ws
from calibration.layer_gaps import _committed_profile, measured_vectorized_gather_eff
from calibration.predict import gpu_spec, moe_layer_ops, timed_window_s
from twin.core.specs import get_model

SPEC = dataclasses.replace(get_model("v3-slice-1l"), num_routed_experts=32)
T, WORLD = 4096, 2
ROWS = float(T * SPEC.top_k)


def _ep_fwd_s(monkeypatch, local_only: bool, row_gather: bool, profile) -> float:
    monkeypatch.setattr(ws, "ADOPT_EP_LOCAL_EXPERTS_ONLY", local_only)
    monkeypatch.setattr(ws, "ADOPT_EP_ROW_GATHER", row_gather)
    f, _ = ws.ep_moe_ops(SPEC, T, WORLD, ROWS, "bf16", gpu_spec("h200"), profile)
    return timed_window_s([], f.ops)


def test_local_layer_without_token_side_drops_the_sort_and_unsort():
    """token_side False leaves out two N-row gathers, two argsorts and three index ops: exactly
    the one-GPU forward's token-side work, nothing of expert_ffn."""
    prof, gpu = _committed_profile("h200"), gpu_spec("h200")
    counts = [ROWS / 16] * 16
    full, full_b = moe_layer_ops(dataclasses.replace(SPEC, num_routed_experts=16), T, counts, "bf16", gpu, prof)
    local, local_b = moe_layer_ops(dataclasses.replace(SPEC, num_routed_experts=16), T, counts, "bf16", gpu, prof,
                                   token_side=False)
    assert local_b.ops == full_b.ops                       # the backward is untouched
    assert len(full.ops) - len(local.ops) >= 2 + 2 * 3 + 2 + 2   # gathers, argsort passes, small ops
    N, D = T * SPEC.top_k, SPEC.hidden_size
    gathers_s = 2 * (2 * N * D * 2) / prof.gather_eff / (gpu.hbm_bytes_per_s * prof.memory_eff)
    dropped = sum(g for _, g in full.ops) - sum(g for _, g in local.ops)
    assert dropped == pytest.approx(gathers_s, rel=0.05)   # the two row gathers dominate what goes


def test_vectorized_gather_rate_is_measured_from_fitting_kernels():
    """The H200's and H100's profiled MoE forwards (fitting split) time the row gathers near the
    streaming rate, well above the layer fit's blended gather_eff."""
    for gpu in ("h100", "h200"):
        prof = _committed_profile(gpu)
        eff = measured_vectorized_gather_eff(gpu, prof)
        assert eff is not None and prof.gather_eff < eff <= 1.05
        assert (prof.eager or {}) == {}            # _committed_profile strips the eager terms
    assert measured_vectorized_gather_eff("nonexistent", _committed_profile("h200")) is None


def test_each_correction_makes_the_ep_forward_faster(monkeypatch):
    from twin.costs.profile import profile_from_json
    from twin.costs.profile import PROFILES
    import json
    from pathlib import Path
    prof = profile_from_json(json.loads((Path(str(PROFILES)) / "h200.json").read_text()))
    assert (prof.eager or {}).get("vectorized_gather_eff")
    base = _ep_fwd_s(monkeypatch, False, False, prof)
    a = _ep_fwd_s(monkeypatch, True, False, prof)
    b = _ep_fwd_s(monkeypatch, False, True, prof)
    ab = _ep_fwd_s(monkeypatch, True, True, prof)
    assert ab < a < base and ab < b < base
    # without the measured term, B falls back to gather_eff: no change
    bare = dataclasses.replace(prof, eager={k: v for k, v in prof.eager.items() if k != "vectorized_gather_eff"})
    assert _ep_fwd_s(monkeypatch, False, True, bare) == pytest.approx(_ep_fwd_s(monkeypatch, False, False, bare))

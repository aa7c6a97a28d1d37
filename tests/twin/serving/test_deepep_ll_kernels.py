"""DeepEP's low-latency send and receive kernels in the decode step under both settings of
ADOPT_DEEPEP_LL_SM_TIME (docs/notes/s22dep_rule.md): on, each micro-batch's compute holds the four kernels and
the all-to-all on no SMs keeps only the flight; off, or where the all-to-all is NVLink (one node), nothing moves.
The mechanics are checked on a stand-in table; the committed table's values are checked against its records
in tests/calibration/test_deepep_ll_fit.py."""

from pathlib import Path

import pytest

import twin.serving.iteration as iteration
from twin.core.scenario import SERVING, load_scenario
from twin.core.specs import serving_tables
from twin.serving.iteration import DEEPEP_LL_KERNELS, deepep_ll_kernels_s, decode_step
from twin.serving.published import DEEPSEEK_PROFILE_DECODE_CONDITIONS

ROOT = Path(__file__).resolve().parents[3]
# stand-in: fixed 5 us and 10 ns a row for every kernel at 256 experts, 7 us / 12 ns at 288; measured at 3.35 TB/s
STAND_IN = {"experts": [256, 288], "measured_hbm_bytes_per_s": 3.35e12,
            **{f"{k}_fixed_s": [5e-6, 7e-6] for k in DEEPEP_LL_KERNELS},
            **{f"{k}_per_row_s": [10e-9, 12e-9] for k in DEEPEP_LL_KERNELS}}


@pytest.fixture
def stand_in_table(monkeypatch):
    tables = {**serving_tables(), "deepep_ll_sm": STAND_IN}
    monkeypatch.setattr(iteration, "serving_tables", lambda: tables)


def _profile(*extra):
    return load_scenario(ROOT / "scenarios" / "r1_serve_h800_decode.toml", [*DEEPSEEK_PROFILE_DECODE_CONDITIONS, *extra], SERVING)


def test_kernel_times_at_the_profile(stand_in_table):
    sc = _profile()   # EP128, 256 experts, H800 (3.35 TB/s): 64 tokens a micro-batch -> 512 rows, balanced
    k = deepep_ll_kernels_s(sc.model, sc.gpu, sc.serve, 64, 1.0)
    assert k == {name: pytest.approx(5e-6 + 10e-9 * 512) for name in DEEPEP_LL_KERNELS}
    # a straggler receiving 1.5x the mean: the dispatch's receive and the combine's send grow, not the others
    k15 = deepep_ll_kernels_s(sc.model, sc.gpu, sc.serve, 64, 1.5)
    assert k15["dispatch_recv"] == pytest.approx(5e-6 + 10e-9 * 768) and k15["dispatch_send"] == k["dispatch_send"]


def test_expert_count_and_hbm_pick_the_line(stand_in_table):
    sc = _profile("serve.redundant_experts=32", "serve.ep=144", "cluster.num_gpus=144",
                  "serve.batch=18432")   # 288 physical experts (EP144, the day's unit): the second line
    assert deepep_ll_kernels_s(sc.model, sc.gpu, sc.serve, 64, 1.0)["combine_recv"] == pytest.approx(7e-6 + 12e-9 * 512)
    h200 = load_scenario(ROOT / "scenarios" / "r1_serve_h800_decode.toml",
                         [*DEEPSEEK_PROFILE_DECODE_CONDITIONS, 'cluster.gpu="h200"'], SERVING)
    # the per-row part at 4.8 TB/s is 3.35 / 4.8 of the measured GPU's
    assert deepep_ll_kernels_s(h200.model, h200.gpu, h200.serve, 64, 1.0)["dispatch_send"] == \
        pytest.approx(5e-6 + 10e-9 * 512 * 3.35 / 4.8)


def test_nvlink_all_to_all_has_no_deepep_kernels(stand_in_table):
    sc = load_scenario(ROOT / "scenarios" / "r1_serve_h200.toml", [], SERVING)   # EP8 on one node
    assert set(deepep_ll_kernels_s(sc.model, sc.gpu, sc.serve, 64, 1.0).values()) == {0.0}


@pytest.mark.parametrize("adopt", [False, True])
def test_decode_step_under_both_settings(monkeypatch, stand_in_table, adopt):
    monkeypatch.setattr(iteration, "ADOPT_DEEPEP_LL_SM_TIME", False)
    sc = _profile()
    s = sc.serve
    off = decode_step(sc.model, sc.gpu, s, s.batch)
    monkeypatch.setattr(iteration, "ADOPT_DEEPEP_LL_SM_TIME", adopt)
    step = decode_step(sc.model, sc.gpu, s, s.batch)
    mb, mb_off = step["per_microbatch_groups_s"], off["per_microbatch_groups_s"]
    kernels = sum(deepep_ll_kernels_s(sc.model, sc.gpu, s, 64, step["rows_frac"]).values())
    assert mb_off["deepep_ll_kernels"] == 0.0
    if adopt:
        assert mb["deepep_ll_kernels"] == pytest.approx(kernels)
        # the flight alone on no SMs: the table's time less the kernels
        assert mb["dispatch"] + mb["combine"] == pytest.approx(mb_off["dispatch"] + mb_off["combine"] - kernels)
        # compute-bound at the profile (C > A): each micro-batch-layer grows by the kernels
        assert step["per_moe_layer_s"] == pytest.approx(off["per_moe_layer_s"] + 2 * kernels)
    else:
        assert step["step_s"] == off["step_s"] and mb == mb_off
    h200 = load_scenario(ROOT / "scenarios" / "r1_serve_h200.toml", ["serve.batch=64"], SERVING)
    monkeypatch.setattr(iteration, "ADOPT_DEEPEP_LL_SM_TIME", not adopt)
    other = decode_step(h200.model, h200.gpu, h200.serve, 64)["step_s"]
    monkeypatch.setattr(iteration, "ADOPT_DEEPEP_LL_SM_TIME", adopt)
    assert decode_step(h200.model, h200.gpu, h200.serve, 64)["step_s"] == other   # one node: the switch does not enter


@pytest.mark.parametrize("adopt", [False, True])
def test_same_hbm_rows_pick_the_table(monkeypatch, adopt):
    """ADOPT_DEEPEP_LL_SAME_HBM_ROWS (docs/notes/s23deep_rule.md part 1): off, every GPU takes the H200 pair's
    table (per-row part scaled by HBM); on, the H800 takes the H100 pair's table unscaled, the H200 still the H200
    pair's."""
    monkeypatch.setattr(iteration, "ADOPT_DEEPEP_LL_SAME_HBM_ROWS", adopt)
    tables = serving_tables()
    sc = _profile()   # H800, EP128, 256 experts: 64 tokens -> 512 rows of its own, 512 received at balance
    h100 = tables["deepep_ll_sm_h100"]
    h200 = tables["deepep_ll_sm"]
    want_table, scale = (h100, 1.0) if adopt else (h200, 4.8e12 / 3.35e12)
    assert iteration.deepep_ll_table(sc.gpu) is want_table
    k = deepep_ll_kernels_s(sc.model, sc.gpu, sc.serve, 64, 1.0)
    for name in DEEPEP_LL_KERNELS:
        assert k[name] == pytest.approx(want_table[f"{name}_fixed_s"][0] + want_table[f"{name}_per_row_s"][0] * 512 * scale)
    h200_sc = load_scenario(ROOT / "scenarios" / "r1_serve_h800_decode.toml",
                            [*DEEPSEEK_PROFILE_DECODE_CONDITIONS, 'cluster.gpu="h200"'], SERVING)
    assert iteration.deepep_ll_table(h200_sc.gpu) is h200   # an H200 takes its own pair's rows either way


@pytest.mark.parametrize("adopt", [False, True])
def test_same_hbm_rows_leave_nvlink_steps_alone(monkeypatch, adopt):
    sc = load_scenario(ROOT / "scenarios" / "r1_serve_h200.toml", ["serve.batch=64"], SERVING)   # EP8, one node
    monkeypatch.setattr(iteration, "ADOPT_DEEPEP_LL_SAME_HBM_ROWS", not adopt)
    other = decode_step(sc.model, sc.gpu, sc.serve, 64)["step_s"]
    monkeypatch.setattr(iteration, "ADOPT_DEEPEP_LL_SAME_HBM_ROWS", adopt)
    assert decode_step(sc.model, sc.gpu, sc.serve, 64)["step_s"] == other

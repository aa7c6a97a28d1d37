"""calibration.dense_clock (docs/notes/s25dense_rule.md): the sustained ratio taken against the curve, and
the judgement of campaign s25dense's held rows."""

import math

import pandas as pd
import pytest

from calibration import dense_clock as dc
from calibration.predict import gpu_spec
from twin.costs import compute
from twin.costs.profile import fitted_profile, load_profile


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_committed_profiles_hold_the_ratio_their_records_give(gpu):
    assert fitted_profile(gpu).sustained_vs_curve == pytest.approx(dc.vs_curve_terms(gpu), rel=1e-12)


@pytest.mark.parametrize("gpu, today", [("h100", 0.056), ("h200", -0.022)])
def test_under_the_switch_the_simulation_reads_the_held_gemm_it_was_measured_from(gpu, today):
    """sustained.csv's BF16 8192 x 4096 x 7168 held at 700 W: today's simulation profile reads it 5.6% slow
    (H100; 2.2% fast on the H200), the ratio against the curve reproduces it (by construction of the ratio)."""
    from calibration.fit import sustained_ratios
    from calibration.records import MEASUREMENTS_DIR
    _, per_kernel = sustained_ratios(MEASUREMENTS_DIR / gpu / "sustained.csv")
    held = next(k["sustained_s"] for k in per_kernel if k["config"].startswith("gemm ") and k["precision"] == "bf16")
    errors = {}
    for on in (False, True):
        with dc.vs_curve(on, gpu):
            errors[on] = compute.gemm_time_s(8192, 4096, 7168, "bf16", gpu_spec(gpu), load_profile(gpu)) / held - 1
    assert errors[False] == pytest.approx(today, abs=0.002)
    # (not to the last digit: the simulation's memory term runs at the memory class's sustained ratio)
    assert errors[True] == pytest.approx(0.0, abs=1e-3)


def _rows():
    """A GEMM case (burst 0.9, loop 1.0, hold windows of 0.5 s at 1.10 then 1.05 ms), a triple held at
    3.0 ms, an MLP step whose profiled GEMM kernels take 9.0 ms a step; times in ms."""
    base = {"campaign": "s25dense", "gpu_name": "NVIDIA H100 80GB HBM3", "sm_clock_mhz": 1500.0, "power_w": 700.0}
    g = {"case": "g", "kind": "gemm", "m": 4096, "n": 4096, "k": 4096, "flops": 2.0 * 4096 ** 3}
    rows = [{**base, **g, "phase": "burst", "time_s": 0.9e-3}, {**base, **g, "phase": "loop", "time_s": 1.0e-3}]
    # windows end at 0.5, 1.0, 1.5, 2.0, 2.5, 3.0 s: those starting at >= 1.5 s are the last three
    rows += [{**base, **g, "phase": "hold", "window": w, "elapsed_s": 0.5 * w, "time_s": (1.10 if w <= 3 else 1.05) * 1e-3}
             for w in range(1, 7)]
    tr = {"case": "t", "kind": "triple", "outputs": 4096, "inputs": 4096, "tokens": 4096, "flops": 0.0}
    rows += [{**base, **tr, "phase": "hold", "window": w, "elapsed_s": 0.5 * w, "time_s": 3.0e-3} for w in range(1, 7)]
    mlp = {"case": "s", "kind": "mlp_step", "tokens": 4096, "hidden": 1024, "ffn": 2048, "flops": 0.0}
    rows += [{**base, **mlp, "phase": "step_kernel", "kernel": k, "time_s": t}
             for k, t in (("nvjet_sm90_tst_128x256", 8.0e-3), ("cutlass_80_tensorop_gemm", 1.0e-3),
                          ("vectorized_elementwise_kernel", 2.0e-3))]
    return pd.DataFrame(rows)


def test_judge_takes_the_steady_windows_and_the_step_gemm_kernels(tmp_path):
    folder = tmp_path / "h100" / "s25dense"
    folder.mkdir(parents=True)
    _rows().to_csv(folder / "dense_clock.csv", index=False)
    out = dc.judge("h100", tmp_path)
    t = out["cases"].set_index("case")
    assert t.loc["g", "held_s"] == pytest.approx(1.05e-3) and t.loc["t", "held_s"] == pytest.approx(3.0e-3)
    assert t.loc["s", "step_gemm_kernels_s"] == pytest.approx(9.0e-3)
    # the triple and the step price their own GEMMs: forward, input and weight gradient; 9 for the step
    assert t.loc["t", "twin_fitted_s"] == pytest.approx(3 * t.loc["g", "twin_fitted_s"])
    assert len(dc.case_gemms({"kind": "mlp_step", "tokens": 8, "hidden": 2, "ffn": 4})) == 9
    assert out["gemm"]["sim_on"]["median"] == pytest.approx(abs(t.loc["g", "twin_sim_on_s"] / 1.05e-3 - 1))
    assert out["gemm"]["burst_fitted"]["median"] == pytest.approx(abs(t.loc["g", "twin_fitted_s"] / 0.9e-3 - 1))
    assert math.isnan(t.loc["g", "step_gemm_kernels_s"])
    assert set(out["criteria"]) == {"1_held_gemms", "2_held_triples", "3_mlp_step_gemm_kernels"}


@pytest.fixture(scope="module")
def judged():
    return dc.judge("h100")


def test_the_curve_meets_its_own_convention_and_bursts_run_faster(judged):
    """Campaign s25dense (one H100, fresh shapes): the fitted curve against the loop rows (gemm.csv's timing)
    within issue 13's 5% median; against the burst rows (s24align3's) it reads slow, the bursts' boost clock."""
    gemm = judged["gemm"]
    print("loop", gemm["loop_fitted"], "burst", gemm["burst_fitted"])
    assert gemm["loop_fitted"]["n"] == 8 and gemm["loop_fitted"]["median"] <= 0.05
    t = judged["cases"]
    burst = t[t["kind"] == "gemm"]
    assert (burst["twin_fitted_s"] / burst["burst_s"]).median() > 1.05


def test_criteria_1_to_3_hold_on_the_fresh_held_rows(judged):
    """docs/notes/s25dense_rule.md criteria 1-3 (H100): held GEMMs 3.5% -> 2.2% median, triples 3.1% -> 2.4%,
    the MLP step's profiled GEMM kernels +19.9% -> +13.5%."""
    print({k: judged[k] for k in ("gemm", "triple", "mlp_step")})
    assert judged["criteria"] == {"1_held_gemms": True, "2_held_triples": True, "3_mlp_step_gemm_kernels": True}


@pytest.mark.xfail(strict=True, reason="s25dense criterion 4 missed: V3's step moves -1.09 points under the switch "
                                       "(guard: <= 1), and real/'s serving load runs, predicted on the simulation "
                                       "profile, move (the rule asked them identical); not adopted")
def test_criterion_4_v3_step_moves_at_most_one_point():
    import twin
    steps = {}
    for on in (False, True):
        with dc.vs_curve(on, "h100"):
            steps[on] = twin.simulate_step(twin.load_scenario()).step_time_s
    move = steps[True] / steps[False] - 1
    print(f"V3 step {steps[False]:.3f} s -> {steps[True]:.3f} s ({move:+.2%})")
    assert abs(move) <= 0.01, f"V3 step moves {move:+.2%}"


def test_not_adopted():
    from twin.costs import profile as profile_mod
    assert profile_mod.ADOPT_SUSTAINED_VS_CURVE == ()


def test_in_hold_step_seconds_weigh_each_kernel_by_its_calls_a_step():
    """Round 2: a step of 3 calls of GEMM kernel A and 1 of B (after-hold profile), A 1.0 ms and B 2.0 ms a
    call inside the hold -> 5.0 ms of GEMMs a step; the elementwise kernel 0.5 ms x 2 -> 1.0 ms; a kernel
    without an in-hold mean leaves the figure undefined."""
    rows = pd.DataFrame([
        {"phase": "step_kernel", "kernel": "nvjet_A", "time_s": 2.7e-3, "calls": 3},
        {"phase": "step_kernel", "kernel": "nvjet_B", "time_s": 1.8e-3, "calls": 1},
        {"phase": "step_kernel", "kernel": "elementwise_kernel", "time_s": 0.9e-3, "calls": 2},
        {"phase": "step_kernel_held", "kernel": "nvjet_A", "time_s": 1.0e-3, "calls": 30},
        {"phase": "step_kernel_held", "kernel": "nvjet_B", "time_s": 2.0e-3, "calls": 10},
        {"phase": "step_kernel_held", "kernel": "elementwise_kernel", "time_s": 0.5e-3, "calls": 20}])
    assert dc.in_hold_step_s(rows, gemm=True) == pytest.approx(5.0e-3)
    assert dc.in_hold_step_s(rows, gemm=False) == pytest.approx(1.0e-3)
    assert math.isnan(dc.in_hold_step_s(rows.drop(index=4), gemm=True))   # nvjet_B's in-hold row missing


def test_round_2_second_card_the_curve_meets_its_convention_and_held_gemms_sit_below_it():
    """Round 2 (report only; another H100 host): the fitted curve within 5% of the loop rows, and every held
    GEMM of >= 1e11 FLOP at 0.92-0.97 of the curve's rate on both cards (the simulation today: 0.902)."""
    r = dc.round2("h100")
    t = r["cases"][r["cases"]["kind"] == "gemm"]
    assert (t["twin_fitted_s"] / t["loop_s"] - 1).abs().median() <= 0.05
    big = t.set_index("case")["flops"] >= 1e11
    ratios = r["curve_over_held"][big]
    print(ratios)
    assert ((ratios > 0.92) & (ratios < 0.97)).all().all()

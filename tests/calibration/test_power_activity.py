"""calibration.power_activity (s22tt, docs/notes/s22tt_rule.md): points of the chip's dynamic-power curve
h(f) from one GEMM on data of different activity held at a power limit, the local exponent fitted with the
held-out GEMM left out, the rule's criteria, and calibration.power_cap.ADOPT_ACTIVITY_POWER_LAW's two
settings. Synthetic boards follow P = P_s + d D h(f), h = (f / 1980 MHz)^k, so the figures are known."""

import csv
import math

import pytest

from calibration import power_activity as pa
from calibration import power_cap as pc
from calibration.records_io import read_csv

GEMM = "gemm m=8192 n=4096 k=7168 data="
TARGETS = (1.0, 0.35, 0.25, 0.15)   # real/bench/power_activity.py's POWER_ACTIVITY_TARGETS (calibration/ does not import real/)
COLS = ["bench", "kernel", "precision", "duty_target", "window", "duty_frac", "clock_event_reasons", "time_s",
        "power_w", "sm_clock_mhz", "temperature_c", "gpu_name"]


def _board(static_w=120.0, k=1.6, limit_w=700.0, held_out_clock_scale=1.0, gpu="NVIDIA H100 80GB HBM3"):
    """Rows a board with h = (f / 1980)^k gives: zeros (D 450 W: free even at full duty), powers of two
    (700 W), half zeros (900 W), Gaussian (1,100 W, held out) and FP8 (1,400 W)."""
    rows = [dict(bench="duty_sweep", kernel="idle", precision="", duty_target=0.0, window=1, duty_frac=0.0,
                 clock_event_reasons=1, time_s=3.0, power_w=static_w, sm_clock_mhz=345, temperature_c=35, gpu_name=gpu)]
    for name, prec, dyn in (("zeros", "bf16", 450.0), ("pow2", "bf16", 700.0), ("half_zeros", "bf16", 900.0),
                            ("randn", "bf16", 1100.0), ("randn", "fp8-tensor", 1400.0)):
        for d in TARGETS:
            f = min(pa.MAX_CLOCK_MHZ, pa.MAX_CLOCK_MHZ * ((limit_w - static_w) / (d * dyn)) ** (1 / k))
            capped = f < pa.MAX_CLOCK_MHZ
            if capped and name == "randn" and prec == "bf16":
                f *= held_out_clock_scale
            p = limit_w if capped else static_w + d * dyn
            for w in range(1, 5):
                rows.append(dict(bench="duty_sweep", kernel=GEMM + name, precision=prec, duty_target=d, window=w,
                                 duty_frac=d, clock_event_reasons=4 if capped else 0, time_s=1e-3, power_w=p,
                                 sm_clock_mhz=f, temperature_c=60, gpu_name=gpu))
    return rows


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLS)
        w.writeheader()
        w.writerows(rows)
    return path




def test_each_kernel_gives_a_point_of_h_and_the_fit_recovers_the_exponent(tmp_path):
    df = read_csv(_write(tmp_path / "a.csv", _board()))
    points = {(p["kernel"].rsplit("=", 1)[1], p["precision"]): p for p in pa.kernel_points(df)}
    # zeros: 120 + 450 W < 700 W, never capped; the others at f = 1980 (580 / D)^(1/1.6)
    assert not points[("zeros", "bf16")]["capped"]
    for (name, prec), dyn in ((("pow2", "bf16"), 700.0), (("randn", "fp8-tensor"), 1400.0)):
        p = points[(name, prec)]
        assert p["capped"] and p["dynamic_w"] == pytest.approx(dyn)
        assert p["h"] == pytest.approx(580.0 / dyn) and p["clock_mhz"] == pytest.approx(1980 * (580 / dyn) ** (1 / 1.6))
    assert points[("randn", "bf16")]["held_out"] and not points[("randn", "fp8-tensor")]["held_out"]
    fit = pa.fit_local_exponent(list(points.values()))
    # pow2 (1,758 MHz) is above the fit's 1,700 MHz: half zeros (1,474) and FP8 (1,137 MHz) fit
    assert fit["n"] == 2 and fit["k"] == pytest.approx(1.6) and fit["span_mhz"] > 300
    crit = pa.criteria(df)
    assert all(ok for ok, _ in crit.values()), crit
    assert crit["H1"][1]["error"] == pytest.approx(0.0, abs=1e-9)


def test_the_criteria_fail_where_the_records_say_so(tmp_path):
    # the held-out GEMM measured 5% above the clock the other kernels' curve gives it: H1 fails (1/1.05 - 1)
    df = read_csv(_write(tmp_path / "b.csv", _board(held_out_clock_scale=1.05)))
    crit = pa.criteria(df)
    assert not crit["H1"][0] and crit["H1"][1]["error"] == pytest.approx(1 / 1.05 - 1, abs=1e-9)
    # another GPU: M1 fails (the 500 W card is H100 silicon)
    df = read_csv(_write(tmp_path / "c.csv", _board(gpu="NVIDIA H200")))
    assert not pa.criteria(df)["M1"][0]
    # an exponent outside [1, 4]: M3 fails
    df = read_csv(_write(tmp_path / "d.csv", _board(k=0.8)))
    assert not pa.criteria(df)["M3"][0]


def test_both_settings_of_the_switch(tmp_path):
    (tmp_path / "h100").mkdir()
    (tmp_path / "h100" / "power.csv").write_text("config,power_w\nidle,118.0\n")
    _write(tmp_path / "h100" / pa.ACTIVITY_RECORDS, _board(k=1.6))
    assumed = pc.power_law("h100", tmp_path, adopt=False, copy_load=False, activity=False)
    measured = pc.power_law("h100", tmp_path, adopt=False, copy_load=False, activity=True)
    assert (assumed.static_w, assumed.exponent) == (118.0, pc.DYNAMIC_POWER_EXPONENT)
    assert measured.static_w == 118.0 and measured.exponent == pytest.approx(1.6)
    default = pc.power_law("h100", tmp_path, adopt=False, copy_load=False)
    assert default == (measured if pc.ADOPT_ACTIVITY_POWER_LAW else assumed)
    # a lower exponent slows the same 713 W kernel's clock more under 500 W
    (tmp_path / "h100" / "sustained.csv").write_text(
        "config,precision,phase,window,power_w,sm_clock_mhz\n"
        + "".join(f"gemm m=8192 n=4096 k=7168,bf16,sustained,{w},713,1350\n" for w in range(1, 5)))
    slow, fast = (pc.clock_frac_at(500.0, "h100", root=tmp_path, law=lw) for lw in (measured, assumed))
    assert slow == pytest.approx(((500 - 118) / (713 - 118)) ** (1 / 1.6)) and slow < fast
    assert not math.isnan(slow)


def test_the_switch_is_off_until_the_rule_is_judged():
    assert pc.ADOPT_ACTIVITY_POWER_LAW is False
    assert pc.power_law() == pc.power_law(adopt=False, copy_load=False, activity=False)


def test_the_committed_records_fail_the_rule_and_the_switch_stays_off():
    # campaign s22tt (one H100 at 700 W): the data patterns held at the limit settle at different clocks
    # (1,365-1,515 MHz) with the same dynamic power at the maximum clock (838-852 W), so they trace no
    # common curve: the local exponent is ~0.07 (M3) and the held-out GEMM's clock is missed by ~30% (H1)
    df = read_csv(pc.rec.MEASUREMENTS_DIR / "h100" / pa.ACTIVITY_RECORDS)
    crit = {name: ok for name, (ok, _) in pa.criteria(df).items()}
    assert crit == {"M1": True, "M2": True, "M3": False, "H1": False}
    dyn = [p["dynamic_w"] for p in pa.kernel_points(df) if p["capped"] and p["kernel"].endswith(("pow2", "half_zeros", "randn"))]
    assert len(dyn) == 4 and max(dyn) - min(dyn) < 0.03 * min(dyn)
    assert pc.ADOPT_ACTIVITY_POWER_LAW is False

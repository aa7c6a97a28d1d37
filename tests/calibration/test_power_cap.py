"""calibration.power_cap's per-kernel table: a kernel's steady time, power and clock from held windows,
and its speed under a lower power limit by the module's law, read the way the campaign s11cp8b
(real/bench/cp_sustained.py) writes sustained.csv."""

import csv

import pytest

from calibration import power_cap as pc


def _write(path, rows):
    cols = ["bench", "config", "precision", "phase", "window", "time_s", "power_w", "sm_clock_mhz"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for r in rows:
            w.writerow(r)


def _kernel(config, burst_s, steady_s, power_w, clock, windows=4):
    rows = [dict(bench="cp_sustained", config=config, precision="bf16", phase="burst", window=0, time_s=burst_s,
                 power_w="", sm_clock_mhz=1980)]
    for w in range(1, windows + 1):   # the first half of the windows is warming up: a faster, hotter call
        early = w <= windows // 2
        rows.append(dict(bench="cp_sustained", config=config, precision="bf16", phase="sustained", window=w,
                         time_s=burst_s if early else steady_s, power_w=power_w + (50 if early else 0),
                         sm_clock_mhz=clock))
    return rows


def test_a_kernel_below_the_limit_keeps_its_clock_one_above_it_slows(tmp_path):
    path = tmp_path / "sustained.csv"
    _write(path, _kernel("attention cool", 0.010, 0.010, 450.0, 1950) + _kernel("gemm hot", 0.010, 0.011, 713.0, 1350))
    rows = {r["config"]: r for r in pc.kernel_power_table(path, 500.0, idle_w=118.0)}
    cool, hot = rows["attention cool"], rows["gemm hot"]
    assert cool["power_w"] == 450.0 and cool["clock_frac"] == 1.0 and cool["factor"] == pytest.approx(1.0)
    # the steady half only: 11 ms against a 10 ms burst, 713 W -> the law's ((500-118)/(713-118))^(1/3)
    assert hot["sustained_ratio"] == pytest.approx(10 / 11)
    assert hot["clock_frac"] == pytest.approx(((500 - 118) / (713 - 118)) ** (1 / 3))
    assert hot["factor"] == pytest.approx(hot["sustained_ratio"] * hot["clock_frac"])
    # no faster than the maximum clock allows, however low the draw against the limit
    assert pc.kernel_power_table(path, 700.0, idle_w=118.0)[1]["clock_frac"] <= pc.MAX_SM_CLOCK_MHZ / 1350


def test_the_committed_gemm_record_gives_the_catalog_clock(tmp_path):
    # the H100 sustained.csv's BF16 GEMM is the kernel clock_frac_at derives the 500 W clock from
    rows = pc.kernel_power_table(pc.rec.MEASUREMENTS_DIR / "h100" / "sustained.csv", 500.0, pc.idle_power_w("h100"))
    gemm = next(r for r in rows if r["config"].startswith("gemm m=8192") and r["precision"] == "bf16")
    assert gemm["clock_frac"] == pytest.approx(pc.clock_frac_at(500.0), rel=0.01)


def test_cli_refuses_a_folder_without_records(tmp_path, capsys):
    assert pc.main([str(tmp_path)]) == 2
    assert "no sustained.csv" in capsys.readouterr().err


def test_flash_attention_s_own_clock_from_the_committed_records():
    # the s11cp8b records: FA2 at a CP rank's three call shapes; the derivation reads only those rows
    lo, mid, hi = (pc.attention_clock_frac_at(w) for w in (400.0, 500.0, 600.0))
    assert 0 < lo < mid < hi <= 1.0
    table = pc.kernel_power_table(pc.rec.MEASUREMENTS_DIR / "h100" / pc.ATTENTION_RECORDS, 500.0, pc.idle_power_w("h100"))
    flash = [r for r in table if r["config"].startswith(pc.ATTENTION_KERNEL)]
    assert len(flash) == 3 and mid == pytest.approx(sum(r["clock_frac"] for r in flash) / 3, rel=0.01)


def _fa2_rows(factor_by_key, power_w=600.0):
    """fa2_sustained rows: for each (pass, length) a burst and held windows at `power_w`, the steady
    time burst / ratio."""
    rows = []
    for (p, n), ratio in factor_by_key.items():
        config = f"attention flash h=32 d=128 b={65536 // n} q={n} kv={n} causal {p}"
        rows += [{**r, "bench": "fa2_sustained"} for r in _kernel(config, 0.010, 0.010 / ratio, power_w, 1750)]
    return rows


def test_fa2_rule_one_factor_unless_pass_or_length_moves_it(tmp_path):
    flat = {(p, n): 0.99 for p in ("fwd", "bwd") for n in (8192, 16384, 32768)}
    (tmp_path / "h100").mkdir()
    with open(tmp_path / "h100" / "power.csv", "w") as f:
        f.write("config,power_w\nidle,118\n")
    _write(tmp_path / "h100" / pc.FA2_RECORDS, _fa2_rows(flat))
    law = ((500 - 118) / (600 - 118)) ** (1 / 3)
    factors = pc.fa2_factors(500.0, root=tmp_path)
    assert factors[("bwd", 8192)] == pytest.approx(0.99 * law)
    ratio = pc.profile_attention_ratio("h100")
    assert pc.fa2_catalog_entry(500.0, root=tmp_path) == {"attention_clock_frac": round(0.99 * law / ratio, 3)}
    # 8K's backward 5% slower held than in a burst: one figure per pass and length
    _write(tmp_path / "h100" / pc.FA2_RECORDS, _fa2_rows({**flat, ("bwd", 8192): 0.94}))
    entry = pc.fa2_catalog_entry(500.0, root=tmp_path)["attention_clock_fracs"]
    assert len(entry) == 6 and ["bwd", 8192, round(0.94 * law / ratio, 3)] in entry
    # a GPU drawing less than the limit keeps its clock: the factor is its burst/steady ratio alone
    assert pc.fa2_factors(700.0, root=tmp_path)[("fwd", 8192)] == pytest.approx(0.99)


# ---- s14tt: the law measured by a duty sweep (calibration.power_cap.fit_power_law and the rule's criteria)

def _duty_sweep(static_w=160.0, exponent=2.5, dyn_gemm=1500.0, dyn_fa2=900.0, limit_w=700.0):
    """duty_sweep.csv rows a board following P = P_s + d D (f / f_max)^k would give at `limit_w`."""
    cols = ["bench", "kernel", "precision", "duty_target", "window", "duty_frac", "clock_event_reasons",
            "time_s", "power_w", "sm_clock_mhz", "temperature_c"]
    rows = [dict(bench="duty_sweep", kernel="idle", precision="", duty_target=0.0, window=1, duty_frac=0.0,
                 clock_event_reasons=1, time_s=3.0, power_w=118.0, sm_clock_mhz=345, temperature_c=30)]
    for kernel, dyn, targets in (("gemm m=8192 n=4096 k=7168", dyn_gemm, (1.0, 0.8, 0.6, 0.45, 0.3, 0.2, 0.1)),
                                 ("attention flash h=32 d=128 b=8 q=8192 kv=8192 causal fwd", dyn_fa2,
                                  (1.0, 0.8, 0.6, 0.45, 0.3, 0.15))):
        for d in targets:
            f = min(pc.MAX_SM_CLOCK_MHZ, pc.MAX_SM_CLOCK_MHZ * ((limit_w - static_w) / (d * dyn)) ** (1 / exponent))
            capped = f < pc.MAX_SM_CLOCK_MHZ
            p = limit_w if capped else static_w + d * dyn
            for w in range(1, 6):
                rows.append(dict(bench="duty_sweep", kernel=kernel, precision="bf16", duty_target=d, window=w,
                                 duty_frac=d, clock_event_reasons=4 if capped else 0, time_s=1e-3, power_w=p,
                                 sm_clock_mhz=f, temperature_c=60))
    return cols, rows


def _write_duty(path, static_w=160.0, exponent=2.5):
    cols, rows = _duty_sweep(static_w, exponent)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        w.writerows(rows)


def test_the_fit_recovers_the_law_and_the_held_out_kernel_s_clocks(tmp_path):
    path = tmp_path / "duty_sweep.csv"
    _write_duty(path)
    df = pc.read_csv(path)
    law = pc.fit_power_law(df)
    assert law.static_w == pytest.approx(160.0, abs=1.0) and law.exponent == pytest.approx(2.5, abs=0.02)
    assert law.dynamic_w == pytest.approx(1500.0, rel=0.01) and law.rms_w < 1.0
    assert pc.kernel_dynamic_w(df, law) == pytest.approx(900.0, rel=0.01)
    check = pc.law_check(df, law)
    assert len(check) == 2 * 3 and all(abs(r["error"]) < 0.005 for r in check)   # duty 1.0 and 0.8 capped, 3 windows each
    crit = pc.adoption_criteria(df, 700.0)
    assert all(ok for ok, _ in crit.values())
    # the criteria can fail: a 500 W board, or an exponent outside the rule's range
    assert not pc.adoption_criteria(df, 500.0)["1 limit, capped and free points"][0]
    _write_duty(path, exponent=5.0)
    assert not pc.adoption_criteria(pc.read_csv(path), 700.0)["2 fit"][0]


def test_both_settings_of_the_switch(tmp_path):
    (tmp_path / "h100").mkdir()
    with open(tmp_path / "h100" / "power.csv", "w") as f:
        f.write("config,power_w\nidle,118.0\n")
    _write_duty(tmp_path / "h100" / "duty_sweep.csv")
    assumed = pc.power_law("h100", tmp_path, adopt=False)
    measured = pc.power_law("h100", tmp_path, adopt=True)
    assert (assumed.static_w, assumed.exponent) == (118.0, pc.DYNAMIC_POWER_EXPONENT)
    assert measured.static_w == pytest.approx(160.0, abs=1.0) and measured.exponent == pytest.approx(2.5, abs=0.02)
    # the default follows the module's switch
    default = pc.power_law("h100", tmp_path)
    assert default == (measured if pc.ADOPT_MEASURED_POWER_LAW else assumed)
    # a higher static part and a lower exponent both slow the capped clock of the same 713 W kernel
    (tmp_path / "h100" / "sustained.csv").write_text(
        "config,precision,phase,window,power_w,sm_clock_mhz\n"
        + "".join(f"gemm m=8192 n=4096 k=7168,bf16,sustained,{w},713,1350\n" for w in range(1, 5)))
    slow, fast = (pc.clock_frac_at(500.0, "h100", root=tmp_path, law=lw) for lw in (measured, assumed))
    assert slow == pytest.approx(((500 - measured.static_w) / (713 - measured.static_w)) ** (1 / measured.exponent))
    assert fast == pytest.approx(((500 - 118) / (713 - 118)) ** (1 / 3)) and slow < fast


def test_the_committed_duty_sweep_fails_the_rule_and_the_switch_stays_off():
    # s14tt's records (one H100 at 700 W): the sweep has capped and free points, but the averaged law
    # does not fit them (the cap's window is shorter than the sweep's periods), so nothing is adopted
    df = pc.read_csv(pc.rec.MEASUREMENTS_DIR / "h100" / pc.DUTY_RECORDS)
    crit = {name: ok for name, (ok, _) in pc.adoption_criteria(df, 700.0).items()}
    assert crit == {"1 limit, capped and free points": True, "2 fit": False, "3 held-out FA2 clocks": False}
    assert pc.ADOPT_MEASURED_POWER_LAW is False
    assert pc.power_law() == pc.power_law(adopt=False)


def test_the_free_regime_s_static_part_is_the_idle_power():
    # what the sweep does show, where the cap does not act: at the maximum clock the board draws the idle
    # power plus the kernel's share: the line's intercept is the assumed law's static part (power.csv idle)
    # within twice the windows' scatter (GEMM 118 W, rms 14 W; FA2 104 W, rms 26 W: one 12 ms call a period)
    df = pc.read_csv(pc.rec.MEASUREMENTS_DIR / "h100" / pc.DUTY_RECORDS)
    idle = pc.idle_power_w("h100")
    for kernel in (pc.LAW_KERNEL, pc.CHECK_KERNEL):
        static_w, dynamic_w, rms_w = pc.free_regime_line(df, kernel)
        assert abs(static_w - idle) < 2 * rms_w and 700.0 < dynamic_w < 1000.0, kernel

"""calibration.copy_load (docs/notes/s15tt_rule.md part C) on synthetic copy_load.csv files written
the way real/bench/copy_load.py writes them: the exponent recovered from a known law, the rule's
criteria holding on consistent records and failing where they must, and both settings of
calibration.power_cap.ADOPT_COPY_LOAD_LAW."""

import csv
import math

import pytest

from calibration import copy_load as cl
from calibration import power_cap as pc

COLS = ["bench", "kernel", "precision", "copy_streams", "window", "time_s", "copy_bytes_per_s", "power_w",
        "sm_clock_mhz", "clock_event_reasons", "gpu_name"]
KERNELS = (("gemm m=8192 n=4096 k=7168", "bf16", 600.0), ("gemm m=32768 n=14336 k=4096", "fp8-tensor", 610.0),
           ("attention flash h=32 d=128 b=8 q=8192 kv=8192 causal fwd", "bf16", 590.0))


def _records(path, k=2.0, idle=100.0, copy_w=40.0, copy_rate=1.2e12, beside_rate=1.0, capped=True,
             fp8_k=None, streams=(0, 1, 2, 4)):
    """Every kernel at the 700 W limit: its SM budget D(n) = 700 - idle - copy_w n, its speed
    s0 (D(n) / D(0))^(1/k) (fp8_k: another exponent for the FP8 GEMM)."""
    rows = [dict(bench="copy_load", kernel="idle", precision="", copy_streams=0, window=1, time_s=3.0,
                 copy_bytes_per_s=0.0, power_w=idle, sm_clock_mhz=345, clock_event_reasons=0, gpu_name="NVIDIA H100 80GB HBM3")]
    for n in streams[1:]:
        for w in (1, 2, 3):
            rows.append(dict(bench="copy_load", kernel="copies only", precision="", copy_streams=n, window=w,
                             time_s="", copy_bytes_per_s=copy_rate * n, power_w=idle + copy_w * n, sm_clock_mhz=1980,
                             clock_event_reasons=0, gpu_name="NVIDIA H100 80GB HBM3"))
    for name, prec, d0 in KERNELS:
        kk = fp8_k if (fp8_k and prec == "fp8-tensor") else k
        for n in streams:
            d = 700.0 - idle - copy_w * n
            speed = 100.0 * (d / (700.0 - idle)) ** (1.0 / kk)
            for w in (1, 2, 3, 4):
                rows.append(dict(bench="copy_load", kernel=name, precision=prec, copy_streams=n, window=w,
                                 time_s=1.0 / speed, copy_bytes_per_s=copy_rate * n * beside_rate, power_w=700.0,
                                 sm_clock_mhz=1300 * speed / 100.0, clock_event_reasons=4 if capped else 0,
                                 gpu_name="NVIDIA H100 80GB HBM3"))
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=COLS)
        wr.writeheader()
        wr.writerows(rows)
    return path


def test_exponent_recovered_and_criteria_hold(tmp_path):
    df = cl.read_csv(_records(tmp_path / "copy_load.csv", k=2.0))
    k, rms = cl.fit_exponent(df)
    assert k == pytest.approx(2.0, rel=1e-6) and rms < 1e-9
    # a static part taken higher than the records' (a clocked idle board against a file's down-clocked
    # idle row) moves only the kernel-alone point's budget: the exponent shifts
    assert cl.fit_exponent(df, idle=118.0)[0] != pytest.approx(2.0, rel=1e-3)
    assert cl.copies_alone(df)[4][0] == pytest.approx(160.0)
    got = cl.criteria(df)
    assert all(holds for holds, _ in got.values()), got
    assert got["M6 held out FP8 / FA2"][1]["fp8"]["error"] == pytest.approx(0.0, abs=1e-9)


def test_criteria_fail_where_they_must(tmp_path):
    # the copies draw too little to move the clock
    weak = cl.criteria(cl.read_csv(_records(tmp_path / "a.csv", copy_w=5.0)))
    assert not weak["M2 copies draw >= 60 W, uncapped"][0] and not weak["M3 GEMMs capped, slowed >= 3%"][0]
    # the copies slow down beside the kernel: their draw there is not the one measured alone
    slowed = cl.criteria(cl.read_csv(_records(tmp_path / "b.csv", beside_rate=0.7)))
    assert not slowed["M4 copy rate beside GEMMs within 15%"][0]
    # the FP8 GEMM follows another law than the BF16 one
    other = cl.criteria(cl.read_csv(_records(tmp_path / "c.csv", k=2.0, fp8_k=1.0)))
    assert not other["M6 held out FP8 / FA2"][0]
    # not power-capped: not the regime the law is read in
    assert not cl.criteria(cl.read_csv(_records(tmp_path / "d.csv", capped=False)))["M1 H100 at 700 W, capped"][0]


def test_both_settings_of_the_switch(tmp_path, monkeypatch):
    (tmp_path / "h100").mkdir()
    # the law's static part is power.csv's idle (a clocked idle board), here the synthetic records' own
    (tmp_path / "h100" / "power.csv").write_text("config,power_w\nidle,100.0\n")
    _records(tmp_path / "h100" / "copy_load.csv", k=1.7)
    (tmp_path / "h100" / "sustained.csv").write_text(
        "config,precision,phase,window,power_w,sm_clock_mhz\n"
        + "".join(f"gemm m=8192 n=4096 k=7168,bf16,sustained,{w},713,1350\n" for w in range(1, 5)))
    assumed = pc.power_law("h100", tmp_path, copy_load=False)
    measured = pc.power_law("h100", tmp_path, copy_load=True)
    assert (assumed.static_w, assumed.exponent) == (100.0, pc.DYNAMIC_POWER_EXPONENT)
    assert (measured.static_w, measured.source) == (100.0, "copy load")
    assert measured.exponent == pytest.approx(1.7, rel=1e-6)
    monkeypatch.setattr(pc, "ADOPT_COPY_LOAD_LAW", True)
    assert pc.power_law("h100", tmp_path) == measured
    monkeypatch.setattr(pc, "ADOPT_COPY_LOAD_LAW", False)
    assert pc.power_law("h100", tmp_path) == assumed
    # a lower exponent slows the 500 W clock of the same 713 W kernel
    slow, fast = (pc.clock_frac_at(500.0, "h100", root=tmp_path, law=lw) for lw in (measured, assumed))
    assert slow == pytest.approx(((500 - 100) / (713 - 100)) ** (1 / 1.7)) and slow < fast
    assert not math.isnan(slow)


def test_committed_records_fail_the_rule_as_the_note_says():
    """h100/copy_load.csv (campaign s15ttpw): M1-M3 hold, M4-M6 fail (the copies lose most of their
    rate beside a kernel), so ADOPT_COPY_LOAD_LAW stays off."""
    from calibration import records as rec
    df = cl.read_csv(rec.MEASUREMENTS_DIR / "h100" / cl.COPY_LOAD_RECORDS)
    got = cl.criteria(df, idle=pc.idle_power_w("h100"))
    holds = {name.split()[0]: ok for name, (ok, _) in got.items()}
    assert holds == {"M1": True, "M2": True, "M3": True, "M4": False, "M5": False, "M6": False}
    assert not pc.ADOPT_COPY_LOAD_LAW

"""calibration.rank_clock and pipeline.ADOPT_RANK_POWER_CLOCK (s31clk, issue 13): a pipeline rank's SM clock under the
power limit from its predicted duty and kernel mix; the committed law is the live fit on s30fb's clock records; the
switch moves only capped ranks' compute-bound kernels and never a one-GPU (pp 1) row."""

import math

import pandas as pd
import pytest

from calibration import pipeline as pipe
from calibration import prereg, rank_clock, s31clk
from calibration.power_cap import MAX_SM_CLOCK_MHZ
from calibration.records_io import read_csv, read_json
from calibration.whole_step import gpu_spec
from twin.core.schedules import build_schedule

LAW = {"static_w": 100.0, "compute_w": 1000.0, "memory_w": 300.0}


def test_rank_below_the_limit_keeps_the_maximum_clock():
    # duty 0.3 compute + 0.2 memory: 100 + 300 + 60 = 460 W at f_max, under 700 W
    assert rank_clock.power_w(MAX_SM_CLOCK_MHZ, 0.3, 0.2, 1.0, LAW) == pytest.approx(460.0)
    assert rank_clock.rank_clock_mhz(0.3, 0.2, 1.0, LAW, 700.0) == MAX_SM_CLOCK_MHZ
    assert rank_clock.clock_scale(MAX_SM_CLOCK_MHZ) == {}


def test_capped_rank_settles_where_its_power_meets_the_limit():
    # duty 0.6 compute + 0.4 memory, a full timeline: 100 + 600 + 120 = 820 W at f_max > 700 W
    f = rank_clock.rank_clock_mhz(0.6, 0.4, 1.0, LAW, 700.0)
    assert f < MAX_SM_CLOCK_MHZ and rank_clock.power_w(f, 0.6, 0.4, 1.0, LAW) == pytest.approx(700.0, abs=0.05)
    # the stretched compute outgrows the step (0.6 x f_max / f + 0.4 > 1): the step follows, so the duty stays 1;
    # at x = f / f_max: 100 + x^3 (0.6 / x x 1000 + 0.4 x 300) / (0.6 / x + 0.4) = 700 W
    x = f / MAX_SM_CLOCK_MHZ
    assert 100 + x ** 3 * (600 / x + 120) / (0.6 / x + 0.4) == pytest.approx(700.0, abs=0.05)
    scale = rank_clock.clock_scale(f)
    assert scale[("fb", "gemm")] == scale[("w", "attention")] == pytest.approx(MAX_SM_CLOCK_MHZ / f)
    assert ("fb", "memory") not in scale
    assert math.isnan(rank_clock.rank_clock_mhz(0.6, 0.4, 1.0, LAW, 90.0))   # a limit under the static part


def test_rank_kernel_seconds_follow_the_program():
    # 1F1B at pp 2, 2 micro-batches: each rank runs its stage's F twice and BW twice (B + W)
    sched = build_schedule("1f1b", 2, 2)
    kern = {0: {"F": {"gemm": 1.0, "memory": 0.5}, "B": {"attention": 2.0}, "W": {"grouped_gemm": 1.0, "nccl": 9.0}},
            1: {"F": {"gemm": 3.0}, "B": {"memory": 1.0}, "W": {"launch": 0.25}}}
    assert rank_clock.rank_kernel_s(sched, kern) == [{"compute": 2 * (1 + 2 + 1), "memory": 2 * 0.5},
                                                     {"compute": 2 * 3, "memory": 2 * (1 + 0.25)}]


@pytest.fixture(scope="module")
def inputs():
    return prereg.two_gpu_inputs("h200")


def _row(**kw):
    return pd.Series({"model": "llama3-8b-slice", "schedule": "dualpipev", "pp": 2, "ep": 1, "dp": 1,
                      "num_microbatches": 4, "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16",
                      "num_layers": 4, **kw})


def test_switch_slows_the_capped_rank_only_and_never_one_gpu(inputs):
    profile, acc, host, hold = inputs
    gpu = gpu_spec("h200")
    with s31clk.switch(False):
        b, b_step, _ = pipe.simulate_row(_row(), gpu, profile, acc, host, None, None, hold)
        one_b = pipe.simulate_row(_row(pp=1, schedule="1f1b"), gpu, profile, acc, host, None, None, hold)[1]
    with s31clk.switch(True):
        c, c_step, det = pipe.simulate_row(_row(), gpu, profile, acc, host, None, None, hold)
        one_c = pipe.simulate_row(_row(pp=1, schedule="1f1b"), gpu, profile, acc, host, None, None, hold)[1]
    # DualPipeV's end-stage rank (0) is held by the limit, rank 1 is not (the law, committed inputs)
    f0, f1 = det["rank_clock_mhz"]
    assert f0 < 1800 and f1 == MAX_SM_CLOCK_MHZ
    assert c_step > b_step and c.busy_s[0] > b.busy_s[0] and c.busy_s[1] == pytest.approx(b.busy_s[1], rel=1e-9)
    assert one_c == one_b


def test_committed_law_is_the_live_fit():
    law, points = s31clk.fit()
    committed = rank_clock.RANK_POWER[gpu_spec("h200").name]
    assert {k: round(law[k], 1) for k in ("static_w", "compute_w", "memory_w")} == committed
    # the fitting records' capped rank (DualPipeV rank 0) is the lower clock of each configuration, law and measured
    for a, b in zip(points[::2], points[1::2]):
        assert a["rank"] == 0 and b["rank"] == 1
        assert a["clock_mhz"] < b["clock_mhz"] and a["law_clock_mhz"] < b["law_clock_mhz"]


def test_registered_clocks_are_the_live_law(inputs):
    """The pre-registered predictions (docs/notes/s31clk_rule.md) hold the law's clocks as the code computes them now:
    two rows recomputed (llama3's DualPipeV n8 on two GPUs, its one-GPU step)."""
    preds = read_csv(s31clk.PREDICTIONS_FILE)
    assert len(preds) == 24 + len(s31clk.ONE_GPU_CASES) and preds["code_commit"].nunique() == 1
    for pp, sched in ((2, "dualpipev"), (1, "1f1b")):
        sel = preds[(preds["model"] == "llama3-8b-slice") & (preds["pp"] == pp) & (preds["schedule"] == sched)
                    & (preds["num_microbatches"] == 8)]
        row = sel.iloc[0][s31clk.ROW_KEYS].to_dict()
        live = s31clk.law_clocks(row, inputs)
        assert [round(x, 3) for x in live] == [round(float(sel.iloc[0][f"law_clock_r{k}_mhz"]), 3) for k in range(pp)]


def test_config_clocks_take_each_configuration_s_settled_busy_samples():
    """Two configurations written at 10 s and 20 s; samples every 100 ms on two GPUs: the first configuration's busy
    stretch (3-8 s) at 1700 / 1950 MHz after a 5-sample transient at 1980, the second's (13-18 s) at 1800 / 1800; idle
    samples (120 W) between. Each row gets its own stretch's medians, the transient dropped."""
    t0 = pd.Timestamp("2026-11-29T00:00:00Z")
    samples = []
    for k in range(250):
        t = k / 10
        busy1, busy2 = 3 <= t < 8, 13 <= t < 18
        for g in (0, 1):
            if busy1:
                f = 1980 if t < 3.5 else (1700 if g == 0 else 1950)
                p = 690
            elif busy2:
                f, p = (1980 if t < 13.5 else 1800), 650
            else:
                f, p = 1980, 120
            samples.append({"timestamp_utc": (t0 + pd.Timedelta(seconds=t)).isoformat(), "gpu_index": g,
                            "sm_clock_mhz": f, "power_w": p})
    steps = pd.DataFrame([{"model": "m", "schedule": "zb1p", "pp": 2, "num_microbatches": 8,
                           "timestamp_utc": (t0 + pd.Timedelta(seconds=10)).isoformat()},
                          {"model": "m", "schedule": "zb1p", "pp": 2, "num_microbatches": 12,
                           "timestamp_utc": (t0 + pd.Timedelta(seconds=20)).isoformat()}])
    got = s31clk.config_clocks(steps, pd.DataFrame(samples))
    assert [g["clock_mhz"] for g in got] == [[1700.0, 1950.0], [1800.0, 1800.0]]
    assert [g["samples"] for g in got] == [45, 45] and got[0]["power_w"] == [690.0, 690.0]


def test_raw_nvidia_smi_samples_become_a_record(tmp_path):
    """The campaigns' raw nvidia-smi CSV (units in the header and the values) filed in s30fb's gpu_clocks schema, every
    row carrying the run's GPU name and versions; a truncated last line (the sampler killed) is dropped."""
    raw = ("timestamp, index, clocks.current.sm [MHz], clocks.current.memory [MHz], power.draw [W], power.limit [W], "
           "temperature.gpu\n"
           "2026/11/29 00:10:00.123, 0, 1695 MHz, 3201 MHz, 688.40 W, 700.00 W, 51\n"
           "2026/11/29 00:10:00.125, 1, 1920 MHz, 3201 MHz, 623.10 W, 700.00 W, 47\n"
           "2026/11/29 00:10:00.2")
    src = tmp_path / "src"
    src.mkdir()
    (src / "gpu_clocks.csv").write_text(raw)
    (src / "pipeline_step.csv").write_text("bench,time_s\npipeline_step,0.5\n")
    env = {"gpu_name": "NVIDIA H200", "max_sm_clock_mhz": 1980.0, "driver_version": "580.159.04",
           "torch_version": "2.11.0+cu130", "cuda_version": "13.0", "nccl_version": "2.28.9", "num_gpus": 2}
    (src / "env_pipeline_pp2.json").write_text(__import__("json").dumps(env))
    written = s31clk.file_folder(src, tmp_path / "dest")
    assert sorted(written) == ["env_pipeline_pp2.json", "gpu_clocks.csv.xz", "pipeline_step.csv.xz"]
    rec = read_csv(tmp_path / "dest" / "gpu_clocks.csv")
    assert rec["timestamp_utc"].tolist() == ["2026-11-29T00:10:00.123+00:00", "2026-11-29T00:10:00.125+00:00"]
    assert rec["sm_clock_mhz"].tolist() == [1695, 1920] and rec["power_w"].tolist() == [688.4, 623.1]
    assert (rec["gpu_name"] == "NVIDIA H200").all() and (rec["driver_version"] == "580.159.04").all()
    assert (rec["power_limit_w"] == 700.0).all() and (rec["split"] == "holdout").all()


def test_judgement_record_and_live_part_a():
    """calibration/s31clk_judgement.json (`python -m calibration.s31clk record`): the verdict follows its figures (A1 and
    A2 missed, part B's C1-C3 met, the guards failed, so not adopted and the switch off); part A recomputed live from
    the filed records equals the record (the clocks are records and the law, no twin pricing)."""
    j = read_json(s31clk.JUDGEMENT_FILE)
    a = j["clocks"]
    assert (a["A1_within"], a["A1_rows"], a["A2_within"], a["A2_rows"], a["A2_capped_agree"]) == (3, 5, 32, 48, 46)
    assert a["A1"] is False and a["A2"] is False   # A2: 32 / 48 within 60 MHz < 75%, though 46 / 48 agree on held
    assert all(v for k, v in j["part_b"].items() if k.startswith("C")) and not j["part_b"]["lost_rank_rows"]
    assert j["C"]["num_within"] == 45 and j["B"]["num_within"] == 37
    assert not j["guards"]["G1_no_rank_row_lost"] and not j["guards"]["G2_steps_not_worse"]
    assert j["adopt"] is False and pipe.ADOPT_RANK_POWER_CLOCK is False
    live = s31clk.clock_criteria(read_csv(s31clk.PREDICTIONS_FILE), s31clk.measured_clocks())
    assert {k: v for k, v in live.items() if k != "rows"} == {k: v for k, v in a.items() if k != "rows"}
    # the limit holds 1F1B's and ZB1P's last rank (rank 1) on llama3-8b-slice, well below the law's 1,701 MHz
    held = [r for r in live["rows"] if r["model"] == "llama3-8b-slice" and r["schedule"] in ("1f1b", "zb1p")
            and r["rank"] == 1]
    assert len(held) == 4 and all(r["measured_mhz"] < 1600 < r["law_mhz"] for r in held)

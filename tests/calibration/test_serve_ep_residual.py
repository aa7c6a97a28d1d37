"""calibration/serve_ep_residual.py on made-up records: the phase windows, the repeat pairs and the
s9srv hostprobe summary."""

import numpy as np
import pandas as pd
import pytest

from calibration import serve_ep_residual as res


def _iterations(durations_s, gap_s=0.0004, run="r", rank=0, prefill=None):
    t, rows = 0.0, []
    for i, d in enumerate(durations_s):
        rows.append({"run_id": run, "rank": rank, "iteration": i, "start_s": t, "duration_s": d,
                     "prefill_tokens": 0 if prefill is None else prefill[i], "idle": 0})
        t += d + gap_s
    return pd.DataFrame(rows)


def test_host_state_windows_flags_the_slow_phase_and_drops_prompt_iterations():
    # 1 s of 5 ms decode iterations, then 1 s of 7.5 ms; every 10th iteration a 30 ms prompt one
    d = [0.005] * 200 + [0.0075] * 133
    pre = [100 if i % 10 == 0 else 0 for i in range(len(d))]
    d = [0.03 if p else x for x, p in zip(d, pre)]
    win = res.host_state_windows(_iterations(d, prefill=pre))
    assert len(win) >= 7 and set(win.run_id) == {"r"}
    fast, slow = win[~win.slow], win[win.slow]
    assert fast.duration_s.max() == pytest.approx(0.005) and slow.duration_s.min() == pytest.approx(0.0075)
    assert np.allclose(win.gap_s, 0.0004)
    assert slow.window.min() > fast.window.max()                       # the second second is the slow one


def test_repeat_pairs_compares_each_configuration_with_its_repeat():
    base = {"output_tokens_per_s": 1000.0, "ttft_p50_s": 0.01, "ttft_p99_s": 0.03, "tpot_p50_s": 0.005,
            "tpot_p99_s": 0.006}
    load = pd.DataFrame([{"run_id": "a-none", **base}, {"run_id": "a-core", **{**base, "tpot_p50_s": 0.006}},
                         {"run_id": "b-none", **base}])
    pairs = res.repeat_pairs(load)
    assert pairs.config.tolist() == ["a"]                               # b has no repeat
    row = pairs.iloc[0]
    assert row.tpot_p50_s_diff == pytest.approx(0.2) and not row.tpot_p50_s_within
    assert row.ttft_p50_s_diff == 0.0 and row.ttft_p50_s_within


def test_hostprobe_summary_reads_the_campaigns_records(tmp_path):
    n = 400
    slow = np.arange(n) >= 200                                          # the second half: a slow host
    d = pd.DataFrame({"iteration": np.arange(n), "start_s": np.cumsum(np.where(slow, 0.0075, 0.005)),
                      "duration_s": np.where(slow, 0.0075, 0.005), "prefill_tokens": 0, "phase": "decode",
                      "cpu_probe_s": np.where(slow, 1.5e-4, 1e-4), "exchange_s": np.where(slow, 6e-4, 4e-4),
                      "dispatch_s": 5e-4, "pre_dispatch_s": np.where(slow, 3e-3, 2e-3), "post_dispatch_s": 2e-3,
                      "steal_jiffies": np.where(np.arange(n) % 10 == 0, np.arange(n) // 10, np.nan),
                      "busy_jiffies": np.where(np.arange(n) % 10 == 0, 9 * (np.arange(n) // 10), np.nan)})
    d.to_csv(tmp_path / "hostprobe_ep_r0.csv", index=False)
    pd.DataFrame([{"kernels_per_iteration": 420.0, "aten_ops_per_iteration": 900.0}]).to_csv(
        tmp_path / "hostprobe_kernels_ep_r0.csv", index=False)
    s = res.hostprobe_summary(tmp_path)["ep_r0"]
    assert s["decode_iterations"] == n and 0.3 < s["slow_window_share"] < 0.7
    assert s["cpu_probe_s_slow_over_fast"] == pytest.approx(1.5) and s["dispatch_s_slow_over_fast"] == pytest.approx(1.0)
    assert s["corr_duration_cpu_probe"] > 0.99 and s["steal_share_of_busy"] == pytest.approx(0.1)
    assert s["kernels_per_iteration"] == 420.0
    assert "mixed_prompt_iterations" in s and s["mixed_prompt_iterations"] == 0   # no mixed phase here


def test_hostprobe_mixed_phase_first_iterations_and_new_memory():
    n = 100
    dur = np.r_[np.full(50, 0.004), np.linspace(0.02, 0.01, n)]       # decode, then mixed prompts speeding up
    seg = np.r_[np.zeros(50), np.repeat(np.arange(10), 10)]           # new device memory every 10th iteration
    d = pd.DataFrame({"duration_s": dur, "prefill_tokens": np.r_[np.zeros(50), np.full(n, 300)],
                      "phase": ["decode"] * 50 + ["mixed"] * n, "segments_allocated": seg})
    s = res._mixed_phase(d)
    assert s["mixed_prompt_iterations"] == n and s["mixed_first_over_last"] == pytest.approx((0.02 - 9.5e-2 / 99) / (0.01 + 9.5e-2 / 99))
    assert s["mixed_new_memory_share"] == pytest.approx(0.09) and s["mixed_new_memory_over_none"] > 0


def test_first_met_class_orders_new_bin_over_new_size_over_met():
    """(s30ep) A prompt iteration's sizes against what its ranks had run (16-token bins): a rank's size in a
    bin it never ran is a new bin even where the other rank's size is met; an exact size new to its rank in a
    met bin is a new size; a size is new to its own rank only (rank 1 never ran 300)."""
    from calibration.serve_ep_residual import first_met_class
    met = {(0, 300), (1, 40)}
    bins = {(g, n // 16) for g, n in met}
    assert first_met_class((300, 40), met, bins, 16) == "met"
    assert first_met_class((301, 40), met, bins, 16) == "new_size"        # 301 // 16 == 300 // 16
    assert first_met_class((300, 300), met, bins, 16) == "new_bin"        # rank 1's bin 18 is new to it
    assert first_met_class((300, 41), met, bins, 16) == "new_size"

"""calibration/serve_decode_phases.py: the EP2 decode phase analysis on made-up records, and the two
findings of docs/notes/s20srv.md it rests on, on the committed 2xH100 records."""

import numpy as np
import pandas as pd
import pytest

from calibration import records as rec
from calibration import serve_decode_phases as ph
from calibration.records_io import read_csv


def _ranks(durations_s, rows=(4, 4), prefill=None, run="r", ctx=400, gap_s=0.0004):
    """Two EP ranks stepping in lockstep: rank 1 takes 0.1 ms longer than rank 0."""
    t, out = 0.0, []
    for i, d in enumerate(durations_s):
        for rank in (0, 1):
            pre = 0 if prefill is None or rank else prefill[i]
            out.append({"run_id": run, "rank": rank, "iteration": i, "start_s": t, "duration_s": d + 1e-4 * rank,
                        "prefill_tokens": pre, "decode_seqs": rows[rank], "decode_kv_tokens": rows[rank] * ctx, "idle": 0})
        t += d + 1e-4 + gap_s
    return pd.DataFrame(out)


def test_instance_decode_takes_the_slower_rank_and_drops_prompt_iterations():
    its = _ranks([0.005, 0.03, 0.005], rows=(3, 5), prefill=[0, 200, 0])
    dec = ph.instance_decode(its)
    assert dec.iteration.tolist() == [0, 2]                              # a prompt on rank 0 only still counts
    assert dec.duration_s.tolist() == pytest.approx([0.0051, 0.0051])    # the slower rank's
    assert dec.rows_per_rank.tolist() == [5, 5] and dec.ctx_tokens.tolist() == pytest.approx([400.0, 400.0])


def test_run_levels_finds_the_fast_level_and_the_slow_share():
    # 1.5 s at 5 ms, then 1.5 s at 7.5 ms (a slow host phase)
    its = _ranks([0.005] * 280 + [0.0075] * 190)
    lv = ph.run_levels(its).iloc[0]
    assert lv.fast_s == pytest.approx(0.0051, rel=0.02)
    assert 0.4 < lv.slow_share < 0.6
    assert lv.slow_over_fast == pytest.approx(7.6 / 5.1, rel=0.03)


def test_run_levels_of_one_level_has_no_slow_window():
    lv = ph.run_levels(_ranks([0.005] * 400)).iloc[0]
    assert lv.slow_share == 0.0 and np.isnan(lv.slow_over_fast)


def test_floor_by_workload_bins_rows_and_prompt_kinds():
    levels = pd.DataFrame({"run_id": ["a", "b", "c", "d"], "rows_per_rank": [1, 2, 8, 64],
                           "ctx_tokens": [1800, 380, 380, 380], "fast_s": [0.0044, 0.0045, 0.0046, 0.0052]})
    fl = ph.floor_by_workload(levels)
    assert fl.prompt.tolist() == ["long", "short", "short", "short"]    # long first, then rows ascending
    assert fl.rows_bin.tolist() == ["(0.0, 2.0]", "(0.0, 2.0]", "(4.0, 8.0]", "(32.0, 64.0]"]
    assert fl.fast_median_s.tolist() == pytest.approx([0.0044, 0.0045, 0.0046, 0.0052])


def test_long_over_short_compares_runs_against_their_session_reference():
    its = pd.concat([_ranks([0.005] * 300, run="short", rows=(2, 2), ctx=380),
                     _ranks([0.0075] * 300, run="long", rows=(2, 2), ctx=1800)])
    load = pd.DataFrame({"run_id": ["short", "long"], "timestamp_utc": ["2026-11-26T09:00:00Z", "2026-11-26T09:00:05Z"],
                         "duration_s": [2.0, 2.0]})
    phases = ph.phase_by_prompt(its, load)
    assert phases.session.nunique() == 1
    assert phases.set_index("run_id").slow_share.to_dict() == {"long": 1.0, "short": 0.0}
    los = ph.long_over_short(phases).iloc[0]
    assert los.long_over_short == pytest.approx(7.6 / 5.1, rel=0.01)


def test_hostprobe_phases_splits_the_segments_by_window(tmp_path):
    n = 400
    slow = np.arange(n) >= 200
    dur = np.where(slow, 0.0075, 0.005)
    d = pd.DataFrame({"start_s": np.cumsum(dur), "duration_s": dur, "host_s": dur - 3e-4, "prefill_tokens": 0,
                      "phase": "decode", "pre_dispatch_s": np.where(slow, 4e-3, 2.5e-3), "dispatch_s": 7e-4,
                      "post_dispatch_s": 9e-4, "exchange_s": 2.5e-4, "cpu_probe_s": np.where(slow, 1.5e-4, 1e-4)})
    path = tmp_path / "hostprobe_ep_r0.csv"
    d.to_csv(path, index=False)
    out = ph.hostprobe_phases(path)
    assert out.loc["slow_minus_fast_s", "pre_dispatch_s"] == pytest.approx(1.5e-3)
    assert out.loc["slow_minus_fast_s", "tail_s"] == pytest.approx(0.0)
    assert out.loc["fast_s", "slow_windows"] > 0


def test_committed_h100x2_closed_loop_decode_switches_between_two_host_levels():
    """The committed fit run ep2lo-closed-c4-short holds one workload (2 rows a rank) yet its decode
    windows sit at two levels ~1.5x apart (docs/notes/s20srv.md): the host's phase, not the batch."""
    its = read_csv(rec.MEASUREMENTS_DIR / "h100x2" / "serve_iterations.csv")
    lv = ph.run_levels(its[its.run_id == "ep2lo-closed-c4-short"]).iloc[0]
    assert lv.rows_per_rank == 2
    assert 0.2 < lv.slow_share < 0.8 and lv.slow_over_fast > 1.3


def test_s8srv_round1_fast_host_decode_level_does_not_follow_the_prompt_length():
    """On the host of s8srv round 1 (mostly in its fast phase) the long-prompt fit runs' decode (1-4 rows
    a rank, ~1800-token contexts) runs at the short-prompt runs' level within 5%."""
    folder = rec.MEASUREMENTS_DIR / "h100x2" / "s8srv_round1"
    load = read_csv(folder / "serve_load.csv")
    phases = ph.phase_by_prompt(read_csv(folder / "serve_iterations.csv"), load)
    phases = phases[phases.run_id.isin(load.run_id[load.split == "fit"])]
    los = ph.long_over_short(phases)
    assert len(los) == 1 and los.iloc[0].long_runs >= 4
    assert los.iloc[0].long_over_short == pytest.approx(1.0, abs=0.05)

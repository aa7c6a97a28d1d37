"""calibration.serve_idle_probe (docs/notes/s27serve3_rule.md): the idle-gap probe's summary separates the first replay
after a gap from the back-to-back replays after it, per condition."""

import pandas as pd
import pytest

from calibration import serve_idle_probe as sip


def _rows():
    rows = []
    for gap in (0.0, 0.002):
        for rnd in range(3):
            for k in range(4):
                first = k == 0
                rows.append({"model": "bench-small", "rows": 1, "wait": "sleep", "gap_s": gap, "round": rnd, "chain": k,
                             "wait_s": gap + 60e-6 if first else 0.0, "launch_s": 100e-6,
                             "total_s": (1.3e-3 if (first and gap) else 1.05e-3) + rnd * 1e-6,
                             "gpu_s": 1.0e-3, "sm_mhz_before": 1980.0})
    return pd.DataFrame(rows)


def test_summary_medians_first_against_chain():
    s = sip.summary(_rows()).set_index("gap_s")
    assert s.loc[0.002, "first_total_s"] == pytest.approx(1.301e-3) and s.loc[0.002, "chain_total_s"] == pytest.approx(1.051e-3)
    assert s.loc[0.002, "first_over_chain"] == pytest.approx(1.301 / 1.051)
    assert s.loc[0.0, "first_over_chain"] == pytest.approx(1.0)
    assert s.loc[0.002, "wait_over_s"] == pytest.approx(60e-6) and (s.n == 3).all()


def test_no_records_exits_2(capsys):
    assert sip.main(["--name", "no-such-set"]) == 2
    assert "--name" in capsys.readouterr().err

"""calibration.step_bracket / bracket_judge (docs/notes/s25host2_rule.md): the bracketed probe, the switch's reach and
the rule's criteria on synthetic figures where the answer is known."""

import numpy as np
import pandas as pd
import pytest

from calibration import bracket_judge as bj
from calibration import step_bracket as sb


def _steps():
    base = {"model": "m", "batch": 2, "prompt_len": 16, "gen_len": 10, "config": np.nan, "phase": np.nan,
            "precision": "bf16"}
    rows = [{**base, "bench": "decode", "step": i, "block": "probed" if i % 2 else "control",
             "host_probe_launch_s": 1e-5 if i % 2 else np.nan, "host_s": 1e-3} for i in range(4)]
    rows.append({**base, "bench": "host_dispatch", "model": np.nan, "batch": np.nan, "prompt_len": np.nan,
                 "gen_len": np.nan, "config": "moe_layer x", "phase": "infer", "step": 0, "block": "probed",
                 "host_probe_launch_s": 2e-5, "host_s": 1e-3})
    return pd.DataFrame(rows)


def _after(steps):
    return steps.drop(columns=["host_probe_launch_s", "host_s"]).assign(host_probe_after_s=4e-5)


def test_bracket_is_the_geometric_mean_and_control_steps_stay_unprobed():
    s = _steps()
    b = sb.bracketed_steps(s, _after(s))
    probed = b[b["block"] == "probed"]
    assert probed.loc[probed["bench"] == "decode", "host_probe_launch_s"].tolist() == pytest.approx([2e-5, 2e-5])
    assert probed.loc[probed["bench"] == "host_dispatch", "host_probe_launch_s"].iloc[0] == pytest.approx(np.sqrt(8e-10))
    assert b.loc[b["block"] == "control", "host_probe_launch_s"].isna().all()
    assert b["host_probe_before_s"].equals(s["host_probe_launch_s"])


def test_a_step_without_an_after_row_keeps_its_probe_before():
    s = _steps()
    b = sb.bracketed_steps(s, _after(s).iloc[:1])
    assert b.loc[b["bench"] == "host_dispatch", "host_probe_launch_s"].iloc[0] == pytest.approx(2e-5)


def test_switch_is_off_and_folders_without_after_rows_are_unchanged(tmp_path):
    assert sb.ADOPT_BRACKET_PROBE is False
    s = _steps()
    assert sb.folder_steps(tmp_path, s) is s
    saved = sb.ADOPT_BRACKET_PROBE
    sb.ADOPT_BRACKET_PROBE = True
    try:
        assert sb.folder_steps(tmp_path, s) is s   # no step_after.csv there
    finally:
        sb.ADOPT_BRACKET_PROBE = saved


def _groups(dec, pre, n=7):
    ok = lambda m, p: m <= 0.05 and p <= 0.10
    all_m, all_p = (dec[0] + pre[0]) / 2, max(dec[1], pre[1])
    return {"h100 decode": (n, *dec, ok(*dec)), "h100 prefill": (n, *pre, ok(*pre)), "all": (2 * n, all_m, all_p,
                                                                                          ok(all_m, all_p))}


def test_criteria_adopt_only_a_clear_gain():
    b = _groups((0.04, 0.09), (0.08, 0.20))
    assert bj.bracket_criteria(b, _groups((0.03, 0.08), (0.06, 0.19)))["adopt"] is True
    # pooled gain under 1 pt: K1 fails
    assert bj.bracket_criteria(b, _groups((0.04, 0.09), (0.075, 0.20)))["K1"] is False
    # a met group lost (decode P90 over 10%): K3 fails, whatever the pooled gain
    c = bj.bracket_criteria(b, _groups((0.02, 0.11), (0.05, 0.15)))
    assert c["K3"] is False and c["adopt"] is False
    # too few records: not judged
    assert bj.bracket_criteria(_groups((0.04, 0.09), (0.08, 0.2), n=4), b) == {"judged": False, "adopt": False}


def test_two_states_splits_a_bimodal_run_and_not_a_unimodal_one():
    rng = np.random.default_rng(0)
    fast, slow = 8e-6 * np.exp(rng.normal(0, 0.03, 60)), 12e-6 * np.exp(rng.normal(0, 0.03, 40))
    cut, f, s = bj.two_states(np.concatenate([fast, slow]))
    assert f == pytest.approx(8e-6, rel=0.03) and s == pytest.approx(12e-6, rel=0.03)
    assert bj.two_states(fast) is None
    probes = pd.Series([7.9e-6, 12.2e-6, np.nan])
    assert bj.state_probe(probes, (cut, f, s)).iloc[:2].tolist() == [f, s]


@pytest.mark.parametrize("argv", [["s25host2_z"], ["s21host2"], ["--json", "s25host2"]])
def test_judge_refuses_an_unknown_run_with_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        bj.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    # one line naming the value and the runs allowed (s27walk round 3's OneLineParser), or the judge's own refusal
    assert "s25host2" in err and ("allowed: s25host2" in err or "expected one of s25host2" in err), err

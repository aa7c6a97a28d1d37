"""calibration.step_probe (docs/notes/s24probe_rule.md): the rule's choice and judgement on synthetic hosts where one
candidate follows the steps' host time exactly and the old probe does not."""

import math

import pandas as pd

from calibration import step_probe as sp

CAND = ("launch_3ms", "launch", "mix", "refmodel", "cpuop", "py")


def _host(folder, speed: float, old_speed: float):
    """Two cases between three probe sets; `py` scales with the host's speed (as T does), the launch probes with
    old_speed, the rest are constant."""
    folder.mkdir(parents=True)
    probes = [dict(set=k, where="", candidate=c, window_s=0.15,
                   host_s_per_unit=(speed * 1e-4 if c == "py" else old_speed * 1e-5 if "launch" in c else 1e-5),
                   host_s_per_unit_p50=1e-5) for k in range(3) for c in CAND]
    pd.DataFrame(probes).to_csv(folder / "host_probes.csv", index=False)
    steps = []
    for k, (bench, model, host_ms) in enumerate((("prefill", "tiny", 5.0), ("decode", "tiny", 3.0))):
        for i in range(4):
            steps.append(dict(bench=bench, model=model, batch=1, prompt_len=384, config=f"set{k}", step=i,
                              block="probed" if i % 2 else "control", host_probe_launch_s=old_speed * 1e-5,
                              host_s=host_ms * 1e-3 * speed))
    pd.DataFrame(steps).to_csv(folder / "serve_steps.csv", index=False)


def test_rule_chooses_the_following_probe_and_judges_it(tmp_path, monkeypatch):
    monkeypatch.setattr(sp, "MIN_CASES", 2)
    for n, (speed, old) in enumerate([(1.0, 1.0), (1.5, 1.2), (2.0, 1.3), (1.2, 1.25)], start=1):
        _host(tmp_path / "h100" / f"s24probe_{n}", speed, old)
    data = sp.all_hosts(tmp_path)
    assert sorted(data["host"].unique()) == [1, 2, 3, 4] and len(data) == 8
    table = sp.summary(data)
    assert table.loc["py", "D"] < 1e-12 and table.loc["py", "heldout_median"] < 1e-12
    assert math.isclose(table.loc[sp.OLD, "D"], abs(math.log(1.5 / 1.2)))
    # old probe on host 3: k = sqrt(1 * (1.5/1.2)) per unit, r = 2/1.3: error k / r - 1
    k_old = math.sqrt(1.5 / 1.2) * 1e-3
    assert math.isclose(table.loc[sp.OLD, "host3_median"] * 1, abs(k_old / (2.0 / 1.3 * 1e-3) - 1), rel_tol=1e-6)
    v = sp.verdict(table)
    assert v["chosen"] == "py" and v["judged"] and v["J1"] and v["J2"] and v["J3"] and v["wins"]


def test_two_hosts_choose_but_do_not_judge(tmp_path, monkeypatch):
    monkeypatch.setattr(sp, "MIN_CASES", 2)
    for n, (speed, old) in enumerate([(1.0, 1.0), (1.5, 1.2)], start=1):
        _host(tmp_path / "h200" / f"s24probe_{n}", speed, old)
    v = sp.verdict(sp.summary(sp.all_hosts(tmp_path)))
    assert v == {"chosen": "py", "judged": False}


def test_a_short_host_is_dropped(tmp_path):
    _host(tmp_path / "h100" / "s24probe_1", 1.0, 1.0)   # 2 cases < the rule's 12
    assert sp.all_hosts(tmp_path).empty


def _each_host(folder, follows: str, seed: int):
    """8 steps a kind of two cases on a host whose state flips step to step; kind `follows` reads the state exactly,
    the others read it with noise."""
    import numpy as np
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    rows = []
    for case, base in (("decode", 3e-3), ("prefill", 5e-3)):
        for i in range(40):
            kind = sp.EACH_KINDS[i % 5]
            state = 1.0 + 0.6 * rng.integers(0, 2)
            noise = 1.0 if kind == follows else float(np.exp(rng.normal(0, 0.2)))
            rows.append(dict(bench=case, model="tiny", batch=8, prompt_len=384, step=i, kind=kind,
                             probe_window_s=0.003, probe_s_per_unit=1e-5 * state * noise, step_s=base * state,
                             host_s=base * state))
    pd.DataFrame(rows).to_csv(folder / "probe_steps.csv", index=False)


def test_candidate_two_chooses_the_kind_that_follows_the_moment(tmp_path, monkeypatch):
    for n in (1, 2, 3):
        _each_host(tmp_path / "h100" / f"s24probe2_{n}", "py", n)
    steps = sp.each_hosts(tmp_path)
    table = sp.each_scatter(steps)
    assert list(table.index) == [1, 2, 3] and (table["py"] < 1e-12).all() and (table["launch"] > 0.05).all()
    v = sp.each_verdict(steps)
    assert v["chosen"] == "py" and v["judged"] and v["E1"] and v["E2"] and v["wins"]
    one = sp.each_verdict(steps[steps["host"] == 1])
    assert one["chosen"] == "py" and one["judged"] is False


def test_candidate_two_cross_host_report(tmp_path):
    for n in (1, 2):
        _each_host(tmp_path / "h200" / f"s24probe2_{n}", "refmodel", n)
    err = sp.each_cross_host(sp.each_hosts(tmp_path))
    assert list(err.index) == [2] and err.loc[2, "refmodel"] < 1e-9 and err.loc[2, "launch"] >= 0


def test_committed_hosts_give_the_notes_verdicts():
    """docs/notes/s24probe_rule.md: on the committed hosts candidate 1 chooses the old per-step probe (nothing new
    adopted) and candidate 2 chooses mix on its first host and fails E1 / E2 on its second."""
    table = sp.summary(sp.all_hosts())
    v1 = sp.verdict(table)
    assert v1["chosen"] == sp.OLD and v1["judged"] and not v1["wins"]
    assert round(table.loc[sp.OLD, "D"], 3) == 0.052
    v2 = sp.each_verdict(sp.each_hosts())
    assert v2["chosen"] == "mix" and v2["judged"] and not v2["E1"] and not v2["E2"] and not v2["wins"]

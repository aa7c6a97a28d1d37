"""The s26eprate deliveries (docs/notes/s26eprate_rule.md): fresh EP2 steps with a host-pace probe right before every
timed step, judged by calibration.ep_probe_rate. The judgement is read back from calibration/s26eprate_judgement.json
(written by `python -m calibration.ep_probe_rate record ...`, which the file names); its verdicts are recomputed from
its rows, one part is priced again live under base, P and R and must give the file's rows, and the missed target is a
strict xfail printing the live figure."""

import shutil

import numpy as np
import pandas as pd
import pytest

import calibration.pipeline as pipe
from calibration import ep_probe_rate as epr
from calibration import records as rec
from calibration.records_io import read_csv, read_json

JUDGED = read_json(epr.JUDGEMENT_FILE)
RUNS = {name: rec.MEASUREMENTS_DIR / "h200x2" / name for name in JUDGED["runs"]}
FIRST = "s26eprate_20261128_0836"
PARTS = ("bench-small-10l", "bench-small-3l1k5", "bench-small-4l", "bench-small-6l512", "mixtral-3l")


def test_the_judgement_names_its_command_and_holds_every_delivery_row():
    assert JUDGED["command"].startswith("python -m calibration.ep_probe_rate record calibration/s26eprate_judgement.json h200")
    assert JUDGED["gpu"] == "h200" and JUDGED["settings"] == list(epr.SETTINGS) and FIRST in JUDGED["runs"]
    for name, t in epr.judged_rows(JUDGED).items():
        assert sorted(set(t["part"])) == sorted(PARTS), name
        assert sorted(t["num_microbatches"].unique()) == [2, 3, 4] and len(t) == 15
        assert set(t.columns) >= {f"rel_error_{s}" for s in epr.SETTINGS}


@pytest.mark.parametrize("run", sorted(RUNS))
def test_every_timed_step_of_every_configuration_had_its_probe_on_both_ranks(run):
    for part in PARTS:
        d = RUNS[run] / part
        ops = read_csv(d / "pipeline_ops.csv")
        probes = read_csv(d / "pipeline_host_probe.csv")
        steps = set(map(tuple, ops[["num_microbatches", "rep", "rank"]].drop_duplicates().to_numpy().tolist()))
        for kind in (epr.PROBE, epr.PY_PROBE):
            p = probes[probes["probe"] == kind]
            assert set(map(tuple, p[["num_microbatches", "cycle", "rank"]].to_numpy().tolist())) == steps, (part, kind)
        assert (probes["us_per_call"] > 0).all() and probes["gpu_name"].str.contains("H200").all()


def test_the_verdicts_follow_from_the_rows():
    tables = epr.judged_rows(JUDGED)
    for name, v in JUDGED["runs"].items():
        assert epr.verdict(tables[name]) == pytest.approx(v["verdict"])
    assert JUDGED["fresh_pass"] == all(v["verdict"]["pass"] for v in JUDGED["runs"].values())
    if "amended" in JUDGED:
        first, second = list(tables.values())[:2]
        assert {"setting": epr.AMENDED, **epr.amended_verdict(first, second)} == pytest.approx(JUDGED["amended"])


def test_first_delivery_p_fails_r1_and_r4_the_control_does_not_move():
    """The first delivery (fresh 2xH200, 08:36 UTC): P 10.84 / 30.42% against base 13.63 / 21.57% and R 3.77 /
    17.24%: R2 and R3 hold, R1 and R4 fail; the GPU-bound control gets no probe input in any setting."""
    v = JUDGED["runs"][FIRST]["verdict"]
    assert (round(v["median"] * 100, 2), round(v["p90"] * 100, 2)) == (10.84, 30.42)
    assert (v["r1"], v["r2"], v["r3"], v["r4"], v["pass"]) == (False, True, True, False, False)
    t = epr.judged_rows(JUDGED)[FIRST]
    control = t[t["part"] == "mixtral-3l"]
    assert control["fwd_probe_rate_s"].isna().all() and control["bwd_probe_rate_s"].isna().all()
    for s in epr.SETTINGS:
        assert np.allclose(control[f"rel_error_{s}"], control["rel_error_base"])


SECOND = "s26eprate_20261128_0844"


def test_second_delivery_p_passes_r1_to_r4_amended_pl_fails_nothing_adopted():
    """The second delivery (another fresh 2xH200 lease, 08:44 UTC): P 2.63 / 7.73% against base 25.04 / 32.16% and R
    4.07 / 9.24% passes R1-R4 there, but the rule asks P to pass on every delivery; amendment A1's PL (7.37 / 12.42% on
    the second, pooled 3.62 / 13.78%) fails R1, R4 and R5: nothing is adopted."""
    v = JUDGED["runs"][SECOND]["verdict"]
    assert (round(v["median"] * 100, 2), round(v["p90"] * 100, 2)) == (2.63, 7.73)
    assert (v["r1"], v["r2"], v["r3"], v["r4"], v["pass"]) == (True, True, True, True, True)
    assert JUDGED["fresh_pass"] is False
    a = JUDGED["amended"]
    assert a["setting"] == "PL" and (round(a["pooled_median"] * 100, 2), round(a["pooled_p90"] * 100, 2)) == (3.62, 13.78)
    assert (a["r1"], a["r4"], a["r5"], a["pass"]) == (False, False, False, False)


@pytest.mark.xfail(strict=True, reason="s26eprate: P misses issue 13's ep_step target on the first fresh delivery")
def test_p_meets_issue_13_on_the_first_delivery():
    v = JUDGED["runs"][FIRST]["verdict"]
    assert v["r1"], f"{FIRST}: P median {v['median']:.2%} P90 {v['p90']:.2%} (target 5% / 10%)"


@pytest.mark.xfail(strict=True, reason="s26eprate: P misses issue 13's ep_step target over both deliveries pooled")
def test_p_meets_issue_13_over_both_deliveries():
    t = pd.concat(epr.judged_rows(JUDGED).values())
    a = np.abs(t["rel_error_P"].to_numpy())
    med, p90 = float(np.median(a)), float(np.percentile(a, 90))
    assert med <= 0.05 and p90 <= 0.10, f"P over {len(a)} rows: median {med:.2%} P90 {p90:.2%} (target 5% / 10%)"


def test_the_switch_stays_off():
    assert pipe.ADOPT_EP_PROBE_HOST is False


def test_one_part_priced_again_gives_the_files_rows(tmp_path):
    """bench-small-3l1k5 of the first delivery, copied alone and priced under base, P and R (per-part settings),
    must give the file's rows: the file cannot go stale unseen."""
    shutil.copytree(RUNS[FIRST] / "bench-small-3l1k5", tmp_path / "bench-small-3l1k5")
    live = epr.fresh_errors(tmp_path, "h200", names=("base", "P", "R"))
    stored = epr.judged_rows(JUDGED)[FIRST]
    stored = stored[stored["part"] == "bench-small-3l1k5"].reset_index(drop=True)
    cols = ["num_microbatches", "measured_s", "fwd_probe_rate_s", "bwd_probe_rate_s",
            "rel_error_base", "rel_error_P", "rel_error_R"]
    pd.testing.assert_frame_equal(live[cols], stored[cols], check_dtype=False, rtol=1e-9)

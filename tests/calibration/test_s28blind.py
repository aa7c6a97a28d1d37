"""calibration.s28blind (session s28blind): the blind pre-registered set of the committed twin, 1 and 2 GPUs
(docs/notes/s28blind_rule.md). The predictions are committed and cover the campaign's cases; the judge reads records
of every kind from a records root."""

import re

import pandas as pd
import pytest

from calibration import prereg, s28blind
from calibration.records_io import read_csv, read_json


@pytest.fixture(scope="module")
def predictions():
    return {"train": prereg.load_predictions(s28blind.TRAIN.predictions_file),
            "serve": prereg.load_predictions(s28blind.SERVE.predictions_file),
            "ep": prereg.load_predictions(s28blind.EP_FILE), "pp": prereg.load_predictions(s28blind.PP_FILE)}


def test_committed_predictions_cover_the_cases_from_one_commit(predictions):
    wanted = {"train": (prereg.case_rows(s28blind.TRAIN), prereg.KEY),
              "serve": (prereg.case_rows(s28blind.SERVE), prereg.SERVE_KEY),
              "ep": (s28blind.ep_rows(), prereg.EP_KEY), "pp": (s28blind.pp_rows(), s28blind.prereg_pp.KEY)}
    for name, (rows, key) in wanted.items():
        df = predictions[name]
        assert sorted(map(str, df[key].itertuples(index=False, name=None))) == sorted(
            str(tuple(r[k] for k in key)) for r in rows), name
        assert (df["predicted_s"] > 0).all()
    commits = {c for df in predictions.values() for c in df["code_commit"]}
    assert len(commits) == 1 and re.fullmatch(r"[0-9a-f]{40}", commits.pop())
    # 47 H200 rows run (the FP8 label the device takes of the two predicted), as the rule counts
    run = sum(int(((df["gpu"] == "h200") & (df.get("precision", "") != "fp8-rowwise")).sum())
              for df in predictions.values())
    assert run == 47
    assert all(set(df["gpu"]) == {"h100", "h200"} for df in predictions.values())


def test_judge_groups_every_kind_and_counts_a_miss(tmp_path, predictions):
    """Records at the predicted seconds, but two decode rows 25% slower than predicted (|err| 1 - 1/1.25 = 20%): every
    group met except h200 decode, whose P90 is 20% (the 8th and 9th of 9 sorted errors), its median 0; the EP2 rows
    3% slower than predicted (|err| 1 - 1/1.03)."""
    t, s = predictions["train"], predictions["serve"]
    model = pd.concat([t[(t["gpu"] == "h200") & (t["precision"] != "fp8-rowwise")].assign(time_s=t["predicted_s"]),
                       s[s["gpu"] == "h200"].assign(time_s=s["predicted_s"])], ignore_index=True)
    slow = model.index[model["bench"] == "decode"][:2]
    model.loc[slow, "time_s"] *= 1.25
    folder = tmp_path / "h200" / "s28blind"
    folder.mkdir(parents=True)
    model.assign(gpu_name="NVIDIA H200").drop(columns=["gpu", "code_commit", "predicted_at_utc"]).to_csv(
        folder / "model.csv", index=False)
    e = predictions["ep"]
    for m, sub in e[e["gpu"] == "h200"].groupby("model"):
        d = tmp_path / "h200x2" / "s28blind" / "ep" / m
        d.mkdir(parents=True)
        sub.assign(time_s=sub["predicted_s"] * 1.03, gpu_name="NVIDIA H200").to_csv(d / "pipeline_step.csv", index=False)
    sec = s28blind.judge(tmp_path)
    g = sec["by_group"]
    assert set(g) == {"h200 train_step", "h200 prefill", "h200 decode", "h200x2 ep_step"}
    assert g["h200 train_step"]["num_cases"] == 12 and g["h200 train_step"]["meets_target"]
    assert g["h200 prefill"]["num_cases"] == 6 and g["h200 decode"]["num_cases"] == 9
    assert g["h200 decode"]["median_abs_rel_error"] == pytest.approx(0.0, abs=1e-12)
    assert g["h200 decode"]["p90_abs_rel_error"] == pytest.approx(0.2, rel=1e-9)
    assert not g["h200 decode"]["meets_target"]
    assert g["h200x2 ep_step"]["median_abs_rel_error"] == pytest.approx(1 - 1 / 1.03, rel=1e-9)
    assert "prereg-blind h200 decode: 9 rows" in s28blind.format_table(sec) and "MISSED" in s28blind.format_table(sec)


# the verdicts on the committed records (calibration/s28blind_judgement.json, `python -m calibration.s28blind --json`);
# a missed target is a strict xfail that prints the live figure
JUDGED_GROUPS = ("h200 train_step", "h200 prefill", "h200 decode", "h200x2 ep_step", "h200x2 pipeline_step")
MISSED = {"h200 decode": "host-paced decode steps of this lease slower than the profile's host rate "
                         "(docs/notes/s28blind.md)"}


@pytest.fixture(scope="module")
def committed():
    return read_json(s28blind.JUDGEMENT_FILE)


@pytest.fixture(scope="module")
def live():
    """The judgement recomputed from the committed records and predictions (reads and compares only: ~2 s)."""
    return s28blind.judge()


def test_committed_judgement_is_todays(committed, live):
    assert set(committed["by_group"]) == set(live["by_group"]) == set(JUDGED_GROUPS)
    for label, s in live["by_group"].items():
        c = committed["by_group"][label]
        assert s["num_cases"] == c["num_cases"], label
        for k in ("median_abs_rel_error", "p90_abs_rel_error", "max_abs_rel_error"):
            assert s[k] == pytest.approx(c[k], rel=1e-9, abs=1e-12), (label, k)
    assert sum(g["num_cases"] for g in live["by_group"].values()) == 47   # every row the rule names was run
    assert (live["idle"]["num_within"], live["idle"]["num_rank_rows"]) == (
        committed["idle"]["num_within"], committed["idle"]["num_rank_rows"]) == (31, 32)
    assert live["ranking"]["num_resolved"] == committed["ranking"]["num_resolved"] == 19


@pytest.mark.parametrize("label", [pytest.param(g, marks=pytest.mark.xfail(strict=True, reason=MISSED[g]))
                                   if g in MISSED else g for g in JUDGED_GROUPS])
def test_issue13_target_per_kind_and_gpu_count(live, label):
    s = live["by_group"][label]
    assert s["meets_target"], (f"{label}: median |err| {s['median_abs_rel_error']:.2%}, P90 {s['p90_abs_rel_error']:.2%} "
                               f"over {s['num_cases']} rows (target 5% / 10%)")


@pytest.mark.xfail(strict=True, reason="llama3-8b-slice dualpipe n6 rank 1: 0.45 ms predicted, 3.9 ms measured "
                                       "(its B ops 9% longer than the twin's)")
def test_each_pp2_rank_idle_within_10_percent(live):
    bad = [(i["model"], i["schedule"], i["num_microbatches"], i["rank"], round(i["predicted_idle_s"] * 1e3, 2),
            round(i["measured_idle_s"] * 1e3, 2)) for i in live["idle"]["rows"] if not i["within"]]
    assert not bad, f"{len(bad)} of {live['idle']['num_rank_rows']} rank-rows outside (model, schedule, n, rank, " \
                    f"predicted ms, measured ms): {bad}"


def test_schedules_ranked_as_measured(live):
    k = live["ranking"]
    assert k["meets_target"] and k["num_resolved_ordered"] == k["num_resolved"] > 0


def test_repeat_is_reported_from_its_own_subfolder(tmp_path):
    """Amendment A1: a repeat under <gpu>/s28blind_repeat/ is grouped against the same predictions (here the judged
    run's records copied there: the same figures); none filed, none reported."""
    assert s28blind.repeat_groups(tmp_path) == {}
    (tmp_path / "h200" / "s28blind_repeat").mkdir(parents=True)
    read_csv(s28blind.rec.MEASUREMENTS_DIR / "h200" / "s28blind" / "model.csv").to_csv(
        tmp_path / "h200" / "s28blind_repeat" / "model.csv", index=False)
    got, judged = s28blind.repeat_groups(tmp_path), s28blind.judge()["by_group"]
    assert set(got) == {"h200 train_step", "h200 prefill", "h200 decode"}
    for label, g in got.items():
        assert g["median_abs_rel_error"] == pytest.approx(judged[label]["median_abs_rel_error"], rel=1e-12)

"""The s25host2 fresh runs (docs/notes/s25host2_rule.md; calibration/measurements/h100/s25host2/ and s25host2_b/, two
fresh H100s, cold): the rule's verdict on the judged run and issue 13's targets under the committed step-input twin (B)
on both (the second host reported, not judged). The figures are read back from calibration/s25host2_judgement.json
(written by `python -m calibration.bracket_judge --json`); one record is recomputed from the records through the same
code (B and C) and must equal its committed entry, so the file cannot go stale silently."""

import csv
import shutil

import pandas as pd
import pytest

from calibration import bracket_judge as bj
from calibration import judged_under, prereg, step_bracket
from calibration import records as rec
from calibration.records_io import json_exists, read_json, resolve_csv


@pytest.fixture(scope="module")
def judgement():
    if not json_exists(bj.JUDGEMENT_FILE):
        pytest.skip("no s25host2 judgement committed")
    return read_json(bj.JUDGEMENT_FILE)


def _summaries(entry):
    rows = pd.DataFrame(entry["rows"])
    return bj.group_summary(rows, "B_rel_error"), bj.group_summary(rows, "C_rel_error")


def test_bracketed_probe_is_not_adopted(judgement):
    """The bracket (C) lost every criterion on the fresh run, so the switch stays off; the summaries and the verdict
    recomputed from the committed rows are the committed ones."""
    entry = judgement["s25host2"]
    b, c = _summaries(entry)
    verdict = bj.bracket_criteria(b, c)
    assert {k: list(v) for k, v in b.items()} == entry["B"] and {k: list(v) for k, v in c.items()} == entry["C"]
    assert verdict == entry["criteria"] and entry["judged"]
    assert verdict["judged"] and not verdict["adopt"] and not verdict["K1"]
    assert step_bracket.ADOPT_BRACKET_PROBE is False
    assert b["all"][0] == c["all"][0] == 14


def test_the_later_run_is_reported_not_judged(judgement):
    assert set(judgement) - {"written_by", *judged_under.IGNORED_KEYS} == {bj.REGISTRATION, *bj.LATER_RUNS}
    assert [judgement[n]["judged"] for n in bj.LATER_RUNS] == [False] * len(bj.LATER_RUNS)
    assert len(judgement["s25host2_b"]["rows"]) == 14


def _one_record_root(tmp_path, reg_name: str, row: dict):
    """A measurements root holding the registration's folder with model.csv cut to `row`'s record (the other files
    as committed; serve_kernels left out: it feeds only the ratios' kernel counts, not a figure)."""
    reg = prereg.REGISTRATIONS[reg_name]
    src, dst = rec.MEASUREMENTS_DIR / row["gpu"] / reg.records_subdir, tmp_path / row["gpu"] / reg.records_subdir
    dst.mkdir(parents=True)
    for name in ("host_dispatch.csv", "serve_steps.csv", "step_after.csv"):
        shutil.copy(resolve_csv(src / name), dst / resolve_csv(src / name).name)
    with (src / "model.csv").open(newline="") as f:
        lines = list(csv.reader(f))
    key = ("bench", "model", "batch", "prompt_len", "gen_len")
    mine = [ln for ln in lines[1:] if tuple(ln[lines[0].index(k)] for k in key) == tuple(str(row[k]) for k in key)]
    assert len(mine) == 1, row
    with (dst / "model.csv").open("w", newline="") as f:
        csv.writer(f).writerows([lines[0], *mine])
    return tmp_path


def test_one_record_recomputed_equals_the_committed_judgement(judgement, tmp_path):
    """The judged run's first decode record, recomputed from the records on the committed grid under B and C (the
    judge's own twin_rows), equals its committed row to the last bit of a float's repr."""
    row = next(r for r in judgement["s25host2"]["rows"] if r["bench"] == "decode")
    got = bj.judged_errors("s25host2", _one_record_root(tmp_path, "s25host2", row))
    assert len(got) == 1
    for col in ("time_s", "B_predicted_s", "C_predicted_s", "B_rel_error", "C_rel_error"):
        assert float(got[col].iloc[0]) == row[col], col


def test_committed_twin_meets_issue13_on_fresh_decode(judgement):
    n, median, p90, met = _summaries(judgement["s25host2"])[0]["h100 decode"]
    assert met, f"H100 decode (s25host2, B): median {median:.1%}, P90 {p90:.1%} over {n} records"


@pytest.mark.xfail(strict=True, reason="issue 13: fresh one-GPU prefill of unseen models misses the P90 target")
def test_committed_twin_meets_issue13_on_fresh_prefill(judgement):
    n, median, p90, met = _summaries(judgement["s25host2"])[0]["h100 prefill"]
    print(f"H100 prefill (s25host2, B): median {median:.1%}, P90 {p90:.1%} over {n} records")
    assert met, f"H100 prefill (s25host2, B): median {median:.1%}, P90 {p90:.1%} over {n} records"


@pytest.mark.xfail(strict=True, reason="issue 13: the second fresh H100 ran at a fitting ratio of 2.78 (the highest seen); "
                                       "B over-predicts every record")
@pytest.mark.parametrize("group", ["h100 decode", "h100 prefill"])
def test_committed_twin_meets_issue13_on_the_second_fresh_host(judgement, group):
    n, median, p90, met = _summaries(judgement["s25host2_b"])[0][group]
    print(f"{group} (s25host2_b, B): median {median:.1%}, P90 {p90:.1%} over {n} records")
    assert met, f"{group} (s25host2_b, B): median {median:.1%}, P90 {p90:.1%} over {n} records"

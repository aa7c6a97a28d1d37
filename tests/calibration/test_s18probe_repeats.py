"""The ranking target's rule (docs/notes/s17alt_rule.md) on the hosts' further interleaved runs
(calibration.interleaved.INTERLEAVED_REPEAT_FOLDERS: the s18probe runs, s17alt's configurations with a
host-pace probe per cycle), as validation reports them beside the judging folders. Every configuration
they hold complete must be ranked as measured, pair by pair (when last run: 4xH200 n4 / n8 and 2xH200
n4 / n8, 6 of 6 pairs each; docs/notes/s18probe_note.md). A configuration missed here goes under a strict
xfail carrying its figures."""

import pytest

from calibration import interleaved
from tests.committed import validation

REPEATS = [(host, sub) for host, subs in sorted(interleaved.INTERLEAVED_REPEAT_FOLDERS.items()) for sub in subs]


@pytest.mark.parametrize("host,sub", REPEATS)
def test_repeat_interleaved_runs_rank_the_schedules_as_measured(host, sub):
    runs = validation().get("ranking_interleaved_repeats", {}).get(host, [])
    run = next((v for v in runs if v["folder"] == sub), None)
    assert run is not None, f"validation did not judge {host}/{sub}"
    complete = [g for g in run["configs"] if g["complete"]]
    # both micro-batch counts of real/campaigns/s18probe.sh, every pair decided
    assert sorted(int(g["config"]) for g in complete) == [4, 8]
    for g in complete:
        assert len(g["pairs"]) == 6
        assert g["met"], interleaved.format_interleaved_judgement(f"{host}/{sub}", [g])


def test_repeats_are_not_the_judging_folders():
    # the repeats are reported beside: the ranking target's headline stays on INTERLEAVED_FOLDERS
    for host, subs in interleaved.INTERLEAVED_REPEAT_FOLDERS.items():
        assert interleaved.INTERLEAVED_FOLDERS.get(host) not in subs

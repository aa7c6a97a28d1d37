"""calibration.judged_under (docs/notes/s30stale.md): every committed judgement names the commit and the ADOPT_*
switches it was computed under, so a reader sees what moved since; the switch reader agrees with Python's own
parser; `twin validate`'s sections that show a committed judgement say "as judged at <commit>; live: ..."."""

import ast
import json
import re

import pytest

from calibration import judged_under as ju
from calibration import serve_idle_wake
from calibration.records_io import json_record_name, read_json, read_json_text, write_json_text
from twin.training import step

# judgements of session 30's other lanes, stamped by the lead at merge (`python -m calibration.judged_under stamp FILE`)
UNSTAMPED: set[str] = set()


def test_every_committed_judgement_names_its_commit_and_switches():
    files = ju.judgement_files()
    assert len(files) >= 38
    for path in files:
        if json_record_name(path) in UNSTAMPED:
            continue
        j = read_json(path)
        assert re.fullmatch(r"[0-9a-f]{8}", j.get("commit", "")), f"{path}: run calibration.judged_under stamp"
        under = j["computed_under"]
        assert len(under) > 50 and all(re.fullmatch(r"(twin/[\w/]+|calibration/\w+)\.py:ADOPT_\w+", k) for k in under)


def test_the_line_reader_agrees_with_the_whole_module_parse():
    live = ju.live_switches()
    assert live["twin/training/step.py:ADOPT_SLOWEST_BOARD_PACE"] is step.ADOPT_SLOWEST_BOARD_PACE
    for rel in sorted({k.split(":")[0] for k in live}):
        text = (ju.REPO / rel).read_text()
        assert ju.switches_in_source(text) == ju._assigned(ast.parse(text).body), rel


def test_s29cp2_was_judged_before_the_board_pace_and_the_note_says_so():
    """s29cp2's judgement (1fd8b9c2) predates ADOPT_SLOWEST_BOARD_PACE (246b62eb, merged after it was written)."""
    j = read_json(ju.REPO / "calibration" / "s29cp2_judgement.json")
    d = ju.drift(j)
    assert d["added"].get("twin/training/step.py:ADOPT_SLOWEST_BOARD_PACE") is True and not d["moved"]
    note = ju.note(j)
    assert note.startswith("as judged at 1fd8b9c2; live: ") and "ADOPT_SLOWEST_BOARD_PACE added (True)" in note
    # s29mlm adopted that switch: its judgement was computed under the tree that holds it (switches adopted
    # later, e.g. session 30's, may still be named until a recheck)
    later = ju.note(read_json(ju.REPO / "calibration" / "s29mlm_judgement.json"))
    assert later is None or "ADOPT_SLOWEST_BOARD_PACE" not in later


def test_as_judged_sets_the_moved_switches_back_and_restores_them():
    j = {"commit": "0" * 8, "computed_under": {**ju.live_switches(),
                                               "twin/training/step.py:ADOPT_SLOWEST_BOARD_PACE": False}}
    before = step.ADOPT_SLOWEST_BOARD_PACE
    with ju.as_judged(j) as back:
        assert back == {"twin/training/step.py:ADOPT_SLOWEST_BOARD_PACE": False}
        assert step.ADOPT_SLOWEST_BOARD_PACE is False
    assert step.ADOPT_SLOWEST_BOARD_PACE is before
    assert ju.note(j) == (f"as judged at 00000000; live: ADOPT_SLOWEST_BOARD_PACE False -> {before} since "
                          "(the committed figures are that day's)")


def test_validate_section_of_a_committed_judgement_says_as_judged(tmp_path):
    """s29serve's section shows its committed figures; rechecked the same at 88725ac0 it prints no note, and without
    that recheck it names the switch moved since (ADOPT_SLOWEST_BOARD_PACE)."""
    committed = serve_idle_wake.JUDGEMENT_FILE
    assert "ADOPT_SLOWEST_BOARD_PACE" not in serve_idle_wake.format_section(serve_idle_wake.section())
    j = read_json(committed)
    assert j["rechecked"]["same"]
    bare = tmp_path / committed.name
    bare.write_text(json.dumps({k: v for k, v in j.items() if k != "rechecked"}))
    text = serve_idle_wake.format_section(serve_idle_wake.section(path=bare))
    assert "  as judged at 5e86db49; live: " in text and "ADOPT_SLOWEST_BOARD_PACE added (True)" in text


def test_a_recheck_at_a_later_commit_is_recorded_and_read():
    """s30stale reran each cheap writer at 88725ac0 (`judged_under recheck`): where the figures were the same, the
    switches moved since are inert for that file and its note is gone; where they differ the note says how much."""
    rechecked = {json_record_name(p): read_json(p) for p in ju.judgement_files()}
    rechecked = {k: j for k, j in rechecked.items() if "rechecked" in j}
    assert len(rechecked) >= 20
    for name, j in rechecked.items():
        r = j["rechecked"]
        assert r["same"] == (r["num_differing"] == 0) and (not r["inert_switches"] or r["same"]), name
    pp4 = ju.note(rechecked["s28pp4_judgement.json"])   # the lease's figures: the same live at 88725ac0
    assert pp4 is None or "ADOPT_SLOWEST_BOARD_PACE" not in pp4   # (switches adopted after the recheck stay named)
    assert ju.note(rechecked["s29cp2_judgement.json"]).endswith(
        "; rechecked at 88725ac0: 111 figures differ, adopt False -> True; criteria/P1/holds False -> True")


def test_differences_names_each_leaf_that_moved():
    then = {"adopt": False, "x": [1.0, 2.0], "code_commit": "a", "rows": {"a": 0.1}}
    now = {"adopt": True, "x": [1.0, 2.0 + 1e-9], "code_commit": "b", "rows": {"a": 0.2, "b": 1}}
    assert ju.differences(then, now) == [("adopt", False, True), ("rows/a", 0.1, 0.2), ("rows/b", "<absent>", 1)]


def test_stamp_writes_the_packed_form_and_an_unstamped_plain_judgement_is_found(tmp_path):
    """(s33pack) Judgements are committed packed (X_judgement.json.xz); one a branch wrote plain before the packing was
    merged is still listed, and the check above finds it unstamped. `stamp` on either form keeps the text and adds the
    two keys, written back packed (the plain form removed); a second stamp is refused."""
    folder = tmp_path / "calibration"
    folder.mkdir()
    write_json_text(folder / "s99a_judgement.json", json.dumps({"adopt": False}, indent=1) + "\n")
    (folder / "s99b_judgement.json").write_text(json.dumps({"adopt": True, "rows": [0.5]}, indent=1) + "\n")
    files = ju.judgement_files(tmp_path)
    assert [p.name for p in files] == ["s99a_judgement.json.xz", "s99b_judgement.json"]
    assert [json_record_name(p) for p in files if "computed_under" not in read_json(p)] == [
        "s99a_judgement.json", "s99b_judgement.json"]
    head = ju.head_commit()
    for name in ("s99a_judgement.json", "s99b_judgement.json"):
        before = read_json_text(folder / name)
        assert ju.stamp_file(folder / name, head) == head
        assert not (folder / name).exists() and (folder / (name + ".xz")).is_file()
        after = read_json_text(folder / name)
        assert after.startswith(before.rstrip()[:-1].rstrip()) and read_json(folder / name)["commit"] == head
    a, b = (read_json(folder / n)["computed_under"] for n in ("s99a_judgement.json", "s99b_judgement.json"))
    assert a == b and len(a) > 50   # HEAD's switches (switches_at)
    with pytest.raises(SystemExit, match="already records computed_under"):
        ju.stamp_file(folder / "s99b_judgement.json", head)
    assert ju.read_note(folder / "s99b_judgement.json") == ju.note(read_json(folder / "s99b_judgement.json"))

"""The s25v3pre records (calibration/measurements/h100/s25v3pre/; docs/notes/s25v3pre_rule.md): set F (v3-slice-2l and
qwen3moe-mla-slice at prompt and output lengths no earlier record held) and part 1's fresh kernel records; the
judgement's set-F rows as committed (calibration/s25v3pre_judgement.json, written by `python -m
calibration.serve_prefill_kernels --json`): the criteria recomputed from them, and the strict xfail printing them."""

from pathlib import Path

import pytest

from calibration import serve_prefill_kernels as spk
from calibration.records_io import read_json
from tests.calibration.conftest import assert_complete_held_out_set
from twin.serving import timing

JUDGEMENT = Path(spk.__file__).resolve().parent / "s25v3pre_judgement.json"


@pytest.fixture(scope="module")
def judgement():
    return read_json(JUDGEMENT)


def test_set_f_holds_six_complete_held_out_runs_on_an_h100():
    assert_complete_held_out_set(spk.NAME, spk.FRESH_MODELS, runs_per_model=3)
    assert spk.incomplete_runs() == []


def test_the_engine_terms_predict_the_fresh_kernel_records():
    """Part 1 (reported beside, never a criterion): v3-slice-2l's prompt kernels at 1 x 1280, 1 x 2048, 2 x 960 and
    3 x 640 tokens, compositions the constants never saw: the switch within -6..+4% (committed -16..+2%)."""
    rows = spk.fresh_kernel_check()
    assert [(r["prompts"], r["tokens"]) for r in rows] == [(1, 1280), (1, 2048), (2, 960), (3, 640)]
    for r in rows:
        assert -0.07 < r["on_s"] / r["measured_s"] - 1 < 0.05, r


def test_the_committed_judgement_is_its_criteria(judgement):
    """The set-F criteria recomputed from the committed rows give the committed verdict."""
    off = judgement["F"]["None"]
    assert len(off) == 6
    for cand in spk.CANDIDATES:
        f = spk.fresh_criteria(off, judgement["F"][cand])
        assert {k: v for k, v in judgement["criteria"][cand].items() if k.startswith("F")} == f["criteria"]
        assert not judgement["passes"][cand] or f["met"]
    assert judgement["adopt"] == next((c for c in spk.CANDIDATES if judgement["passes"][c]), None)


def test_neither_candidate_was_adopted_and_their_switches_are_on_only_as_part_of_t(judgement):
    """Neither P nor Q passed set F; their switches are on since s26start round 2 adopted T (docs/notes/
    s26start2_rule.md), which turns on all three of timing.T_SWITCHES."""
    assert judgement["adopt"] is None
    assert all(getattr(timing, name) for name in timing.T_SWITCHES)


@pytest.mark.xfail(strict=True, reason="s25v3pre rule: neither candidate passes set F (P 16 -> 15 of 30, v3-slice-2l "
                                       "15 -> 4; Q 16 -> 22 of 30 but v3-slice-2l's median 1.72% -> 3.15%, F2)")
def test_a_candidate_meets_its_rule_on_set_f(judgement):
    off = judgement["F"]["None"]
    lines = []
    for cand in spk.CANDIDATES:
        f = spk.fresh_criteria(off, judgement["F"][cand])
        (a, b), (mo, mn) = f["all"], f["mispriced"]
        lines.append(f"{cand}: set F {a[0]} -> {b[0]} of 30, median {a[1]:.2%} -> {b[1]:.2%}; v3-slice-2l {mo[0]} -> "
                     f"{mn[0]}, median {mo[1]:.2%} -> {mn[1]:.2%}; passes {judgement['passes'][cand]}")
    print("\n".join(lines))
    assert judgement["adopt"], "; ".join(lines)


def test_an_incomplete_run_is_found_in_a_packed_record(tmp_path):
    """incomplete_runs reads serve_load.csv however it is stored: a packed record (.csv.xz) with a held-out run
    short of its requests is reported, not taken for a missing file."""
    from calibration.records_io import pack_record
    folder = tmp_path / "h100" / spk.NAME / spk.FRESH_MODELS[0]
    folder.mkdir(parents=True)
    (folder / "serve_load.csv").write_text("run_id,split,num_completed,num_requests\nr1,holdout,9,10\nr2,fit,1,10\n")
    pack_record(folder / "serve_load.csv")
    assert not (folder / "serve_load.csv").exists()
    assert spk.incomplete_runs(root=tmp_path) == ["r1"]

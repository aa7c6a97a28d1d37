"""The s26start records (calibration/measurements/h200/s26start/, docs/notes/s26start_rule.md): set H (qwen2moe-mla-slice,
v2-lite-slice and v3-slice-1l at lengths, rates and concurrencies no record held; one H200) and the judgement as
committed (calibration/s26start_judgement.json, written by `python -m calibration.serve_start_sync --json`): set H's
criteria recomputed from its rows, the guards' criteria recomputed from their committed counts, one run replayed live
under the committed twin against its stored row, and the strict xfail printing the figures."""

import math
from pathlib import Path
from unittest import mock

import pytest

from calibration import serve_eager_host as seh
from calibration import serve_start_sync as sss
from calibration.serve_load_validation import FIGURES
from calibration.records_io import read_json
from tests.calibration.conftest import assert_complete_held_out_set
from twin.serving import timing

JUDGEMENT = Path(sss.__file__).resolve().parent / "s26start_judgement.json"


@pytest.fixture(scope="module")
def judgement():
    return read_json(JUDGEMENT)


def test_set_h_holds_six_complete_held_out_runs_on_an_h200():
    assert_complete_held_out_set(sss.NAME, sss.FRESH_MODELS, runs_per_model=2, gpu="h200", gpu_name="NVIDIA H200")
    assert sss.spk.incomplete_runs(name=sss.NAME, models=sss.FRESH_MODELS) == []


def test_the_committed_judgement_is_its_criteria(judgement):
    """Set H's criteria from the committed rows, the guards' from their committed counts: the committed ones; the
    verdict follows every criterion."""
    off, on = judgement["H"]["None"], judgement["H"][sss.JUDGED]
    assert len(off) == len(on) == sss.FRESH_RUNS and {r["gpu"] for r in off + on} == {"h200"}
    h = sss.fresh_criteria(off, on)
    assert {k: v for k, v in judgement["criteria"].items() if k.startswith("H")} == h["criteria"]
    sets = judgement["seen_sets"]
    assert set(sets) == set(sss.GUARD_LABELS)
    for label, (a, b) in sets.items():
        assert judgement["criteria"][f"K2_set_{label}_within_{sss.SET_MARGIN_CHECKS}"] == (b[0] >= a[0] - sss.SET_MARGIN_CHECKS)
    summ = {k: (v["committed"], v[sss.JUDGED]) for k, v in judgement["summary"].items()}
    k3 = sss.committed_criteria({k: a for k, (a, _) in summ.items()}, {k: b for k, (_, b) in summ.items()})
    assert {k: v for k, v in judgement["criteria"].items() if k.startswith("K3")} == k3
    assert judgement["passes"] == all(judgement["criteria"].values())
    assert judgement["adopt"] == (sss.JUDGED if judgement["passes"] else None)


def test_one_run_replayed_live_is_its_committed_row(judgement):
    """The cheapest run of set H (one model, the committed twin) replayed now equals its committed row: the judgement
    cannot go stale against the code."""
    with sss.setting(None), mock.patch.object(timing, "ADOPT_GRAPH_OP_FLOOR", False):   # as judged: every switch off
        live = seh.set_rows(sss.NAME, ("qwen2moe-mla-slice",), run_ids={"n26s-qwen2moe-poisson-r14-h"})
    assert len(live) == 1
    stored = next(r for r in judgement["H"]["None"] if r["run_id"] == "n26s-qwen2moe-poisson-r14-h")
    for f in FIGURES:
        a, b = live[0][f"{f}_rel_error"], stored[f"{f}_rel_error"]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9), f


def test_s_was_not_adopted_and_its_switch_is_on_only_as_part_of_t():
    """S was not adopted (its tables were never committed); ADOPT_EAGER_START_SYNC is on since s26start round 2
    adopted T: the three switches with the one-GPU tables' `start_sync` terms, fitted on the load runs."""
    from twin.core.specs import serve_engines
    assert all(getattr(timing, name) for name in timing.T_SWITCHES)
    assert all(timing.ADOPTED_TERMS_KEY in serve_engines()[t] for t in timing.ENGINE_PREFILL_TABLES)


@pytest.mark.xfail(strict=True, reason="s26start rule: S is adopted only if set H's H1-H2 and the guards K1-K3 hold; "
                                       "K1's median, K2 on sets A and B and K3 were missed before set H existed")
def test_candidate_s_meets_its_rule(judgement):
    h = sss.fresh_criteria(judgement["H"]["None"], judgement["H"][sss.JUDGED])
    (a, b) = h["all"]
    lines = [f"set H (H200) {a[0]} -> {b[0]} of 30, median {a[1]:.2%} -> {b[1]:.2%}"]
    lines += [f"{m} {x[0]} -> {y[0]}, median {x[1]:.2%} -> {y[1]:.2%}" for m, (x, y) in h["models"].items()]
    lines.append("missed: " + ", ".join(k for k, v in judgement["criteria"].items() if not v))
    print("\n".join(lines))
    assert judgement["adopt"] == sss.JUDGED, "; ".join(lines)

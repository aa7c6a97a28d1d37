"""The AccumulateGrad fraction per stage copy (docs/notes/s17pair_rule.md): DualPipe's two copies of a
stage each run the backward of half the micro-batches; the other schedules' one copy runs all of them."""

import json

import pytest

from calibration import pipeline as pipe
from calibration.fit import PROFILES_DIR
from calibration.predict import gpu_spec
from twin.costs.profile import profile_from_json
from twin.core.schedules import build_schedule


@pytest.mark.parametrize("name", ["1f1b", "zb1p", "dualpipev"])
@pytest.mark.parametrize("n", [4, 8])
def test_one_copy_runs_every_micro_batch_backward(name, n):
    schedule = build_schedule(name, 2, n)
    assert pipe.backwards_per_copy(schedule) == {s: float(n) for s in range(schedule.num_model_stages)}


@pytest.mark.parametrize("pp, n", [(2, 4), (2, 8), (4, 8)])
def test_dualpipe_copies_run_half_the_micro_batches(pp, n):
    schedule = build_schedule("dualpipe", pp, n)
    assert pipe.backwards_per_copy(schedule) == {s: n / 2 for s in range(pp)}


def test_accumulate_fraction_by_setting(monkeypatch):
    dualpipe, dualpipev = build_schedule("dualpipe", 2, 4), build_schedule("dualpipev", 2, 4)
    monkeypatch.setattr(pipe, "ADOPT_COPY_ACCUMULATE_FRAC", False)
    assert pipe.accumulate_fracs(dualpipe) == {0: 0.75, 1: 0.75}
    assert set(pipe.accumulate_fracs(dualpipev).values()) == {0.75}
    monkeypatch.setattr(pipe, "ADOPT_COPY_ACCUMULATE_FRAC", True)
    assert pipe.accumulate_fracs(dualpipe) == {0: 0.5, 1: 0.5}
    assert set(pipe.accumulate_fracs(dualpipev).values()) == {0.75}


def _row(schedule: str) -> dict:
    return {"model": "v2-lite-slice", "schedule": schedule, "pp": 2, "ep": 1, "dp": 1, "num_microbatches": 4,
            "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16", "num_layers": 8}


def test_only_dualpipe_steps_move_and_they_get_cheaper(monkeypatch):
    """On the profile's defaults (no measured host rates): the switch lowers DualPipe's predicted step
    (fewer backwards pay the add path) and leaves DualPipeV's unchanged. With s17pair2's placement off:
    placed op by op, each copy's first backward is found per (rank, chunk), so the copies are counted
    apart whatever this switch says (tests/calibration/test_s17pair2_first_backward.py)."""
    profile = profile_from_json(json.loads((PROFILES_DIR / "h200.json").read_text()))
    monkeypatch.setattr(pipe, "ADOPT_FIRST_BACKWARD_PLACEMENT", False)
    steps = {}
    for on in (False, True):
        monkeypatch.setattr(pipe, "ADOPT_COPY_ACCUMULATE_FRAC", on)
        for name in ("dualpipe", "dualpipev"):
            steps[on, name] = pipe.simulate_row(_row(name), gpu_spec("h200"), profile)[1]
    assert steps[True, "dualpipe"] < steps[False, "dualpipe"]
    assert steps[True, "dualpipev"] == steps[False, "dualpipev"]

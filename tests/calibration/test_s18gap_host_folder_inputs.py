"""s18gap (docs/notes/s18gap_rule.md): a ranking or interleaved folder, a subfolder of its host's records
folder, is predicted with its host folder's host-level inputs (the device gap between queued kernels,
the AccumulateGrad rates, the NCCL sweep) where ADOPT_S18_HOST_FOLDER_INPUTS is on, and with its own
only (none: gap 0, AccumulateGrad at the profile's fallback) where it is off. Both settings."""

from pathlib import Path

import pandas as pd
import pytest

import calibration.interleaved as il
import calibration.pipeline as pipe
import calibration.pipeline_judgement as judgement
from calibration import records as rec
from tests.calibration import pipeline_fixture as fx
from twin.costs.profile import fitted_profile

MEASUREMENTS = Path(rec.MEASUREMENTS_DIR)


def _subfolders() -> list[Path]:
    """The committed interleaved folders and the rounds of the committed ranking folders."""
    out = [MEASUREMENTS / host / sub for host, sub in il.INTERLEAVED_FOLDERS.items()]
    for host, sub in judgement.RANKING_FOLDERS.items():
        out += judgement.ranking_rounds(MEASUREMENTS / host / sub)
    return [p for p in out if p.is_dir()]


@pytest.mark.parametrize("on", [False, True])
def test_subfolder_inputs_from_follows_the_switch(monkeypatch, on):
    monkeypatch.setattr(judgement, "ADOPT_S18_HOST_FOLDER_INPUTS", on)
    folder = Path("h200x4") / "s17alt_x"
    assert judgement.subfolder_inputs_from(folder) == (Path("h200x4") if on else None)


@pytest.mark.parametrize("on", [False, True])
def test_committed_subfolders_take_their_host_folders_gap_and_accumulate_rates(monkeypatch, on):
    monkeypatch.setattr(judgement, "ADOPT_S18_HOST_FOLDER_INPUTS", on)
    subs = _subfolders()
    if not subs:
        pytest.skip("no committed interleaved or ranking folders")
    for sub in subs:
        host = next(p for p in sub.parents if p.parent == MEASUREMENTS)      # e.g. measurements/h200x4
        gpu = host.name.split("x")[0]
        # a ranking round sits one level deeper: its judgement passes its ranking folder's parent
        judged = sub if sub.parent == host else sub.parent
        _, accumulate, gap = pipe.host_inputs(sub, gpu, fitted_profile(gpu), judgement.subfolder_inputs_from(judged))
        # the subfolder records neither a probe nor AccumulateGrad rates of its own
        assert pipe.measured_device_gap_s(sub) is None and pipe.measured_accumulate(sub, gpu) is None
        if on:
            assert gap == pipe.measured_device_gap_s(host) and 0.3e-6 < gap < 3e-6, (sub, gap)
            assert accumulate == pipe.measured_accumulate(host, gpu) and accumulate is not None
        else:
            assert gap is None and accumulate is None


@pytest.mark.parametrize("on", [False, True])
def test_judgements_pass_the_host_folder_to_their_predictions(monkeypatch, tmp_path, on):
    monkeypatch.setattr(judgement, "ADOPT_S18_HOST_FOLDER_INPUTS", on)
    seen = []

    def predict(folder, gpu, profile, per_rank_host=False, inputs_from=None, part_host=False):
        seen.append((Path(folder), inputs_from))
        return []

    monkeypatch.setattr(il, "predict_folder", predict)
    monkeypatch.setattr(judgement, "predict_folder", predict)
    side = tmp_path / "h200x4" / "s17alt_x"
    side.mkdir(parents=True)
    il.interleaved_judgement(side, "h200", None)
    rounds = tmp_path / "h200x4" / "s15rank_x"
    for r in ("round_a", "round_b"):
        (rounds / r).mkdir(parents=True)
        (rounds / r / "pipeline_step.csv").write_text("model\n")
    judgement.ranking_judgement(rounds, "h200", None)
    host = tmp_path / "h200x4" if on else None
    assert seen == [(side, host), (rounds / "round_a", host), (rounds / "round_b", host)]


def test_ranking_judgement_moves_only_through_its_predictions(tmp_path, monkeypatch):
    """Fixture rounds whose host folder holds AccumulateGrad rates 20x the add path's cost (TEST FIXTURE
    figures): with the switch on the twin's steps grow and its gaps move, the measured pairs do not."""
    root = tmp_path / "h100x2"
    for r in ("round_a", "round_b"):
        fx.write(root / "rank" / r, [fx.config(s) for s in ("1f1b", "dualpipev")], reps=11)
        fx.jitter_steps(root / "rank" / r, 11)
    pd.DataFrame({"op": ["first", "add"], "elements": [1e6, 1e6], "time_s": [1.3e-4, 1.4e-4]}).to_csv(
        root / "wgrad_accum.csv", index=False)
    prof = fitted_profile("h100")
    judged = {}
    for on in (False, True):
        monkeypatch.setattr(judgement, "ADOPT_S18_HOST_FOLDER_INPUTS", on)
        (judged[on],) = judgement.ranking_judgement(root / "rank", "h100", prof)
    off, on = judged[False], judged[True]
    assert [(p["a"], p["b"], p["gap"], p["lo"], p["hi"]) for p in off["pairs"]] == \
        [(p["a"], p["b"], p["gap"], p["lo"], p["hi"]) for p in on["pairs"]]
    assert all(abs(p["twin_gap"] - q["twin_gap"]) > 1e-4 for p, q in zip(off["pairs"], on["pairs"]))

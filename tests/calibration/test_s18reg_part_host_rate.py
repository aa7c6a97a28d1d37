"""s18reg (docs/notes/s18reg_rule.md): with ADOPT_S18_PART_HOST_RATE on, the interleaved judgement predicts
each part (micro-batch count) of an interleaved folder at the per-pipeline-rank host rates of that part's
own host marks (part_host_rates); off, every part at the fitting split's pooled rates. The part rates read
the host clock (host_start_s, host_end_s) and the stream's start_s, never end_s or a step time. Both
settings; the records below are TEST FIXTURES (tests/calibration/pipeline_fixture.py), not measurements,
except where the committed folder is named."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import calibration.interleaved as il
import calibration.pipeline as pipe
from calibration import records as rec
from tests.calibration import pipeline_fixture as fx
from twin.costs.profile import fitted_profile

SLOW_RANK0_AT_N8 = 1.5      # TEST FIXTURE: pp rank 0's host issues the n8 part's ops 1.5x slower
CYCLES = 12


def _marked_folder(root: Path, slow: float = SLOW_RANK0_AT_N8) -> Path:
    """Fixture host folder h100x2 with an interleaved-like subfolder: 1F1B and DualPipeV at 4 (fit) and 8
    (held out) micro-batches, every op issued level with the GPU (a clean op), its host interval the
    op's span, x `slow` on pp rank 0 at 8."""
    folder = root / "h100x2" / "s17alt_fixture"
    fx.write(folder, [fx.config(s, n=n) for n in (4, 8) for s in ("1f1b", "dualpipev")], reps=CYCLES)
    steps = pd.read_csv(folder / "pipeline_step.csv")
    steps.assign(split=np.where(steps["num_microbatches"] == 8, "holdout", "fit")).to_csv(
        folder / "pipeline_step.csv", index=False)
    ops = pd.read_csv(folder / "pipeline_ops.csv")
    k = np.where((ops["num_microbatches"] == 8) & (ops["rank"] % ops["pp"] == 0), slow, 1.0)
    ops.assign(host_start_s=ops["start_s"], host_end_s=ops["start_s"] + k * (ops["end_s"] - ops["start_s"]),
               split=np.where(ops["num_microbatches"] == 8, "holdout", "fit")).to_csv(
        folder / "pipeline_ops.csv", index=False)
    # the paired steps: each schedule's predicted fixture step, +-1% by cycle
    rows = []
    for _, r in steps.iterrows():
        for c in range(CYCLES):
            rows.append({**{k: r[k] for k in fx.STEP_COLS if k in r and k not in ("time_s",)}, "cycle": c,
                         "pair_key": f"n{r['num_microbatches']} c{c}",
                         "time_s": float(r["time_s"]) * (1 + 0.01 * np.sin(c + len(str(r["schedule"]))))})
    pd.DataFrame(rows).to_csv(folder / il.INTERLEAVED_FILE, index=False)
    return folder


@pytest.fixture(scope="module")
def marked(tmp_path_factory):
    return _marked_folder(tmp_path_factory.mktemp("s18reg"))


def test_each_part_takes_its_own_marks_per_rank(marked, tmp_path):
    prof = fitted_profile("h100")
    parts = pipe.part_host_rates(marked, "h100", prof)
    even = pipe.part_host_rates(_marked_folder(tmp_path, slow=1.0), "h100", prof)
    assert set(parts) == {4, 8}
    # the fitting part's pooled rates are the fitting split's (today's); the n8 marks do not reach them
    assert parts[4][0] == pytest.approx(pipe.measured_host_s(marked, "h100", prof)) == even[4][0]
    # pp rank 0's host issues the n8 part slower by the fixture's factor; pp rank 1's does not
    for key in ("fwd", "bwd"):
        assert parts[8][1][0][key] == pytest.approx(SLOW_RANK0_AT_N8 * even[8][1][0][key], rel=1e-6)
        assert parts[8][1][1][key] == pytest.approx(even[8][1][1][key], rel=1e-6)


def test_part_rates_read_no_gpu_end_and_no_step_time(marked, tmp_path):
    """The input is host-side: scrambling every op's end_s and every step time leaves the part rates."""
    prof = fitted_profile("h100")
    before = pipe.part_host_rates(marked, "h100", prof)
    copy = tmp_path / "h100x2" / marked.name
    copy.mkdir(parents=True)
    rng = np.random.default_rng(0)
    ops = pd.read_csv(marked / "pipeline_ops.csv")
    ops.assign(end_s=ops["end_s"] * rng.uniform(1.0, 3.0, len(ops))).to_csv(copy / "pipeline_ops.csv", index=False)
    for name in ("pipeline_step.csv", il.INTERLEAVED_FILE):
        df = pd.read_csv(marked / name)
        df.assign(time_s=df["time_s"] * rng.uniform(0.5, 2.0, len(df))).to_csv(copy / name, index=False)
    assert pipe.part_host_rates(copy, "h100", prof) == before


@pytest.mark.parametrize("on", [False, True])
def test_predictions_take_the_part_rates_with_the_switch(marked, on):
    prof = fitted_profile("h100")
    cases = pipe.predict_folder(marked, "h100", prof, part_host=on)
    parts = pipe.part_host_rates(marked, "h100", prof)
    fitting = pipe.measured_host_s(marked, "h100", prof)
    for c in cases:
        n = int(c["row"]["num_microbatches"])
        if on:
            assert c["detail"]["host_s"] == parts[n][0] and c["detail"]["host_s_by_rank"] == parts[n][1]
        else:
            assert c["detail"]["host_s"] == fitting and c["detail"]["host_s_by_rank"] is None


@pytest.mark.parametrize("on", [False, True])
def test_interleaved_judgement_passes_the_switch(monkeypatch, tmp_path, on):
    monkeypatch.setattr(pipe, "ADOPT_S18_PART_HOST_RATE", on)
    seen = []

    def predict(folder, gpu, profile, per_rank_host=False, inputs_from=None, part_host=False):
        seen.append(part_host)
        return []

    monkeypatch.setattr(il, "predict_folder", predict)
    il.interleaved_judgement(tmp_path, "h100", None)
    assert seen == [on]


def test_judgement_moves_only_through_its_predictions(marked, monkeypatch):
    """The n8 part's own host rates move the twin's n8 steps with the switch on; the measured pairs are
    the same in both settings."""
    prof = fitted_profile("h100")
    judged = {}
    for on in (False, True):
        monkeypatch.setattr(pipe, "ADOPT_S18_PART_HOST_RATE", on)
        judged[on] = {g["config"]: g for g in il.interleaved_judgement(marked, "h100", prof)}
    for n in (4, 8):
        off, on = judged[False][n], judged[True][n]
        assert [(p["a"], p["b"], p["gap"], p["lo"], p["hi"]) for p in off["pairs"]] == \
            [(p["a"], p["b"], p["gap"], p["lo"], p["hi"]) for p in on["pairs"]]
    moved = {s: judged[True][8]["predicted_s"][s] / judged[False][8]["predicted_s"][s] for s in ("1f1b", "dualpipev")}
    assert all(abs(v - 1) > 0.005 for v in moved.values()), moved
    assert [p["twin_gap"] for p in judged[True][8]["pairs"]] != [p["twin_gap"] for p in judged[False][8]["pairs"]]


def test_the_committed_4xh200_n8_part_runs_at_other_rates_than_its_fitting_split():
    """The committed 4xH200 interleaved folder (section 1 of the rule): pp rank 0 issues its forwards at
    8 micro-batches at another rate than in the fitting part (about 30 against 37 us a launch): the
    rates part_host_rates gives that rank (host_rates on the part's marks of its GPUs)."""
    folder = Path(rec.MEASUREMENTS_DIR) / "h200x4" / il.INTERLEAVED_FOLDERS["h200x4"]
    prof, accumulate, gap = pipe.host_inputs(folder, "h200", fitted_profile("h200"), folder.parent)
    marks = pipe.host_marks(folder)
    rank0 = marks[(marks["pp"] > 1) & (marks["rank"] % marks["pp"] == 0)].assign(split="fit")
    n4, n8 = (pipe.host_rates(rank0[rank0["num_microbatches"] == n], folder, "h200", prof, accumulate, gap)["fwd"]
              for n in (4, 8))
    assert abs(n8 / n4 - 1) > 0.1, (n4, n8)

"""s16idle (docs/notes/s16idle_rule.md): each rank's idle judged on a two-round idle folder: the
pooled median of a GPU's idle over both rounds' timed steps against the mean of the twin's idle for
each round (each round predicted from its own fitting split, the host folder's host-level inputs
where the round records none), within the target's band max(10% of the measured idle, 1% of the
measured step); fewer than 10 steps in a round (20 pooled) leave the GPU undecided, not met. The
statistics on their own, the judgement on synthetic figures, the round's inputs on the committed
folders, and the whole path (`twin validate`'s idle entry) on TEST FIXTURE records."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binom

import calibration.pipeline as pipe
import calibration.pipeline_judgement as judgement
from calibration import records as rec
from calibration.validate import format_table, validate
from reports.validation_report import build_page
from tests.calibration import pipeline_fixture as fx
from twin.costs.profile import fitted_profile


@pytest.mark.parametrize("n", [6, 10, 22, 40])
def test_median_interval_is_the_binomial_order_statistics(n):
    lo, hi = judgement.median_interval(list(range(n)))
    k = int(lo) + 1                             # the k-th smallest is the value k - 1 here
    assert hi == n - k                          # and the k-th largest
    assert binom.cdf(k - 1, n, 0.5) <= 0.025 < binom.cdf(k, n, 0.5)
    assert judgement.median_interval(list(range(22))) == (5.0, 16.0)   # the rule's 6th to 17th of 22


def test_median_interval_is_unbounded_for_too_few_values():
    assert judgement.median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) == (None, None)


def _rounds(center_s: float, spread: float, shift_b: float = 0.0, reps: int = 11) -> list[list[float]]:
    """Two rounds of `reps` deterministic values around center_s (+-spread, relative), round b shifted."""
    vals = [center_s * (1 + spread * (2 * i / (reps - 1) - 1)) for i in range(reps)]
    return [vals, [v * (1 + shift_b) for v in vals]]


STEPS = _rounds(0.5, 0.01)   # a 500 ms step: the 1% floor is 5 ms


def test_a_gpu_is_met_within_ten_percent_of_its_pooled_median():
    idle = _rounds(0.100, 0.05)
    inside = judgement.judge_idle_gpu(idle, STEPS, [0.108, 0.108])
    assert inside["decided"] and inside["met"] and inside["measured_s"] == pytest.approx(0.100)
    assert inside["band_s"] == pytest.approx(0.010) and inside["holds_still"]
    assert not judgement.judge_idle_gpu(idle, STEPS, [0.112, 0.112])["met"]
    assert not judgement.judge_idle_gpu(idle, STEPS, [0.088, 0.089])["met"]
    # the twin is the mean of its rounds: one round far off, the other back, met on the mean
    assert judgement.judge_idle_gpu(idle, STEPS, [0.090, 0.118])["twin_s"] == pytest.approx(0.104)


def test_a_small_idle_is_judged_against_one_percent_of_the_step():
    idle = _rounds(0.002, 0.5)                 # DualPipe's ~2 ms: the band is 5 ms, not 0.2
    r = judgement.judge_idle_gpu(idle, STEPS, [0.0004, 0.0004])
    assert r["band_s"] == pytest.approx(0.005, rel=1e-3) and r["met"]
    assert not judgement.judge_idle_gpu(idle, STEPS, [0.0075, 0.0075])["met"]


def test_the_measurement_pools_both_rounds_and_flags_rounds_apart():
    # round b 30% above a: the pooled median between them, the rounds outside its band
    idle = _rounds(0.100, 0.01, shift_b=0.30)
    r = judgement.judge_idle_gpu(idle, STEPS, [0.115, 0.115])
    assert 0.101 < r["measured_s"] < 0.130 and r["met"] and r["holds_still"] is False
    assert r["round_medians_s"] == pytest.approx([0.100, 0.130])
    assert r["lo_s"] < r["measured_s"] < r["hi_s"]


def test_too_few_steps_leave_a_gpu_undecided_and_not_met():
    short = judgement.judge_idle_gpu(_rounds(0.100, 0.05, reps=9), _rounds(0.5, 0.01, reps=9), [0.100, 0.100])
    assert not short["decided"] and not short["met"] and short["steps"] == [9, 9]
    one_round = judgement.judge_idle_gpu([list(np.full(22, 0.1))], [list(np.full(22, 0.5))], [0.1])
    assert not one_round["decided"] and not one_round["met"]
    assert not judgement.judge_idle_gpu(_rounds(0.1, 0.05), STEPS, [None, 0.1])["met"]


def test_a_configuration_is_met_only_where_every_gpu_is():
    idle = {"c": {0: _rounds(0.100, 0.05), 1: _rounds(0.040, 0.05)}}
    twin_ok = {"c": {0: [0.105, 0.105], 1: [0.041, 0.041]}}
    (good,) = judgement.judge_idle(idle, {"c": STEPS}, twin_ok, {"c": True})
    assert good["met"] and good["held_out"] and set(good["gpus"]) == {0, 1}
    (bad,) = judgement.judge_idle(idle, {"c": STEPS}, {"c": {0: [0.105, 0.105], 1: [0.050, 0.050]}}, {"c": False})
    assert not bad["met"] and [g for g, v in bad["gpus"].items() if not v["met"]] == [1]
    assert judgement.idle_counts([good, bad]) == {"met": 3, "total": 4, "held_out_met": 2, "held_out_total": 2}
    text = "\n".join(judgement.format_idle_judgement("fixture", [good, bad]))
    assert "3 of 4 GPUs within 10% (held out 2 of 2)" in text and "MISS" in text


def test_a_round_takes_the_host_folders_inputs_it_does_not_record():
    """The committed 4xH200 ranking round records neither a probe (device gap) nor AccumulateGrad
    rates; with its host folder named it takes h200x4/'s device gap and h200/'s rates, and without,
    none (the ranking's predictions, rule s15rank)."""
    host = rec.MEASUREMENTS_DIR / "h200x4"
    rnd = host / judgement.IDLE_FOLDERS["h200x4"][0] / "round_a"
    prof = fitted_profile("h200")
    _, acc, gap = pipe.host_inputs(rnd, "h200", prof)
    assert acc is None and gap is None
    _, acc, gap = pipe.host_inputs(rnd, "h200", prof, inputs_from=host)
    assert gap == pipe.measured_device_gap_s(host) and 0.5e-6 < gap < 3e-6
    assert acc == pipe.measured_accumulate(host, "h200") and acc is not None
    # a folder with its own keeps its own
    _, acc_own, gap_own = pipe.host_inputs(host, "h200", prof, inputs_from=rnd)
    assert acc_own == acc and gap_own is None   # the gap stays measured_host_s's own (the folder's probe)


def _fixture_round(folder, stretch: dict, reps: int = 11):
    """TEST FIXTURE records: 1F1B and DualPipeV at 4 and 8 micro-batches (8 held out), each step's ops
    scaled by a small deterministic jitter."""
    cfgs = [fx.config(s, n=n) for s in ("1f1b", "dualpipev") for n in (4, 8)]
    fx.write(folder, cfgs, stretch=stretch, reps=reps)
    steps = pd.read_csv(folder / "pipeline_step.csv")
    steps["split"] = np.where(steps["num_microbatches"] == 8, "holdout", "fit")
    steps.to_csv(folder / "pipeline_step.csv", index=False)
    fx.jitter_steps(folder, reps)


@pytest.fixture(scope="module")
def fixture_idle(tmp_path_factory):
    root = tmp_path_factory.mktemp("idle")
    fx.write(root / "h100x2", [fx.config(s, n=n) for s in ("1f1b", "dualpipev") for n in (4, 8, 16)])
    for r in ("round_a", "round_b"):
        _fixture_round(root / "h100x2" / "as_twin" / r, {})
        _fixture_round(root / "h100x2" / "dualpipev_slow" / r, {"dualpipev": 1.25})
    _fixture_round(root / "h100x2" / "short" / "round_a", {}, reps=11)
    _fixture_round(root / "h100x2" / "short" / "round_b", {}, reps=9)
    for r in ("round_a", "round_b"):   # a second idle folder: the 16-micro-batch set (addendum A)
        fx.write(root / "h100x2" / "sixteen" / r, [fx.config(s, n=16) for s in ("1f1b", "dualpipev")], reps=11)
    return root


def test_idle_judgement_on_fixture_rounds(fixture_idle):
    prof = fitted_profile("h100")
    host = fixture_idle / "h100x2"
    same = judgement.idle_judgement(host / "as_twin", host, "h100", prof)
    assert len(same) == 4 and all(c["met"] for c in same)
    assert {c["held_out"] for c in same if " n8 " in c["config"]} == {True}
    assert all(v["steps"] == [11, 11] and v["measured_s"] == pytest.approx(v["twin_s"], rel=0.01, abs=1e-4)
               for c in same for v in c["gpus"].values())
    slow = {c["config"]: c for c in judgement.idle_judgement(host / "dualpipev_slow", host, "h100", prof)}
    # DualPipeV's ops 25% longer: its rank 1 idles 25% more than the twin says (beyond 10%); 1F1B as twin
    assert all(c["met"] == ("1f1b" in k) for k, c in slow.items())
    short = judgement.idle_judgement(host / "short", host, "h100", prof)
    assert not any(c["met"] for c in short) and all(not v["decided"] for c in short for v in c["gpus"].values())


def test_a_host_takes_each_configuration_from_its_first_idle_folder_that_holds_it(fixture_idle, monkeypatch):
    prof = fitted_profile("h100")
    host = fixture_idle / "h100x2"
    monkeypatch.setattr(judgement, "IDLE_FOLDERS", {"h100x2": ("dualpipev_slow", "as_twin", "sixteen", "missing")})
    v = judgement.host_idle_judgement(host, "h100", prof)
    assert v["folders"] == ["dualpipev_slow", "as_twin", "sixteen"]    # one without rounds is not one
    where = {c["config"]: c["folder"] for c in v["configs"]}
    assert len(where) == len(v["configs"]) == 6                         # 4 and 8 once each, then 16
    assert {f for k, f in where.items() if " n16 " not in k} == {"dualpipev_slow"}
    assert {f for k, f in where.items() if " n16 " in k} == {"sixteen"}
    assert v["counts"] == judgement.idle_counts(v["configs"]) and v["counts"]["total"] == 12
    monkeypatch.setattr(judgement, "IDLE_FOLDERS", {"h200x2": ("as_twin",)})
    assert judgement.host_idle_judgement(host, "h100", prof) is None


def test_validate_carries_the_idle_folders_judgement(fixture_idle, monkeypatch):
    monkeypatch.setattr(judgement, "IDLE_FOLDERS", {"h100x2": ("dualpipev_slow",)})
    monkeypatch.setattr(judgement, "RANKING_FOLDERS", {})
    result = validate(fixture_idle)
    v = result["idle"]["h100x2"]
    assert v["folders"] == ["dualpipev_slow"] and v["gpu"] == "h100" and v["num_gpus"] == 2
    assert {c["folder"] for c in v["configs"]} == {"dualpipev_slow"}
    assert v["counts"]["total"] == 8 and v["counts"]["met"] < 8
    # every configuration of the idle folder is one of the host folder's (nothing judged elsewhere is new)
    host_configs = {judgement.config_key(p["config"]) for p in result["pipelines"]}
    assert {c["config"] for c in v["configs"]} <= host_configs
    assert "idle h100x2:" in format_table(result) and "[dualpipev_slow]" in format_table(result)
    md = build_page(result, pd.DataFrame(result["cases"])).markdown()
    assert "each GPU's idle on two rounds" in md and "NOT met" in md

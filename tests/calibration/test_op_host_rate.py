"""Session s23hrate (docs/notes/s23hrate_rule.md): the per-call host term (ADOPT_OP_HOST_RATE) and the pooled fitting
ratio (ADOPT_POOLED_RATIO) of the step-input twin: the fits on the fitting repetitions, both settings of each switch,
the criteria, the pre-registered files and the switches' verdict."""

import pandas as pd
import pytest

from calibration import op_host_rate as ohr
from calibration import prereg
from calibration import records as rec
from calibration import whole_step as ws
from calibration.records_io import csv_exists, read_csv
from calibration.validate import load_fitted_profile


def test_call_factor_worked_examples():
    # rate 0.80 + 15.3 kernel-equivalents a call: 100 ops -> 0.80 + 0.153; 1000 ops -> 0.80 + 0.0153
    assert ohr.call_factor(100, 0.80, 15.3) == pytest.approx(0.953)
    assert ohr.call_factor(1000, 0.80, 15.3) == pytest.approx(0.8153)


def test_fit_call_term_recovers_a_synthetic_rate_and_constant():
    # host / (ratio x probe) = 0.7 x kernels + 20, exactly, for three layer sizes
    reps = pd.DataFrame({"net": [30.0, 50.0, 170.0]})
    reps["host_over_ratio_probe"] = 0.7 * reps["net"] + 20.0
    assert ohr.fit_call_term(reps) == pytest.approx((0.7, 20.0))


def test_committed_fits_are_the_rules_figures():
    """The rule quotes 0.801 x kernels + 15.3 a call (pooled FIT_RUNS) and pooled ratios 2.095 (h100), 2.221 (h200)."""
    rate, call = ohr.call_term()
    assert rate == pytest.approx(0.801, abs=5e-4) and call == pytest.approx(15.28, abs=5e-3)
    assert ohr.pooled_ratio("h100") == pytest.approx(2.095, abs=5e-4)
    assert ohr.pooled_ratio("h200") == pytest.approx(2.221, abs=5e-4)


def test_record_factor_and_run_ratio_follow_their_switches(monkeypatch):
    row = {"bench": "decode", "model": "tiny", "batch": 4, "prompt_len": 64, "gen_len": 16, "precision": "bf16"}
    profile = load_fitted_profile("h100", rec.load_records("h100"))[0]
    monkeypatch.setattr(ohr, "ADOPT_OP_HOST_RATE", False)
    monkeypatch.setattr(ohr, "ADOPT_POOLED_RATIO", False)
    assert ohr.record_factor(row, "h100", profile) == 1.0
    assert ohr.run_ratio("h100", 2.5) == 2.5
    monkeypatch.setattr(ohr, "ADOPT_OP_HOST_RATE", True)
    monkeypatch.setattr(ohr, "ADOPT_POOLED_RATIO", True)
    ops = ohr.step_ops(row, "h100", profile)
    assert 100 < ops < 1000
    assert ohr.record_factor(row, "h100", profile) == pytest.approx(ohr.call_factor(ops, *ohr.call_term()))
    assert ohr.run_ratio("h100", 2.5) == ohr.pooled_ratio("h100")


@pytest.mark.parametrize("gpu_name", ["h100", "h200"])
def test_switches_leave_the_committed_validation_rows(gpu_name, monkeypatch):
    """R6: whole_step.predict_model_row reads neither switch: the first committed prefill, decode and train_step
    rows of the GPU's model.csv are predicted identically with both switches on and off."""
    profile, gpu = load_fitted_profile(gpu_name, rec.load_records(gpu_name))[0], ws.gpu_spec(gpu_name)
    rows = read_csv(rec.MEASUREMENTS_DIR / gpu_name / "model.csv")
    rows = rows[rows["bench"].isin(["prefill", "decode", "train_step"])].groupby("bench").head(1)
    assert len(rows) == 3
    figures = {}
    for setting in (False, True):
        monkeypatch.setattr(ohr, "ADOPT_OP_HOST_RATE", setting)
        monkeypatch.setattr(ohr, "ADOPT_POOLED_RATIO", setting)
        figures[setting] = [ws.predict_model_row(r, gpu, profile) for _, r in rows.iterrows()]
    assert figures[True] == figures[False]


def _section(groups: dict) -> dict:
    """{twin: {(gpu, bench): [signed errors]}} -> an op_rate_sections-shaped dict."""
    out = {}
    for name, by_group in groups.items():
        rows = [{"gpu": g, "bench": b, "step_rel_error": e} for (g, b), errs in by_group.items() for e in errs]
        out[name] = {"rows": rows, "by_gpu": prereg.step_summary(pd.DataFrame(rows).assign(probe_effect=0.0))}
    return out


B = {("h100", "decode"): [0.10, -0.12, 0.02], ("h200", "prefill"): [0.20, 0.10, 0.01]}


def test_op_rate_criteria_adopt_a_candidate_better_on_the_fresh_and_the_seen_runs():
    better = {("h100", "decode"): [0.03, -0.02, 0.02], ("h200", "prefill"): [0.05, 0.04, 0.01]}
    c = prereg.op_rate_criteria(_section({"step_input": B, "op_rate": better}),
                                [_section({"step_input": B, "op_rate": better})])
    assert all(c[k] for k in ("R1", "R2", "R3", "R4", "R5")) and c["adopt"] and c["met"] == 2


def test_op_rate_criteria_refuse_a_candidate_that_loses_a_met_group_on_a_seen_run():
    # the seen run: B meets h100 decode (3% / <10%); the candidate is better pooled but misses it (P90 over 10%)
    seen_b = {("h100", "decode"): [0.03, -0.04, 0.02], ("h200", "prefill"): [0.20, 0.30, 0.25]}
    seen_c = {("h100", "decode"): [0.01, -0.20, 0.02], ("h200", "prefill"): [0.08, 0.09, 0.07]}
    better = {("h100", "decode"): [0.03, -0.02, 0.02], ("h200", "prefill"): [0.05, 0.04, 0.01]}
    c = prereg.op_rate_criteria(_section({"step_input": B, "op_rate": better}),
                                [_section({"step_input": seen_b, "op_rate": seen_c})])
    assert c["R1"] and c["R2"] and c["R3"] and c["R4"] and not c["R5"] and not c["adopt"]


def test_s23hrate_files_cover_the_cases_from_one_commit():
    """The three pre-registered files hold every case of S23HRATE, written by one commit; the factors file equals the
    factors the committed code computes now (the fit is over FIT_RUNS, which the fresh run does not join)."""
    reg = prereg.S23HRATE
    files = [reg.predictions_file, prereg.GRID_FILES[reg.name][0], prereg.OP_FACTOR_FILES[reg.name]]
    assert all(csv_exists(f) for f in files)
    frames = [read_csv(f) for f in files]
    assert len({c for df in frames for c in df["code_commit"].unique()}) == 1
    cases = {tuple(r[k] for k in reg.key) for r in prereg.case_rows(reg)}
    for df in frames:
        assert {tuple(r) for r in df[reg.key].itertuples(index=False)} == cases
    factors = frames[2]
    rate, call = ohr.call_term()
    assert factors["op_host_factor"].to_numpy() == pytest.approx(rate + call / factors["twin_ops"].to_numpy())


def test_switches_follow_the_rule():
    """docs/notes/s23hrate_rule.md, Outcome: on the earlier fresh runs the per-call term fails R4 (pooled median
    and P90 worse: e.g. s22host2 H100 decode 3.3% / 12.6% -> 19.9% / 26.7%) and the pooled ratio fails R5 (s22host2
    H100 prefill loses its target: 3.4% / 7.6% -> 2.5% / 10.5%): neither is adopted."""
    assert ohr.ADOPT_OP_HOST_RATE is False and ohr.ADOPT_POOLED_RATIO is False


def test_step_rate_per_twin_op_reads_one_run():
    """The diagnostic on s22host2's H100 run: 8 decode records; llama3-8b's profiled steps launch more kernels than
    the twin's op list holds (1092-1189 against ~1000), so its rate per twin op exceeds its rate per kernel."""
    rows = ohr.step_rate_per_twin_op(runs=(("h100", "s22host2"),))
    assert len(rows) == 8 and set(rows["model"]) == {"llama3-8b", "tiny"}
    assert rows["per_twin_op"].to_numpy() == pytest.approx((rows["per_kernel"] * rows["kernels"] / rows["twin_ops"]).to_numpy())
    llama = rows[rows["model"] == "llama3-8b"]
    assert (llama["kernels"] > llama["twin_ops"]).all() and (llama["per_twin_op"] > llama["per_kernel"]).all()


# s23hrate's fresh runs (calibration/measurements/h100/s23hrate*/: three fresh H100 hosts, 00:17, 00:26, 00:29 UTC;
# h200/s23hrate: a fresh H200, 01:18 UTC):
# issue 13's targets per group under the adopted step-input twin (and the plain twin on the first); the misses carry
# their live figures
S23HRATE_MISSES = {
    ("s23hrate", "plain", "h100 decode"): "plain twin, s23hrate fresh H100: median 57.2%, P90 57.9% (host-bound at the "
                                          "profile's rate)",
    ("s23hrate", "plain", "h100 prefill"): "plain twin, s23hrate fresh H100: median 53.6%, P90 57.1%",
    ("s23hrate", "step_input", "h100 prefill"): "step-input twin, s23hrate fresh H100: median 4.6%, P90 24.8% "
                                                "(megatron-gpt-1.7b prefill b1 p384 +26.1%, b4 p768 -24.2%: GPU-bound; "
                                                "its 5461-wide FFN likely on unaligned cutlass align1/2 GEMMs, as in its "
                                                "profiled decode steps)",
    ("s23hrate_b", "step_input", "h100 decode"): "step-input twin, s23hrate_b fresh H100: median 13.3%, P90 14.7% "
                                                 "(signed +10.7%: steps at 0.87 of ratio x probe per twin op)",
    ("s23hrate_b", "step_input", "h100 prefill"): "step-input twin, s23hrate_b fresh H100: median 18.1%, P90 28.9%",
    ("s23hrate_c", "step_input", "h100 decode"): "step-input twin, s23hrate_c fresh H100: median 15.6%, P90 19.6% "
                                                 "(signed -14.3%: steps at 1.18 of ratio x probe per twin op)",
    ("s23hrate_c", "step_input", "h100 prefill"): "step-input twin, s23hrate_c fresh H100: median 10.3%, P90 22.4%",
    # the fresh H200 (01:18 UTC, the session's only H200; calibration/measurements/h200/s23hrate)
    ("s23hrate", "plain", "h200 decode"): "plain twin, s23hrate fresh H200: median 45.4%, P90 48.7%",
    ("s23hrate", "plain", "h200 prefill"): "plain twin, s23hrate fresh H200: median 45.4%, P90 52.7%",
    ("s23hrate", "step_input", "h200 prefill"): "step-input twin, s23hrate fresh H200: median 9.1%, P90 25.0%",
}
CASES = [(run, "plain", g) for run in ("s23hrate",) for g in ("h100 decode", "h100 prefill", "h200 decode",
                                                                  "h200 prefill")] + [
    (run, "step_input", g) for run in ("s23hrate", "s23hrate_b", "s23hrate_c") for g in ("h100 decode", "h100 prefill")] + [
    ("s23hrate", "step_input", g) for g in ("h200 decode", "h200 prefill")]


@pytest.fixture(scope="module")
def s23hrate_runs():
    out = {}
    for name in ("s23hrate", "s23hrate_b", "s23hrate_c"):
        reg = prereg.REGISTRATIONS[name]
        if not csv_exists(rec.MEASUREMENTS_DIR / "h100" / reg.records_subdir / "model.csv"):
            pytest.skip(f"no {name} records")
        section = prereg.step_section(reg=reg, grid_path=prereg.GRID_FILES[name][0], sync_grid_path=None,
                                      occupancy_grid_path=None)
        out[name] = {"plain": section["plain"], "step_input": section["step_input"]}
    return out


@pytest.mark.parametrize("run,twin,label", [
    pytest.param(*c, marks=pytest.mark.xfail(strict=True, reason=S23HRATE_MISSES[c])) if c in S23HRATE_MISSES else c
    for c in CASES])
def test_s23hrate_twin_meets_issue13_serve_targets(s23hrate_runs, run, twin, label):
    assert s23hrate_runs[run][twin]["by_gpu"][label]["meets_target"]

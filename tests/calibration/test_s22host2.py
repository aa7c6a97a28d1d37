"""Session s22host2 (docs/notes/s22host2_rule.md): the synchronised step twin and the decode occupancy term judged on
a fresh run of models no prefill / decode record held (llama3-8b, tiny): the criteria (prereg.fresh_criteria), the
pre-registered files, the occupancy switch's guard on the committed validation rows (F3) and the switches' verdict."""

import pytest

from calibration import prereg, step_host
from calibration import records as rec
from calibration import whole_step as ws
from calibration.records_io import csv_exists, read_csv
from calibration.validate import load_fitted_profile


def _rows(gpu: str, bench: str, errs: list[float]) -> list[dict]:
    return [{"gpu": gpu, "bench": bench, "step_rel_error": e} for e in errs]


def _section(b2b: dict, synced: dict, occupancy: dict) -> dict:
    """A step_section-shaped dict from {(gpu, bench): [signed errors]} per twin."""
    def part(groups):
        rows = [r for (g, b), errs in groups.items() for r in _rows(g, b, errs)]
        return {"rows": rows, "by_gpu": prereg.step_summary(prereg.pd.DataFrame(rows).assign(probe_effect=0.0))}
    return {"step_input": part(b2b), "synced": part(synced), "occupancy": part(occupancy)}


B2B = {("h100", "decode"): [0.10, -0.12, 0.02], ("h100", "prefill"): [0.30, 0.04, 0.02],
       ("h200", "decode"): [0.03, 0.04, 0.02], ("h200", "prefill"): [0.20, 0.10, 0.01]}


def test_fresh_criteria_adopt_a_candidate_better_pooled_and_no_group_worse():
    synced = {**B2B, ("h100", "decode"): [0.04, -0.03, 0.02], ("h100", "prefill"): [0.08, 0.04, 0.02]}
    occupancy = {**synced, ("h100", "decode"): [0.03, -0.02, 0.01]}
    c = prereg.fresh_criteria(_section(B2B, synced, occupancy))
    assert c["synced"]["E1"] and c["synced"]["E2"] and c["synced"]["E3"] and c["adopt_synced"]
    assert c["F2"] and c["adopt_occupancy"]


def test_fresh_criteria_refuse_a_group_worse_beyond_the_slack_or_occupancy_worse_than_synced():
    # h200 decode P90 0.04 -> 0.07 (+3 pt > 2 pt): E1 fails although the pooled figures improve
    synced = {**B2B, ("h100", "decode"): [0.04, -0.03, 0.02], ("h200", "decode"): [0.03, 0.07, 0.02],
              ("h100", "prefill"): [0.05, 0.04, 0.02]}
    c = prereg.fresh_criteria(_section(B2B, synced, synced))
    assert not c["synced"]["E1"] and not c["adopt_synced"] and not c["adopt_occupancy"]
    good = {**B2B, ("h100", "decode"): [0.04, -0.03, 0.02], ("h100", "prefill"): [0.08, 0.04, 0.02]}
    worse_decode = {**good, ("h100", "decode"): [0.05, -0.04, 0.02]}   # passes E1-E3 against B, not F2
    c = prereg.fresh_criteria(_section(B2B, good, worse_decode))
    assert c["adopt_synced"] and c["occupancy"]["pass"] and not c["F2"] and not c["adopt_occupancy"]


@pytest.mark.parametrize("gpu_name", ["h100", "h200"])
def test_occupancy_switch_leaves_the_committed_validation_rows(gpu_name, monkeypatch):
    """F3: every committed decode row `twin validate` reads (back to back: host-bound) and the first prefill and
    train_step row are predicted within 1e-9 with ADOPT_DECODE_OCCUPANCY on and off (the switch is read by
    whole_step.decode_ops only; test_synced_steps.py checks a prefill row beside a decode one)."""
    profile, gpu = load_fitted_profile(gpu_name, rec.load_records(gpu_name))[0], ws.gpu_spec(gpu_name)
    rows = read_csv(rec.MEASUREMENTS_DIR / gpu_name / "model.csv")
    rows = rows[rows["bench"] == "decode"].pipe(
        lambda d: prereg.pd.concat([d, rows[rows["bench"].isin(["prefill", "train_step"])].groupby("bench").head(1)]))
    assert (rows["bench"] == "decode").sum() >= 5
    monkeypatch.setattr(ws, "ADOPT_DECODE_OCCUPANCY", False)
    off = [ws.predict_model_row(r, gpu, profile) for _, r in rows.iterrows()]
    monkeypatch.setattr(ws, "ADOPT_DECODE_OCCUPANCY", True)
    on = [ws.predict_model_row(r, gpu, profile) for _, r in rows.iterrows()]
    assert on == pytest.approx(off, rel=1e-9)


def test_s22host2_files_cover_the_cases_from_one_commit():
    n = len(step_host.STEP_HOST_GRID_S)
    reg = prereg.S22HOST2
    preds = read_csv(reg.predictions_file)
    grids = [read_csv(prereg.GRID_FILES[reg.name][0]), read_csv(prereg.SYNC_GRID_FILES[reg.name]),
             read_csv(prereg.OCC_GRID_FILES[reg.name])]
    assert len(preds) == 32 and all(len(g) == 32 * n for g in grids)
    assert len(set(preds["code_commit"]).union(*(set(g["code_commit"]) for g in grids))) == 1
    step, sync, _ = grids
    assert (sync["predicted_s"] >= step["predicted_s"] - 1e-12).all()   # a synchronised step is never shorter


# s22host2's fresh run (calibration/measurements/<gpu>/s22host2/: a fresh H100 80GB HBM3 22:33 UTC and a fresh H200
# 22:35 UTC, the cold process; llama3-8b and tiny). Groups missing issue 13's targets: strict xfails carrying the live
# figures (median / P90 |err|); the occupancy candidate equals the synchronised twin here (llama3-8b has no experts,
# tiny's decode steps are host-bound).
S22HOST2_MISSED = {
    ("plain", "h100 decode"): "plain twin, s22host2 fresh H100: median 11.6%, P90 25.4%",
    ("plain", "h100 prefill"): "plain twin, s22host2 fresh H100: median 7.2%, P90 23.9%",
    ("plain", "h200 decode"): "plain twin, s22host2 fresh H200: median 9.3%, P90 16.6%",
    ("plain", "h200 prefill"): "plain twin, s22host2 fresh H200: median 4.7%, P90 11.7%",
    ("step_input", "h100 decode"): "step-input twin, s22host2 fresh H100: median 3.3%, P90 12.6% (llama3-8b b32 p512 -25.7%)",
    ("step_input", "h200 decode"): "step-input twin, s22host2 fresh H200: median 8.4%, P90 14.6% (tiny +8..+15%)",
    ("step_input", "h200 prefill"): "step-input twin, s22host2 fresh H200: median 10.2%, P90 19.0% (tiny +7..+18%, llama3-8b b1 p512 +20.7%)",
    ("synced", "h100 decode"): "synchronised twin, s22host2 fresh H100: median 2.5%, P90 12.2% (llama3-8b b32 p512 -24.6%)",
    ("synced", "h200 decode"): "synchronised twin, s22host2 fresh H200: median 9.7%, P90 14.6% (tiny +8..+15%, llama3-8b +8..+10%)",
    ("synced", "h200 prefill"): "synchronised twin, s22host2 fresh H200: median 10.2%, P90 19.6%",
}
S22HOST2_MISSED.update({("occupancy", g): "synchronised + occupancy twin (= synchronised here): " + r.split(": ", 1)[1]
                        for (t, g), r in list(S22HOST2_MISSED.items()) if t == "synced"})
TWINS_GROUPS = [(t, g) for t in ("plain", "step_input", "synced", "occupancy")
                for g in ("h100 decode", "h100 prefill", "h200 decode", "h200 prefill")]


@pytest.fixture(scope="module")
def s22host2():
    if not csv_exists(rec.MEASUREMENTS_DIR / "h100" / "s22host2" / "model.csv"):
        pytest.skip("no s22host2 records")
    return prereg.registered_step_section(prereg.S22HOST2)


@pytest.mark.parametrize("twin,label", [pytest.param(*k, marks=pytest.mark.xfail(strict=True, reason=S22HOST2_MISSED[k]))
                                        if k in S22HOST2_MISSED else k for k in TWINS_GROUPS])
def test_s22host2_twin_meets_issue13_serve_targets(s22host2, twin, label):
    assert s22host2[twin]["by_gpu"][label]["meets_target"]


def test_s22host2_switches_follow_the_rule(s22host2):
    """Every one of the 32 rows timed; E1 fails (H200 decode median 8.4% -> 9.7%, over the 1.0 pt allowed) and E2 fails
    (all rows pooled: median 6.7% -> 7.2%), so neither switch is adopted (docs/notes/s22host2_rule.md)."""
    assert len(s22host2["step_input"]["rows"]) == 32
    c = prereg.fresh_criteria(s22host2)
    assert (c["synced"]["E1"], c["synced"]["E2"], c["synced"]["E3"]) == (False, False, True)
    assert not c["adopt_synced"] and not c["adopt_occupancy"]
    assert ws.ADOPT_SYNCED_STEPS is False and ws.ADOPT_DECODE_OCCUPANCY is False

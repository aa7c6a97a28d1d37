"""calibration.prereg_pp (session s20ppnew): PP2 pipeline steps of the new MoE slices, pre-registered
through the path `twin validate` prices the committed two-GPU pipeline_step rows with."""

import re

import pandas as pd
import pytest

from calibration import pipeline as pipe
from calibration import prereg, prereg_pp
from calibration import records as rec
from calibration.whole_step import with_measured_collectives
from calibration.validate import load_fitted_profile


def test_case_rows_cover_both_gpus_every_model_schedule_and_count():
    rows = prereg_pp.case_rows()
    assert len(rows) == 2 * len(prereg_pp.CASES) * len(prereg_pp.SCHEDULES) * len(prereg_pp.MICROBATCHES)
    assert {(r["pp"], r["ep"], r["dp"], r["num_gpus"], r["bench"]) for r in rows} == {(2, 1, 1, 2, "pipeline_step")}
    assert {r["schedule"] for r in rows} == {"1f1b", "zb1p", "dualpipev", "dualpipe"}


def test_predictions_are_validations_price_of_the_committed_pipeline_steps():
    """prereg.predict_ep on the committed v2-lite-slice pipeline_step rows of h200x2 (pp 2, every
    schedule) gives the step and each rank's idle that `twin validate` (pipeline.predict_folder)
    predicts for them: the new slices take the same path."""
    gpu = "h200"
    folder = rec.MEASUREMENTS_DIR / f"{gpu}x2"
    profile = load_fitted_profile(gpu, rec.load_records(gpu))[0]
    cases = [c for c in pipe.predict_folder(folder, gpu, with_measured_collectives(profile, folder))
             if c["row"]["bench"] == "pipeline_step"]
    assert len(cases) == 12 and {c["row"]["schedule"] for c in cases} == set(prereg_pp.SCHEDULES)
    got = prereg.predict_ep([{**c["row"].to_dict(), "gpu": gpu} for c in cases])
    assert got["predicted_s"].tolist() == pytest.approx([c["predicted_s"] for c in cases], rel=1e-12)
    for r in (0, 1):
        assert got[f"predicted_idle_r{r}_s"].tolist() == pytest.approx(
            [c["idle_simulated_s"][r] for c in cases], rel=1e-12, abs=1e-15)


def test_committed_predictions_name_their_commit_and_cover_the_cases():
    df = prereg.load_predictions(prereg_pp.PREDICTIONS_FILE)
    got = sorted(tuple(r) for r in df[prereg_pp.KEY].itertuples(index=False))
    want = sorted(tuple(r[k] for k in prereg_pp.KEY) for r in prereg_pp.case_rows())
    assert got == want
    assert df["code_commit"].nunique() == 1 and re.fullmatch(r"[0-9a-f]{40}", df["code_commit"].iloc[0])
    assert (df["predicted_s"] > 0).all() and (df[["predicted_idle_r0_s", "predicted_idle_r1_s"]] >= 0).all().all()
    # more micro-batches, more seconds
    for _, sub in df.groupby(["gpu", "model", "schedule"]):
        assert sub.sort_values("num_microbatches")["predicted_s"].is_monotonic_increasing


def _ops(schedule, n, rep, step_s, busy_s):
    """pipeline_ops rows of one timed step: each rank one forward spanning busy_s[rank], the step's
    span step_s (a send on rank 0 reaching the end)."""
    base = {"model": "mixtral-mla-slice", "schedule": schedule, "pp": 2, "ep": 1, "num_microbatches": n,
            "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16", "rep": rep}
    rows = [{**base, "rank": r, "kind": "F", "start_s": 0.0, "end_s": b} for r, b in enumerate(busy_s)]
    return rows + [{**base, "rank": 0, "kind": "send", "start_s": 0.0, "end_s": step_s}]


def test_section_reads_steps_idle_and_ranking(tmp_path):
    """Two schedules' records in <root>/h200x2/s20ppnew/<model>/: 1f1b measured 0.30 s (4 steps), zb1p
    0.28 s; predictions 0.3135 (+4.5%) and 0.2674 (-4.5%); the pair is resolved (4 against 4, all
    apart: p 0.029) and the twin orders it as measured; idle of rank 0 predicted 0.10 vs measured 0.10
    (within), rank 1 0.05 vs 0.02 (outside 10% and 1% of the step)."""
    key = {"gpu": "h200", "model": "mixtral-mla-slice", "num_layers": 4, "num_microbatches": 4}
    preds = tmp_path / "p.csv"
    pd.DataFrame([{**key, "schedule": "1f1b", "predicted_s": 0.3135, "predicted_idle_r0_s": 0.10,
                   "predicted_idle_r1_s": 0.05, "code_commit": "a" * 40},
                  {**key, "schedule": "zb1p", "predicted_s": 0.2674, "predicted_idle_r0_s": 0.08,
                   "predicted_idle_r1_s": 0.0, "code_commit": "a" * 40}]).to_csv(preds, index=False)
    d = tmp_path / "h200x2" / "s20ppnew" / "mixtral-mla-slice"
    d.mkdir(parents=True)
    steps, ops = [], []
    for sched, t in (("1f1b", 0.30), ("zb1p", 0.28)):
        steps.append({"bench": "pipeline_step", "model": "mixtral-mla-slice", "schedule": sched, "pp": 2, "ep": 1,
                      "num_microbatches": 4, "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16",
                      "num_layers": 4, "time_s": t, "gpu_name": "NVIDIA H200"})
        for rep in range(4):
            ops += _ops(sched, 4, rep, t + 0.001 * rep, (t + 0.001 * rep - 0.10, t + 0.001 * rep - 0.02))
    pd.DataFrame(steps).to_csv(d / "pipeline_step.csv", index=False)
    pd.DataFrame(ops).to_csv(d / "pipeline_ops.csv", index=False)
    sec = prereg_pp.section(tmp_path, preds)
    assert sec["by_gpu"]["h200"]["num_cases"] == 2
    assert sorted(round(r["rel_error"], 6) for r in sec["rows"]) == [-0.045, 0.045]
    (pair,) = sec["ranking"]
    assert pair["resolved"] and pair["ordered"] and pair["p"] == pytest.approx(2 / 70)
    f1b = {i["rank"]: i["within"] for i in sec["idle"] if i["schedule"] == "1f1b"}
    assert f1b == {0: True, 1: False}
    text = prereg_pp.format_table(sec)
    assert "prereg-pp h200x2: 2 rows, median |err| 4.5%, P90 4.5% (target 5% / 10%: met)" in text
    assert "ranking h200x2: 1 of 1 pairs resolved" in text and "idle h200x2: 1 of 4 rank-rows within" in text
    assert prereg_pp.format_table(prereg_pp.section(tmp_path / "none", preds)).endswith("no records yet")


def test_committed_records_meet_issue13_pipeline_step_target_and_ranking():
    """The campaign's records (calibration/measurements/h200x2/s20ppnew/, 2xH200, 17:46-17:48 UTC)
    beside the predictions committed before it ran: all 24 steps (3 slices x 4 schedules x 4, 8
    micro-batches) have their prediction; median |error| 1.3%, P90 3.2% (issue 13's pipeline_step
    target 5% / 10%: met); every pair of schedules the run resolves (31 of 36 at p < 0.05) is ordered
    as measured (the rule of docs/notes/s20ppnew.md)."""
    sec = prereg_pp.section()
    s = sec["by_gpu"]["h200"]
    assert s["num_cases"] == 24
    assert s["meets_target"], s
    pairs = [p for p in sec["ranking"] if p["gpu"] == "h200"]
    resolved = [p for p in pairs if p["resolved"]]
    assert len(pairs) == 36 and resolved
    assert all(p["ordered"] for p in resolved), [p for p in resolved if not p["ordered"]]
    meas = prereg_pp.measured()
    assert set(meas[meas["gpu"] == "h200"]["gpu_name"]) == {"NVIDIA H200"}


def test_committed_h100_records_meet_issue13_pipeline_step_target():
    """The same campaign on 2xH100 (calibration/measurements/h100x2/s20ppnew/, 20:26-20:28 UTC of
    session 21, archive of 8428481): 23 of the 24 steps (mixtral dualpipe at 8 micro-batches was cut
    by its part's timeout) beside the same committed predictions: median |error| 1.7%, P90 3.3%
    (issue 13's pipeline_step target 5% / 10%: met)."""
    sec = prereg_pp.section()
    s = sec["by_gpu"]["h100"]
    assert s["num_cases"] == 23 and s["meets_target"], s
    meas = prereg_pp.measured()
    assert set(meas[meas["gpu"] == "h100"]["gpu_name"]) == {"NVIDIA H100 80GB HBM3"}


@pytest.mark.xfail(strict=True, reason="s20ppnew ranking on 2xH100 missed: 31 of 33 pairs resolved, 30 ordered as "
                   "measured; qwen2moe-mla-slice at 4 micro-batches: zb1p measured faster than dualpipev "
                   "(190.8 vs 195.1 ms, p 0.029), predicted slower (191.5 vs 190.3 ms)")
def test_committed_h100_records_order_every_resolved_schedule_pair_as_measured():
    """The rule's ranking judgement (docs/notes/s20ppnew.md) on the 2xH100 records."""
    resolved = [p for p in prereg_pp.section()["ranking"] if p["gpu"] == "h100" and p["resolved"]]
    assert len(resolved) == 31
    assert all(p["ordered"] for p in resolved), [p for p in resolved if not p["ordered"]]

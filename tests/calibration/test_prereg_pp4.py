"""calibration.prereg_pp4 (session s21pp4): four-GPU pipeline steps (PP4, PP2 x EP2) of the new MoE
slices, pre-registered through the path `twin validate` prices the committed four-GPU pipeline_step rows with."""

import functools

import pandas as pd
import pytest

from calibration import pipeline as pipe
from calibration import prereg, prereg_pp4
from calibration import records as rec
from calibration.records_io import read_csv
from calibration.validate import load_fitted_profile
from calibration.whole_step import with_measured_collectives


def test_case_rows_cover_both_gpus_every_model_layout_schedule_and_count():
    rows = prereg_pp4.case_rows()
    per_model = sum(len(c) for c in prereg_pp4.MICROBATCHES.values()) * len(prereg_pp4.SCHEDULES)
    assert len(rows) == 2 * len(prereg_pp4.CASES) * per_model == 72
    assert {(r["pp"], r["ep"], r["dp"], r["num_gpus"], r["bench"]) for r in rows} == {
        (4, 1, 1, 4, "pipeline_step"), (2, 2, 2, 4, "pipeline_step")}
    assert {(r["pp"], r["num_microbatches"]) for r in rows} == {(4, 8), (4, 16), (2, 4)}
    assert {r["schedule"] for r in rows} == {"1f1b", "zb1p", "dualpipev", "dualpipe"}


def test_predictions_are_validations_price_of_the_committed_four_gpu_steps():
    """prereg.predict_ep with num_gpus 4 on the committed v2-lite-slice pipeline_step rows of h200x4
    (pp 2 x ep 2, every schedule) gives the step and each pipeline rank's idle that `twin validate`
    (pipeline.predict_folder) predicts for them: the new slices and layouts take the same path."""
    gpu = "h200"
    folder = rec.MEASUREMENTS_DIR / f"{gpu}x4"
    profile = load_fitted_profile(gpu, rec.load_records(gpu))[0]
    cases = [c for c in pipe.predict_folder(folder, gpu, with_measured_collectives(profile, folder))
             if c["row"]["bench"] == "pipeline_step"]
    assert len(cases) == 12 and {c["row"]["schedule"] for c in cases} == set(prereg_pp4.SCHEDULES)
    rows = [{**c["row"].to_dict(), "gpu": gpu} for c in cases]
    # validation prices each EP layer at the run's own routing under R (s22epq); the pre-registrations
    # (no routing before the run) take prereg_pp4.predict's path, which is this one without it
    got = (prereg.predict_ep(rows, num_gpus=4, routing=read_csv(folder / "pipeline_routing.csv"))
           if pipe.ADOPT_EP_ROUTED_ROWS else prereg_pp4.predict(rows))
    assert got["predicted_s"].tolist() == pytest.approx([c["predicted_s"] for c in cases], rel=1e-12)
    for r in (0, 1):
        assert got[f"predicted_idle_r{r}_s"].tolist() == pytest.approx(
            [c["idle_simulated_s"][r] for c in cases], rel=1e-12, abs=1e-15)


def _ops(schedule, pp, ep, n, rep, step_s, busy_s):
    """pipeline_ops rows of one timed step: each rank one forward spanning busy_s[rank], the step's
    span step_s (a send on rank 0 reaching the end)."""
    base = {"model": "mixtral-mla-slice", "schedule": schedule, "pp": pp, "ep": ep, "num_microbatches": n,
            "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16", "rep": rep}
    rows = [{**base, "rank": r, "kind": "F", "start_s": 0.0, "end_s": b} for r, b in enumerate(busy_s)]
    return rows + [{**base, "rank": 0, "kind": "send", "start_s": 0.0, "end_s": step_s}]


def test_section_reads_steps_idle_by_pipeline_rank_and_ranking(tmp_path):
    """Two pp2ep2 schedules' records in <root>/h200x4/s21pp4/<model>/ (four ranks: global rank r is
    pipeline rank r % 2): 1f1b measured 0.30 s (4 steps), zb1p 0.28 s; predictions +4.5% and -4.5%;
    the pair resolved (4 against 4, all apart: p 0.029) and ordered as measured. 1f1b's idle: ranks 0
    and 2 measured 0.10 against pipeline rank 0's predicted 0.10 (within), ranks 1 and 3 0.02
    against 0.05 (outside 10% and 1% of the step)."""
    key = {"gpu": "h200", "model": "mixtral-mla-slice", "pp": 2, "ep": 2, "num_layers": 8, "num_microbatches": 4}
    preds = tmp_path / "p.csv"
    pd.DataFrame([{**key, "schedule": "1f1b", "predicted_s": 0.3135, "predicted_idle_r0_s": 0.10,
                   "predicted_idle_r1_s": 0.05, "code_commit": "a" * 40},
                  {**key, "schedule": "zb1p", "predicted_s": 0.2674, "predicted_idle_r0_s": 0.08,
                   "predicted_idle_r1_s": 0.0, "code_commit": "a" * 40}]).to_csv(preds, index=False)
    d = tmp_path / "h200x4" / "s21pp4" / "mixtral-mla-slice"
    d.mkdir(parents=True)
    steps, ops = [], []
    for sched, t in (("1f1b", 0.30), ("zb1p", 0.28)):
        steps.append({"bench": "pipeline_step", "model": "mixtral-mla-slice", "schedule": sched, "pp": 2, "ep": 2,
                      "num_microbatches": 4, "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16",
                      "num_layers": 8, "time_s": t, "gpu_name": "NVIDIA H200"})
        for rep in range(4):
            s = t + 0.001 * rep
            ops += _ops(sched, 2, 2, 4, rep, s, (s - 0.10, s - 0.02, s - 0.10, s - 0.02))
    pd.DataFrame(steps).to_csv(d / "pipeline_step.csv", index=False)
    pd.DataFrame(ops).to_csv(d / "pipeline_ops.csv", index=False)
    sec = prereg_pp4.section(tmp_path, preds)
    assert sec["by_gpu"]["h200"]["num_cases"] == 2 and set(sec["by_layout"]) == {"h200 pp2ep2"}
    assert sorted(round(r["rel_error"], 6) for r in sec["rows"]) == [-0.045, 0.045]
    (pair,) = sec["ranking"]
    assert pair["resolved"] and pair["ordered"] and pair["p"] == pytest.approx(2 / 70) and pair["layout"] == "pp2ep2"
    f1b = {i["rank"]: i["within"] for i in sec["idle"] if i["schedule"] == "1f1b"}
    assert f1b == {0: True, 1: False, 2: True, 3: False}
    assert prereg_pp4.judgement(sec) == {"h200": {"steps": True, "ranking": True, "idle": False}}
    text = prereg_pp4.format_table(sec)
    assert "prereg-pp4 h200x4: 2 rows, median |err| 4.5%, P90 4.5% (target 5% / 10%: met)" in text
    assert "1 of 1 pairs resolved" in text and "prereg-pp4 idle h200x4: 2 of 8 rank-rows within" in text
    assert prereg_pp4.format_table(prereg_pp4.section(tmp_path / "none", preds)).endswith("no records yet")


def test_committed_predictions_name_their_commit_and_cover_the_cases():
    df = prereg.load_predictions(prereg_pp4.PREDICTIONS_FILE)
    got = sorted(tuple(r) for r in df[prereg_pp4.KEY].itertuples(index=False))
    want = sorted(tuple(r[k] for k in prereg_pp4.KEY) for r in prereg_pp4.case_rows())
    assert got == want
    assert df["code_commit"].nunique() == 1 and len(df["code_commit"].iloc[0]) == 40
    assert (df["predicted_s"] > 0).all()
    # pp4 rows carry four pipeline ranks' idle, pp2ep2 rows two
    pp4 = df[df["pp"] == 4]
    assert pp4[[f"predicted_idle_r{r}_s" for r in range(4)]].notna().all().all()
    assert df[df["pp"] == 2][["predicted_idle_r2_s", "predicted_idle_r3_s"]].isna().all().all()
    for _, sub in pp4.groupby(["gpu", "model", "schedule"]):   # more micro-batches, more seconds
        assert sub.sort_values("num_microbatches")["predicted_s"].is_monotonic_increasing


@functools.cache
def _first_delivery():
    return prereg_pp4.section()


def test_first_delivery_meets_issue13_pipeline_step_target():
    """The first delivery's records (calibration/measurements/h200x4/s21pp4/, 4xH200, 19:16-19:19 UTC)
    beside the predictions committed before it ran: 35 of the 36 h200 rows measured (qwen3moe's pp2ep2
    dualpipe skipped for the bench's budget), median |error| 2.2%, P90 6.9%: issue 13's pipeline_step
    target (5% / 10%) met (docs/notes/s21pp4_rule.md, judgement 1). PP4 alone 1.6% / 3.1% (24 rows)."""
    sec = _first_delivery()
    s = sec["by_gpu"]["h200"]
    assert set(sec["by_gpu"]) == {"h200"} and s["num_cases"] == 35
    assert s["meets_target"], s
    assert sec["by_layout"]["h200 pp4"]["num_cases"] == 24 and sec["by_layout"]["h200 pp4"]["meets_target"]
    assert set(prereg_pp4.measured()["gpu_name"]) == {"NVIDIA H200"}


@pytest.mark.xfail(strict=True, reason="s21pp4 first delivery, 4xH200: 37 of 51 schedule pairs resolved, 2 "
                   "misordered (qwen2moe pp4 n16 dualpipev/zb1p: measured zb1p 673.0 < dualpipev 680.7 ms, "
                   "predicted 683.3 > 676.2; qwen3moe pp2ep2 n4 1f1b/zb1p: measured 1f1b 350.3 < zb1p 358.6 ms, "
                   "predicted 318.3 > 286.2): the ranking target (no resolved pair misordered) is missed")
def test_first_delivery_orders_every_resolved_schedule_pair_as_measured():
    resolved = [p for p in _first_delivery()["ranking"] if p["resolved"]]
    assert resolved and all(p["ordered"] for p in resolved), [p for p in resolved if not p["ordered"]]


@pytest.mark.xfail(strict=True, reason="s21pp4 first delivery, 4xH200: 107 of 140 rank-rows within 10% of the "
                   "measured idle or 1% of the step (pp4 85 of 96, pp2ep2 22 of 44); the twin's idle is short "
                   "where its step is (mixtral pp4 dualpipev n16 ranks 1-3 ~111 vs 145-149 ms; qwen3moe pp2ep2 "
                   "zb1p ranks 0, 2 88 vs 131 ms): the idle target (every rank-row within) is missed")
def test_first_delivery_predicts_every_ranks_idle():
    idle = _first_delivery()["idle"]
    assert idle and all(i["within"] for i in idle), sum(i["within"] for i in idle)


@functools.cache
def _second_delivery():
    return prereg_pp4.section(subdir=prereg_pp4.SECOND_SUBDIR)


def test_second_delivery_holds_every_pp2ep2_configuration_on_four_timed_steps():
    """The second delivery (real/campaigns/s21pp4b.sh, 4xH200, 21:16-21:18 UTC; calibration/measurements/
    h200x4/s21pp4b/): all 12 pp2ep2 configurations, each on 4 timed steps, judged on its own (addendum A)."""
    sec = _second_delivery()
    assert set(sec["by_gpu"]) == {"h200"} and sec["by_gpu"]["h200"]["num_cases"] == 12
    assert set(sec["by_layout"]) == {"h200 pp2ep2"}
    meas = prereg_pp4.measured(subdir=prereg_pp4.SECOND_SUBDIR)
    assert set(meas["gpu_name"]) == {"NVIDIA H200"} and (meas["step_times_s"].map(len) == 4).all()


@pytest.mark.xfail(strict=True, reason="s21pp4b second delivery, 4xH200: 12 pp2ep2 rows, median |error| 5.2%, P90 "
                   "7.7%, every row under-predicted (qwen2moe dualpipe -7.7%, zb1p -8.3%; qwen3moe 1f1b -7.7%): "
                   "issue 13's pipeline_step target (5% / 10%) missed on the median")
def test_second_delivery_meets_issue13_pipeline_step_target():
    s = _second_delivery()["by_gpu"]["h200"]
    assert s["meets_target"], s


def test_second_delivery_orders_every_resolved_schedule_pair_as_measured():
    """16 of 18 pairs resolved at p < 0.05, all 16 ordered as measured (and the 2 unresolved too): the
    ranking criterion is met on the second delivery (docs/notes/s21pp4_rule.md, outcome, second delivery)."""
    pairs = _second_delivery()["ranking"]
    resolved = [p for p in pairs if p["resolved"]]
    assert len(pairs) == 18 and len(resolved) == 16
    assert all(p["ordered"] for p in resolved), [p for p in resolved if not p["ordered"]]


@pytest.mark.xfail(strict=True, reason="s21pp4b second delivery, 4xH200: 33 of 48 rank-rows within 10% of the "
                   "measured idle or 1% of the step; the twin's idle is short on the stage that waits (qwen2moe "
                   "dualpipev ranks 1, 3: 76.6 vs 91 ms; qwen3moe zb1p ranks 1, 3: 17.0 vs 26 ms; dualpipe ranks 0, "
                   "2: 0.2-0.3 vs 6-7 ms): the idle target (every rank-row within) is missed")
def test_second_delivery_predicts_every_ranks_idle():
    idle = _second_delivery()["idle"]
    assert idle and all(i["within"] for i in idle), sum(i["within"] for i in idle)


@pytest.fixture(scope="module")
def inputs():
    """prereg.predict_ep's host inputs of h200x4, computed once for this module's live predictions."""
    return {}


@pytest.fixture(scope="module")
def live(inputs):
    """s22pp4j's rule (docs/notes/s22pp4j_rule.md): each delivery's pp2ep2 rows predicted by today's code,
    balanced (False) and at the run's own routing (True: term R, the EP peers' rendezvous in lockstep)."""
    return {(sub, routed): prereg_pp4.live_section(sub, routed, inputs=inputs)
            for sub in (prereg_pp4.RECORDS_SUBDIR, prereg_pp4.SECOND_SUBDIR) for routed in (False, True)}


def _figures(sec):
    s = sec["by_gpu"]["h200"]
    misordered = sum(1 for p in sec["ranking"] if p["resolved"] and not p["ordered"])
    return (round(s["median_abs_rel_error"], 3), round(s["p90_abs_rel_error"], 3), misordered,
            sum(i["within"] for i in sec["idle"]), max(r["rel_error"] for r in sec["rows"]))


def test_routed_rows_on_the_s21pp4_deliveries_fail_the_rule_on_the_first(live):
    """s22pp4j's rule, H1-H4 per delivery against the live balanced baseline. First delivery (11 rows):
    median 4.2% -> 4.4%, P90 9.5% -> 7.7%, 1 resolved pair misordered either way, idle 22 of 44 either
    way: H1 (median down >= 1 point) fails. Second (12 rows): 5.5% -> 4.0%, P90 8.1% -> 7.7%, 0
    misordered, idle 33 -> 38 of 48: passes. No row over-predicted beyond 2% (max +0.7%). R stayed off by
    that rule; s22epq's rule (docs/notes/s22epq_rule.md: blind s20epnew steps, these rows as guards) adopted it."""
    first = {r: _figures(live[prereg_pp4.RECORDS_SUBDIR, r]) for r in (False, True)}
    second = {r: _figures(live[prereg_pp4.SECOND_SUBDIR, r]) for r in (False, True)}
    assert first[False][:4] == (0.042, 0.095, 1, 22) and first[True][:4] == (0.044, 0.077, 1, 22)
    assert second[False][:4] == (0.055, 0.081, 0, 33) and second[True][:4] == (0.04, 0.077, 0, 38)
    assert max(first[True][4], second[True][4]) < 0.02
    assert first[True][0] > first[False][0] - 0.01          # H1 fails on the first delivery


def test_routed_rows_leave_rows_without_ep_alone(inputs):
    """R reads routing only where ep > 1 (s22pp4j O1): a pp4 row of s21pp4 (ep 1) predicts the same with
    the delivery's routing as without."""
    row = next(r for r in prereg_pp4.case_rows() if r["pp"] == 4 and r["gpu"] == "h200")
    routing = prereg_pp4.routing_of()
    assert not routing.empty
    got = [prereg.predict_ep([row], num_gpus=4, routing=rt, inputs=inputs)["predicted_s"].iloc[0]
           for rt in (None, routing)]
    assert got[0] == got[1]

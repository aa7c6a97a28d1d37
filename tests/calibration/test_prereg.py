"""calibration.prereg (session s20new): the pre-registered training-step predictions of the slices
of other MoE families, and their comparison with the campaign's records."""

import re

import pandas as pd
import pytest

from calibration import pipeline as pipe
from calibration import prereg
from calibration import records as rec
from calibration.records_io import read_csv
from calibration.whole_step import with_measured_collectives
from calibration.validate import MEDIAN_TARGET, P90_TARGET, load_fitted_profile


def test_case_rows_cover_both_gpus_every_case_and_precision():
    rows = prereg.case_rows()
    per_gpu = sum(len(b) for _, _, b in prereg.CASES) * len(prereg.PRECISIONS)
    assert len(rows) == 2 * per_gpu and {r["gpu"] for r in rows} == {"h100", "h200"}
    assert {r["model"] for r in rows} == {"qwen3moe-mla-slice", "qwen2moe-mla-slice", "mixtral-mla-slice"}


def test_compare_errors_and_summary_worked_example():
    """Two rows on h100: predicted 0.11 s vs measured 0.10 s (+10%), 0.095 vs 0.10 (-5%):
    |errors| 0.10, 0.05 -> median 0.075, P90 0.05 + 0.9 x 0.05 = 0.095: the median misses 5%."""
    key = dict(gpu="h100", model="m", seq_len=4096, precision="bf16")
    preds = pd.DataFrame([{**key, "batch": 1, "predicted_s": 0.11, "code_commit": "c"},
                          {**key, "batch": 2, "predicted_s": 0.095, "code_commit": "c"},
                          {**key, "batch": 4, "predicted_s": 9.0, "code_commit": "c"}])   # never measured
    meas = pd.DataFrame([{**key, "batch": 1, "time_s": 0.10, "gpu_name": "H100"},
                         {**key, "batch": 2, "time_s": 0.10, "gpu_name": "H100"}])
    rows, summary = prereg.compare(preds, meas)
    assert sorted(rows["rel_error"].round(12)) == [-0.05, 0.1]
    s = summary["h100"]
    assert s["num_cases"] == 2 and s["median_abs_rel_error"] == pytest.approx(0.075)
    assert s["p90_abs_rel_error"] == pytest.approx(0.095) and s["meets_target"] is False


def test_write_never_overwrites(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("x\n")
    with pytest.raises(SystemExit, match="never rewritten"):
        prereg.write(path, allow_dirty=True)


def test_committed_predictions_name_their_commit_and_cover_the_cases():
    """The file written before the GPU run: every case row once, one 40-hex code commit, a UTC time."""
    df = prereg.load_predictions()
    got = sorted(tuple(r) for r in df[prereg.KEY].itertuples(index=False))
    want = sorted((r["gpu"], r["model"], r["batch"], r["seq_len"], r["precision"]) for r in prereg.case_rows())
    assert got == want
    assert df["code_commit"].nunique() == 1 and re.fullmatch(r"[0-9a-f]{40}", df["code_commit"].iloc[0])
    assert df["predicted_at_utc"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()
    assert (df["predicted_s"] > 0).all()


def test_validate_section_reads_the_session_subfolder(tmp_path):
    """Records in <root>/h100/s20new/model.csv are matched to the predictions file; the verdict
    line and the row line carry the figures (0.066 s predicted vs 0.060 s measured: +10.0%)."""
    preds = tmp_path / "p.csv"
    pd.DataFrame([{"gpu": "h100", "bench": "train_step", "model": "qwen3moe-mla-slice", "batch": 1, "seq_len": 4096,
                   "precision": "bf16", "predicted_s": 0.066, "code_commit": "a" * 40,
                   "predicted_at_utc": "2026-11-27T16:32:16Z"}]).to_csv(preds, index=False)
    (tmp_path / "h100" / "s20new").mkdir(parents=True)
    pd.DataFrame([{"bench": "train_step", "model": "qwen3moe-mla-slice", "batch": 1, "seq_len": 4096,
                   "precision": "bf16", "time_s": 0.060, "gpu_name": "NVIDIA H100 80GB HBM3"}]).to_csv(
        tmp_path / "h100" / "s20new" / "model.csv", index=False)
    section = prereg.validate_section(tmp_path, preds)
    assert section["by_gpu"]["h100"]["num_cases"] == 1
    assert section["rows"][0]["rel_error"] == pytest.approx(0.1)
    text = prereg.format_table(section)
    assert "prereg h100: 1 rows, median |err| 10.0%, P90 10.0% (target 5% / 10%: MISSED)" in text
    assert "measured 60.0 ms, predicted 66.0 ms (+10.0%)" in text
    assert prereg.format_table(prereg.validate_section(tmp_path / "none", preds)).endswith("no records yet")


def test_predicted_components_add_up_to_the_step():
    """A GPU-bound step (mixtral slice, B=4, S=4096, BF16): the components' GPU seconds sum to the
    step within the host's share, and its expert GEMMs are a visible part of it."""
    profile = load_fitted_profile("h100", rec.load_records("h100"))[0]
    row = {"gpu": "h100", "model": "mixtral-mla-slice", "batch": 4, "seq_len": 4096, "precision": "bf16"}
    c = prereg.predicted_components(row, profile)
    gpu_s = sum(v for k, v in c.items() if k != "step_s")
    assert gpu_s <= c["step_s"] * (1 + 1e-9) and gpu_s > 0.95 * c["step_s"]
    assert c["grouped_gemm_s"] > 0.2 * c["step_s"]


def test_committed_records_meet_issue13_train_step_target_per_gpu():
    """The campaign's records (calibration/measurements/<gpu>/s20new/, 16:47 and 16:49 UTC) beside the
    predictions committed before it ran: every timed case has its prediction, and per GPU the median
    and P90 of |error| are within issue 13's train_step target (5% / 10%)."""
    section = prereg.validate_section()
    assert set(section["by_gpu"]) == {"h100", "h200"}
    measured = prereg.measured()
    for gpu, s in section["by_gpu"].items():
        assert s["num_cases"] == (measured["gpu"] == gpu).sum() == sum(len(b) for _, _, b in prereg.CASES) * 2
        assert s["median_abs_rel_error"] <= MEDIAN_TARGET and s["p90_abs_rel_error"] <= P90_TARGET, (gpu, s)
    names = {"h100": "NVIDIA H100 80GB HBM3", "h200": "NVIDIA H200"}
    assert all(names[g] == n for g, n in zip(measured["gpu"], measured["gpu_name"]))


def test_s20gqa_committed_predictions_name_their_commit_and_cover_the_cases():
    """s20gqa's file (GQA slices), written before its GPU run: every case row once, one 40-hex code
    commit, a UTC time; and its rows are the GQA models only."""
    reg = prereg.S20GQA
    df = prereg.load_predictions(reg=reg)
    got = sorted(tuple(r) for r in df[prereg.KEY].itertuples(index=False))
    want = sorted((r["gpu"], r["model"], r["batch"], r["seq_len"], r["precision"]) for r in prereg.case_rows(reg))
    assert got == want and set(df["model"]) == {"mixtral-slice", "qwen3moe-slice"}
    assert df["code_commit"].nunique() == 1 and re.fullmatch(r"[0-9a-f]{40}", df["code_commit"].iloc[0])
    assert df["predicted_at_utc"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()
    assert (df["predicted_s"] > 0).all()


def test_registrations_keep_their_own_records(tmp_path):
    """A record in <root>/h100/s20gqa/ is s20gqa's and not s20new's."""
    (tmp_path / "h100" / "s20gqa").mkdir(parents=True)
    pd.DataFrame([{"bench": "train_step", "model": "mixtral-slice", "batch": 1, "seq_len": 4096,
                   "precision": "bf16", "time_s": 0.05, "gpu_name": "NVIDIA H100 80GB HBM3"}]).to_csv(
        tmp_path / "h100" / "s20gqa" / "model.csv", index=False)
    assert len(prereg.measured(tmp_path, prereg.S20GQA)) == 1 and prereg.measured(tmp_path).empty
    section = prereg.validate_section(tmp_path, reg=prereg.S20GQA)
    assert section["registration"] == "s20gqa" and section["by_gpu"]["h100"]["num_cases"] == 1


def test_paired_attention_worked_example():
    """mixtral GQA measured 90 ms, predicted 81 ms; its MLA twin measured 100 ms, predicted 90 ms:
    measured ratio 0.9, predicted 0.9 -> ratio error 0 (both -10%: the shared part, not the attention)."""
    key = dict(gpu="h100", batch=1, seq_len=4096, precision="bf16")
    gqa = pd.DataFrame([{**key, "model": "mixtral-slice", "time_s": 0.090, "predicted_s": 0.081}])
    mla = pd.DataFrame([{**key, "model": "mixtral-mla-slice", "time_s": 0.100, "predicted_s": 0.090},
                        {**key, "model": "qwen2moe-mla-slice", "time_s": 1.0, "predicted_s": 1.0}])
    out = prereg.paired_attention(gqa, mla)
    assert len(out) == 1 and out["measured_ratio"].iloc[0] == pytest.approx(0.9)
    assert out["predicted_ratio"].iloc[0] == pytest.approx(0.9) and out["ratio_error"].iloc[0] == pytest.approx(0.0)


def test_s20gqa_committed_records_meet_issue13_train_step_target_per_gpu():
    """s20gqa's records (calibration/measurements/<gpu>/s20gqa/: one H100 17:06 UTC, one H200 17:07 UTC,
    both cold) beside the predictions committed before the run (9750dc6): every timed case has its
    prediction, and per GPU the median and P90 of |error| are within issue 13's train_step target;
    every GQA row has its s20new MLA counterpart for the paired comparison."""
    reg = prereg.S20GQA
    section = prereg.validate_section(reg=reg)
    assert set(section["by_gpu"]) == {"h100", "h200"}
    measured = prereg.measured(reg=reg)
    for gpu, s in section["by_gpu"].items():
        assert s["num_cases"] == (measured["gpu"] == gpu).sum() == sum(len(b) for _, _, b in reg.cases) * 2
        assert s["median_abs_rel_error"] <= MEDIAN_TARGET and s["p90_abs_rel_error"] <= P90_TARGET, (gpu, s)
    names = {"h100": "NVIDIA H100 80GB HBM3", "h200": "NVIDIA H200"}
    assert all(names[g] == n for g, n in zip(measured["gpu"], measured["gpu_name"]))
    gqa, _ = prereg.compare(prereg.load_predictions(reg=reg), measured)
    mla, _ = prereg.compare(prereg.load_predictions(), prereg.measured())
    assert len(prereg.paired_attention(gqa, mla)) == len(gqa)


# ---- s20epnew: EP2 steps (two GPUs) of the same slices

def test_ep_case_rows_cover_both_gpus_every_model_and_count():
    rows = prereg.ep_case_rows()
    assert len(rows) == 2 * len(prereg.EP_CASES) * len(prereg.EP_MICROBATCHES)
    assert {(r["pp"], r["ep"], r["dp"], r["num_gpus"], r["bench"]) for r in rows} == {(1, 2, 2, 2, "ep_step")}
    assert {r["model"] for r in rows} == {"qwen3moe-mla-slice", "qwen2moe-mla-slice", "mixtral-mla-slice"}


def test_predict_ep_is_validations_price_of_the_committed_ep_steps():
    """predict_ep on the committed v2-lite-slice ep_step rows of h200x2 gives what `twin validate`
    (calibration.pipeline.predict_folder) predicts for them: the new slices take the same path."""
    gpu = "h200"
    folder = rec.MEASUREMENTS_DIR / f"{gpu}x2"
    profile = load_fitted_profile(gpu, rec.load_records(gpu))[0]
    cases = [c for c in pipe.predict_folder(folder, gpu, with_measured_collectives(profile, folder))
             if c["row"]["bench"] == "ep_step"]
    assert len(cases) == 3
    rows = [{**c["row"].to_dict(), "gpu": gpu} for c in cases]
    # validation prices each EP layer at the run's own routing under R (ADOPT_EP_ROUTED_ROWS, s22epq); the
    # pre-registrations (no routing before the run) take this path without it
    routing = read_csv(folder / "pipeline_routing.csv") if pipe.ADOPT_EP_ROUTED_ROWS else None
    got = prereg.predict_ep(rows, routing=routing)["predicted_s"].tolist()
    assert got == pytest.approx([c["predicted_s"] for c in cases], rel=1e-12)


def test_committed_ep_predictions_name_their_commit_and_cover_the_cases():
    df = prereg.load_predictions(prereg.EP_PREDICTIONS_FILE)
    got = sorted(tuple(r) for r in df[prereg.EP_KEY].itertuples(index=False))
    want = sorted(tuple(r[k] for k in prereg.EP_KEY) for r in prereg.ep_case_rows())
    assert got == want
    assert df["code_commit"].nunique() == 1 and re.fullmatch(r"[0-9a-f]{40}", df["code_commit"].iloc[0])
    assert (df["predicted_s"] > 0).all()
    # more micro-batches, more seconds (each adds a forward and a backward)
    for _, sub in df.groupby(["gpu", "model"]):
        assert sub.sort_values("num_microbatches")["predicted_s"].is_monotonic_increasing


def test_ep_section_reads_the_two_gpu_subfolder(tmp_path):
    """Records in <root>/h200x2/s20epnew/<model>/pipeline_step.csv matched to the EP predictions (0.0936 s
    predicted vs 0.090 s measured: +4.0%, within the 5% target)."""
    preds = tmp_path / "p.csv"
    key = {"gpu": "h200", "model": "mixtral-mla-slice", "num_layers": 2}
    pd.DataFrame([{**key, "num_microbatches": n, "predicted_s": p, "code_commit": "a" * 40}
                  for n, p in ((1, 0.0936), (2, 0.2))]).to_csv(preds, index=False)
    (tmp_path / "h200x2" / "s20epnew" / "mixtral-mla-slice").mkdir(parents=True)
    pd.DataFrame([{"bench": "ep_step", "model": "mixtral-mla-slice", "num_layers": 2, "num_microbatches": 1,
                   "time_s": 0.090, "gpu_name": "NVIDIA H200"}]).to_csv(
        tmp_path / "h200x2" / "s20epnew" / "mixtral-mla-slice" / "pipeline_step.csv", index=False)
    section = prereg.ep_section(tmp_path, preds)
    assert section["by_gpu"]["h200"]["num_cases"] == 1
    assert section["rows"][0]["rel_error"] == pytest.approx(0.04)
    text = prereg.format_ep_table(section)
    assert "prereg-ep h200x2: 1 rows, max |err| 4.0% (target 5%: met)" in text
    assert "measured 90.0 ms, predicted 93.6 ms (+4.0%)" in text
    assert prereg.format_ep_table(prereg.ep_section(tmp_path / "none", preds)).endswith("no records yet")


def test_committed_ep_records_meet_issue13_ep_step_target():
    """The campaign's records (calibration/measurements/h200x2/s20epnew/, 2xH200, 17:08-17:09 UTC)
    beside the predictions committed before it ran: all 9 steps (3 slices x 1, 2, 4 micro-batches)
    have their prediction and each is within issue 13's ep_step target (|error| <= 5%)."""
    section = prereg.ep_section()
    assert section["by_gpu"]["h200"]["num_cases"] == 9
    rows = [r for r in section["rows"] if r["gpu"] == "h200"]
    assert all(abs(r["rel_error"]) <= prereg.EP_STEP_TARGET for r in rows), rows
    meas = prereg.measured_ep()
    assert set(meas[meas["gpu"] == "h200"]["gpu_name"]) == {"NVIDIA H200"}


@pytest.mark.xfail(strict=True, reason="s20epnew on 2xH100 missed: 5 of 9 steps beyond 5%, all under-predicted "
                   "(qwen2moe-mla-slice -8.9/-7.7/-8.1%, qwen3moe-mla-slice -6.4/-5.1/-4.3%, mixtral-mla-slice "
                   "-2.9/-2.2/-1.8% at 1/2/4 micro-batches); median 5.1%, P90 8.3%")
def test_committed_h100_ep_records_meet_issue13_ep_step_target():
    """The same campaign on 2xH100 (calibration/measurements/h100x2/s20epnew/, 20:25-20:26 UTC of
    session 21, archive of 8428481): all 9 steps beside the committed predictions, each to be within
    issue 13's ep_step target (|error| <= 5%)."""
    section = prereg.ep_section()
    assert section["by_gpu"]["h100"]["num_cases"] == 9
    meas = prereg.measured_ep()
    assert set(meas[meas["gpu"] == "h100"]["gpu_name"]) == {"NVIDIA H100 80GB HBM3"}
    rows = [r for r in section["rows"] if r["gpu"] == "h100"]
    assert all(abs(r["rel_error"]) <= prereg.EP_STEP_TARGET for r in rows), rows


def test_s20new2_case_rows_are_serve_rows():
    """s20new2's rows: per GPU and slice, 3 prefill (gen_len 0) and 4 decode (gen_len 32) rows at prompt 1024, BF16."""
    rows = prereg.case_rows(prereg.S20NEW2)
    assert len(rows) == 2 * 3 * (3 + 4) and {r["precision"] for r in rows} == {"bf16"}
    assert {(r["bench"], r["gen_len"]) for r in rows} == {("prefill", 0), ("decode", 32)}
    assert {r["model"] for r in rows} == {"qwen3moe-mla-slice", "qwen2moe-mla-slice", "mixtral-mla-slice"}
    assert all(r["prompt_len"] == 1024 and "seq_len" not in r for r in rows)


def test_s20new2_compare_judges_prefill_and_decode_separately(tmp_path):
    """Records in <root>/h100/s20new2/model.csv (seq_len empty, as bench_serve writes them; a train_step
    row beside them is not s20new2's): one prefill row +10%, one decode row -2%: two verdicts."""
    key = dict(gpu="h100", model="qwen3moe-mla-slice", batch=1, prompt_len=1024, precision="bf16")
    preds = tmp_path / "p.csv"
    pd.DataFrame([{**key, "bench": "prefill", "gen_len": 0, "predicted_s": 0.0044, "code_commit": "a" * 40},
                  {**key, "bench": "decode", "gen_len": 32, "predicted_s": 0.0049, "code_commit": "a" * 40}]).to_csv(
        preds, index=False)
    (tmp_path / "h100" / "s20new2").mkdir(parents=True)
    rec_key = {k: v for k, v in key.items() if k != "gpu"}
    pd.DataFrame([{**rec_key, "bench": "prefill", "seq_len": "", "gen_len": 0, "time_s": 0.004, "gpu_name": "H100"},
                  {**rec_key, "bench": "decode", "seq_len": "", "gen_len": 32, "time_s": 0.005, "gpu_name": "H100"},
                  {**rec_key, "bench": "train_step", "seq_len": 4096, "gen_len": "", "time_s": 0.1, "gpu_name": "H100"}]
                 ).to_csv(tmp_path / "h100" / "s20new2" / "model.csv", index=False)
    section = prereg.validate_section(tmp_path, preds, reg=prereg.S20NEW2)
    assert set(section["by_gpu"]) == {"h100 prefill", "h100 decode"}
    assert section["by_gpu"]["h100 prefill"]["median_abs_rel_error"] == pytest.approx(0.1)
    assert section["by_gpu"]["h100 decode"]["meets_target"] is True
    text = prereg.format_table(section)
    assert text.startswith("Pre-registered serve steps (prefill, decode)")
    assert "prereg h100 prefill: 1 rows, median |err| 10.0%" in text
    assert "h100 qwen3moe-mla-slice b1 decode p1024 bf16: measured 5.0 ms, predicted 4.9 ms (-2.0%)" in text


def test_s20new2_committed_predictions_name_their_commit_and_cover_the_cases():
    """s20new2's file (prefill and decode), written before its GPU run: every case row once, one 40-hex
    code commit, a UTC time."""
    reg = prereg.S20NEW2
    df = prereg.load_predictions(reg=reg)
    got = sorted(tuple(r) for r in df[reg.key].itertuples(index=False))
    want = sorted(tuple(r[k] for k in reg.key) for r in prereg.case_rows(reg))
    assert got == want
    assert df["code_commit"].nunique() == 1 and re.fullmatch(r"[0-9a-f]{40}", df["code_commit"].iloc[0])
    assert df["predicted_at_utc"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()
    assert (df["predicted_s"] > 0).all()


# s20new2's committed comparison (calibration/measurements/<gpu>/s20new2/: one H100 80GB HBM3, fresh and
# cold, 17:21 UTC; one H200, GPU 0 of a fresh 2xH200 host, cold, 17:23 UTC; predictions of acea221):
# per GPU and bench, (rows, median |err|, P90 |err|) as committed, and the targets missed
S20NEW2_MISSED = {
    "h100 prefill": "h100 prefill: 9 rows, median 8.4%, P90 30.7% (host-bound B=1 rows -28% to -32%)",
    "h100 decode": "h100 decode: 12 rows, median 34.9%, P90 37.1% (every row under-predicted, -22% to -38%)",
    "h200 prefill": "h200 prefill: 9 rows, median 4.0%, P90 12.2% (qwen3moe b1 -13.8%, b4 -11.8%)",
}


@pytest.fixture(scope="module")
def s20new2_section():
    return prereg.validate_section(reg=prereg.S20NEW2)


@pytest.mark.parametrize("label", [
    pytest.param(label, marks=pytest.mark.xfail(strict=True, reason=S20NEW2_MISSED[label]) if label in S20NEW2_MISSED else ())
    for label in ("h100 prefill", "h100 decode", "h200 prefill", "h200 decode")])
def test_s20new2_committed_records_meet_issue13_serve_targets(s20new2_section, label):
    """s20new2's records beside the predictions committed before the run: per GPU, prefill and decode
    each within issue 13's targets (median 5%, P90 10%). Met: h200 decode (12 rows, 2.2% / 6.5%)."""
    s = s20new2_section["by_gpu"][label]
    assert s["median_abs_rel_error"] <= MEDIAN_TARGET and s["p90_abs_rel_error"] <= P90_TARGET, (label, s)


def test_s20new2_every_case_timed_on_the_named_gpus(s20new2_section):
    """Every pre-registered case was timed once per GPU (9 prefill, 12 decode rows), on the GPU its folder names."""
    counts = {label: s["num_cases"] for label, s in s20new2_section["by_gpu"].items()}
    assert counts == {"h100 prefill": 9, "h100 decode": 12, "h200 prefill": 9, "h200 decode": 12}
    measured = prereg.measured(reg=prereg.S20NEW2)
    names = {"h100": "NVIDIA H100 80GB HBM3", "h200": "NVIDIA H200"}
    assert all(names[g] == n for g, n in zip(measured["gpu"], measured["gpu_name"]))


def test_s20new2_h100_repeat_reported_beside_the_run():
    """The warm repeat on the same H100 (h100/s20new2_repeat/, 17:21:50 UTC) against the same predictions:
    decode 12 rows, median |err| 11.7%, P90 14.8%; prefill 9 rows, 3.5% / 11.3% (reported, not judged):
    the host-bound rows are under-predicted less than in the cold first run but still beyond the targets."""
    by = prereg.validate_section(reg=prereg.S20NEW2_REPEAT)["by_gpu"]
    assert set(by) == {"h100 prefill", "h100 decode"}
    first = prereg.validate_section(reg=prereg.S20NEW2)["by_gpu"]
    for label in by:
        assert by[label]["median_abs_rel_error"] < first[label]["median_abs_rel_error"]
    assert by["h100 decode"]["median_abs_rel_error"] > MEDIAN_TARGET


def test_s20gqa2_committed_predictions_name_their_commit_and_cover_the_cases():
    """s20gqa2's file (the GQA slices' prefill and decode), written before its GPU run: every case row
    once (28: 2 GPUs x 2 slices x 7), one 40-hex code commit, a UTC time."""
    reg = prereg.S20GQA2
    df = prereg.load_predictions(reg=reg)
    got = sorted(tuple(r) for r in df[reg.key].itertuples(index=False))
    want = sorted(tuple(r[k] for k in reg.key) for r in prereg.case_rows(reg))
    assert got == want and len(got) == 28
    assert {m for m, *_ in reg.cases} == {"mixtral-slice", "qwen3moe-slice"}
    assert df["code_commit"].nunique() == 1 and re.fullmatch(r"[0-9a-f]{40}", df["code_commit"].iloc[0])
    assert df["predicted_at_utc"].str.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ").all()
    assert (df["predicted_s"] > 0).all()


# s20gqa2's records (calibration/measurements/<gpu>/s20gqa2/, one H100 17:45 UTC and one H200 17:46 UTC,
# code 24028dc): every verdict missed. Decode is measured ~37-43 ms a step flat in batch and model
# (predicted 1.8-3.6 ms): real/'s decode SDPA, not the twin's op list, is the suspect (see
# docs/notes/s20gqa2.md); prefill misses at B=1.
S20GQA2_MISSED = {
    "h100 prefill": "median 8.7%, P90 21.3% (B=1 rows -16.0% / -26.5%)",
    "h100 decode": "median 93.5%, P90 95.5% (every row about -91% to -96%)",
    "h200 prefill": "median 6.8%, P90 16.1%",
    "h200 decode": "median 94.8%, P90 95.4% (every row about -91% to -96%)",
}


def test_s20gqa2_committed_records_are_the_campaigns():
    """Both GPUs timed all 14 cases (6 prefill, 8 decode) and each row has its prediction."""
    section = prereg.validate_section(reg=prereg.S20GQA2)
    assert {k: v["num_cases"] for k, v in section["by_gpu"].items()} == {
        "h100 prefill": 6, "h100 decode": 8, "h200 prefill": 6, "h200 decode": 8}
    names = {"h100": "NVIDIA H100 80GB HBM3", "h200": "NVIDIA H200"}
    measured = prereg.measured(reg=prereg.S20GQA2)
    assert all(names[g] == n for g, n in zip(measured["gpu"], measured["gpu_name"]))


@pytest.mark.parametrize("label", [pytest.param(k, marks=pytest.mark.xfail(strict=True, reason=f"s20gqa2 {k}: {v}"))
                                   for k, v in S20GQA2_MISSED.items()])
def test_s20gqa2_committed_records_meet_issue13_targets(label):
    """Issue 13's prefill and decode targets (median 5%, P90 10%) per GPU and bench on the GQA slices'
    serve steps, against the predictions committed before the run."""
    s = prereg.validate_section(reg=prereg.S20GQA2)["by_gpu"][label]
    assert s["meets_target"], s


def test_s20gqa2_decode_miss_is_real_s_cudnn_sdpa_not_the_twins_pricing():
    """The registered GQA decode rows (37-43 ms a step, flat in batch) against the lead's diagnostic rerun of the
    same cases on one H100 with cuDNN's SDPA switched off (h100/s20gqa2_nocudnn/, 17:58 UTC): every decode step is
    over 10x faster without it, so the registered miss (-93.5% median) was real/'s decode calling cuDNN's SDPA at a
    new key length every step (real/model.py now keeps cuDNN out of cached decode). Against the same predictions
    the rerun's decode reads -19%..+23% (median 20.7%, mixtral under- and qwen3moe over-predicted, both flat in
    batch: host-bound) and prefill 7.5% / 12.4%: reported, not judged (it is not the registered run)."""
    key = ["bench", "model", "batch"]
    first = prereg.measured(reg=prereg.S20GQA2)
    first = first[(first["gpu"] == "h100") & (first["bench"] == "decode")].set_index(key)["time_s"]
    diag = prereg.measured(reg=prereg.S20GQA2_NOCUDNN)
    assert set(diag["gpu_name"]) == {"NVIDIA H100 80GB HBM3"}
    diag = diag[diag["bench"] == "decode"].set_index(key)["time_s"]
    assert len(diag) == len(first) == 8
    assert ((first / diag.reindex(first.index)) > 10).all()
    by = prereg.validate_section(reg=prereg.S20GQA2_NOCUDNN)["by_gpu"]
    assert by["h100 decode"]["p90_abs_rel_error"] < 0.25 < prereg.validate_section(reg=prereg.S20GQA2)["by_gpu"]["h100 decode"]["median_abs_rel_error"]


def test_a_judgement_record_is_jsonable_and_written_only_when_asked(tmp_path, monkeypatch):
    """prereg.jsonable / record_judgement (s33dedup, the tail of s29dec's cli and s33blind): numpy scalars become
    Python's and NaN null at any depth; no path writes nothing (exit 0); uncommitted code refuses (exit 2)."""
    import numpy as np
    assert prereg.jsonable({"a": (np.int64(3), np.float64("nan")), "b": [{"c": float("nan")}, np.float32(0.5)]}) == \
        {"a": [3, None], "b": [{"c": None}, 0.5]}
    monkeypatch.setattr(prereg, "refuses_uncommitted_record", lambda: True)
    assert prereg.record_judgement(None, "s99x", {"a": 1}) == 0
    assert prereg.record_judgement(tmp_path / "j.json", "s99x", {"a": 1}) == 2 and not list(tmp_path.iterdir())
    monkeypatch.setattr(prereg, "refuses_uncommitted_record", lambda: False)
    assert prereg.record_judgement(tmp_path / "j.json", "s99x", {"a": np.float64(2.0)}) == 0
    from calibration.records_io import read_json
    got = read_json(tmp_path / "j.json")
    assert got["command"] == "python -m calibration.s99x --json calibration/s99x_judgement.json" and got["a"] == 2.0

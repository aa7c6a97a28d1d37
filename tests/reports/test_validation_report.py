from reports.page import COMMON_FILES, RESOLVED_SCENARIO
from reports.validation_report import build_page, write_report

import pandas as pd


def test_writes_the_common_files_without_a_scenario(tmp_path, validated):
    paths = write_report(validated, tmp_path / "v")
    names = {p.name for p in paths}
    assert names == (set(COMMON_FILES) - {RESOLVED_SCENARIO}) | {
        "validation_cases.csv", "validation_scatter.png", "validation_error_by_op.png",
        "h800_trace.csv", "h800_trace.png", "sm_reserve.csv", "sm_reserve.png"}
    assert names == {p.name for p in (tmp_path / "v").iterdir()}


def test_verdict_gives_each_gpu_against_the_targets(validated):
    p = build_page(validated, pd.DataFrame(validated["cases"]))
    assert p.verdict.startswith("The twin predicts the held-out measurements within 5% median and 10% P90 |error| on every GPU: H100 ")
    assert "(meets the targets)" in p.verdict and "H800 chunk pair is" in p.verdict
    md = p.markdown()
    assert "| H100 | gemm |" in md and "H100: 2 records (decode 1, prefill 1)" in md


def test_serving_profiles_show_twin_and_trace_group_by_group(validated):
    """DeepSeek's prefill and decode profiles (calibration/serving_trace.compare): a section each,
    the twin beside the trace where its derived CSV is present, n/a and the reason where not."""
    profiles = [
        {"phase": "decode", "conditions": "EP128, 128 requests per GPU", "iteration_s": 0.045, "trace_available": True,
         "note": None, "groups": [{"group": "attention_core", "twin_us": 113.0, "trace_us": 226.0, "rel_error": -0.5}]},
        {"phase": "prefill", "conditions": "EP32, 16,384 tokens per GPU", "iteration_s": 2.2, "trace_available": False,
         "note": "deepseek_prefill_profile.csv absent", "groups": [{"group": "combine", "twin_us": 9193.0, "trace_us": None,
                                                                 "rel_error": None}]}]
    md = build_page({**validated, "deepseek_serving_profiles": profiles}, pd.DataFrame(validated["cases"])).markdown()
    assert "DeepSeek's decode profile (H800), kernel group by group" in md and "| attention core |" in md
    assert "-50.0%" in md
    assert "Trace: deepseek_prefill_profile.csv absent." in md and "| combine |" in md and "n/a" in md

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

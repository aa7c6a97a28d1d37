"""calibration.async_tp: the twin's prediction of torch's micro-pipelined TP ops is the composition
StepCosts._tp_task uses (pipelined exposure, the partials' reduction), rows a device could not run
are listed not predicted, and a missing records file exits 2."""

import pandas as pd
import pytest

from calibration import async_tp as at
from calibration.predict import gpu_spec
from twin.costs import comm, compute
from twin.costs.profile import fitted_profile


def test_fused_ops_compose_the_gemm_the_exposed_collective_and_the_reduction():
    gpu, prof = gpu_spec("h100"), fitted_profile("h100")
    m, n, k = 8192, 4096, 1024
    mm = at.predict_op("reduce_scatter", "mm", m, n, k, 2, gpu, prof)
    coll = at.predict_op("reduce_scatter", "collective", m, n, k, 2, gpu, prof)
    red = at.predict_op("reduce_scatter", "reduce", m, n, k, 2, gpu, prof)
    assert mm == compute.gemm_time_s(m, n, k, "bf16", gpu, prof)
    assert coll == comm.collective_time_s("reduce_scatter", m * n * 2, 2, gpu, True, prof.collectives)
    assert red == compute.memory_time_s(m * n * 2 * 1.5, gpu, prof)
    fused = at.predict_op("reduce_scatter", "fused", m, n, k, 2, gpu, prof)
    assert fused == pytest.approx(mm + comm.pipelined_exposed_s("reduce_scatter", coll, mm, 2) + red, rel=1e-12)
    assert at.predict_op("reduce_scatter", "sequential", m, n, k, 2, gpu, prof) == pytest.approx(mm + coll)
    # an all-gather's fused op has no reduction and hides what its GEMM can
    ag_mm = at.predict_op("all_gather", "mm", m, n, k, 2, gpu, prof)
    ag_coll = at.predict_op("all_gather", "collective", m, n, k, 2, gpu, prof)
    assert at.predict_op("all_gather", "fused", m, n, k, 2, gpu, prof) == pytest.approx(
        ag_mm + max(0.0, ag_coll - ag_mm / 2))


def test_compare_lists_unavailable_rows_and_summarises_by_op(tmp_path, capsys):
    base = dict(shape_tag="t/w2", kind="reduce_scatter", m=8192, n=4096, k=1024, world_size=2, split="fit")
    recs = pd.DataFrame([{**base, "op": "mm", "status": "ok", "detail": "", "time_s": 1e-3},
                         {**base, "op": "fused", "status": "unavailable", "detail": "no symm mem", "time_s": None}])
    res = at.compare(recs)
    assert [r["op"] for r in res["rows"]] == ["mm"] and res["unavailable"][0]["detail"] == "no symm mem"
    assert res["summary"]["mm"]["fit"]["rows"] == 1
    assert "unavailable" in at.format_table(res)
    assert at.main(["--root", str(tmp_path)]) == 2 and "s9tt.sh" in capsys.readouterr().err


def test_the_tt_linear_records_are_predicted_on_their_precision_s_curve():
    gpu, prof = gpu_spec("h100"), fitted_profile("h100")
    recs = pd.DataFrame([dict(bench="tt_linear", shape_tag="tt_linear/llama3.1-70b/wk/fwd", precision=p,
                              m=32768, n=128, k=8192, time_s=1e-3) for p in ("bf16", "fp8-tensor")]
                        + [dict(bench="gemm", shape_tag="square", precision="bf16", m=1, n=1, k=1, time_s=1.0)])
    rows = at.linears(recs)
    assert [r["precision"] for r in rows] == ["bf16", "fp8-tensor"]
    assert rows[0]["predicted_s"] == compute.gemm_time_s(32768, 128, 8192, "bf16", gpu, prof)
    assert rows[1]["predicted_s"] == compute.gemm_time_s(32768, 128, 8192, "fp8", gpu, prof.with_fp8_recipe("tensorwise"))
    assert rows[1]["rel_error"] == pytest.approx(rows[1]["predicted_s"] / 1e-3 - 1)

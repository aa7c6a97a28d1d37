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
    assert red == compute.partials_reduce_time_s(m * n * 2, 2, gpu, prof)
    # at the measured bandwidth fraction of the reduction, not the streaming one
    assert prof.partials_reduce_eff > 0
    assert red == pytest.approx(m * n * 2 * 1.5 / (gpu.hbm_bytes_per_s * prof.partials_reduce_eff) + prof.launch_s)
    fused = at.predict_op("reduce_scatter", "fused", m, n, k, 2, gpu, prof)
    assert fused == pytest.approx(mm + comm.pipelined_exposed_s("reduce_scatter", coll, mm, 2) + red, rel=1e-12)
    assert at.predict_op("reduce_scatter", "sequential", m, n, k, 2, gpu, prof) == pytest.approx(mm + coll)
    # a peer copy is costed as a transfer of one shard; beside the GEMM it takes nothing from it
    copy = at.predict_op("reduce_scatter", "p2p_copy", m, n, k, 2, gpu, prof)
    assert copy == comm.collective_time_s("send_recv", m // 2 * n * 2, 2, gpu, True, prof.collectives)
    assert at.predict_op("reduce_scatter", "mm_beside_copy", m, n, k, 2, gpu, prof) == max(mm, copy)
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


def _reduce_records(tmp_path, rows):
    folder = tmp_path / "h100x2"
    folder.mkdir()
    base = dict(bench="async_tp", kind="reduce_scatter", op="reduce", k=1024, world_size=2, precision="bf16",
                status="ok", detail="")
    pd.DataFrame([{**base, **r} for r in rows]).to_csv(folder / at.RECORDS_FILE, index=False)


def test_partials_reduce_eff_is_the_fitting_rows_median_and_the_held_out_rows_check_it(tmp_path):
    gpu, prof = gpu_spec("h100"), fitted_profile("h100")
    moved = 8192 * 8192 * 2 * 1.5
    t = lambda frac: moved / (gpu.hbm_bytes_per_s * frac) + prof.launch_s   # noqa: E731
    _reduce_records(tmp_path, [dict(shape_tag="a", m=8192, n=8192, split="fit", time_s=t(0.4)),
                               dict(shape_tag="b", m=8192, n=8192, split="fit", time_s=t(0.5)),
                               dict(shape_tag="c", m=8192, n=8192, split="fit", time_s=t(0.6)),
                               dict(shape_tag="d", m=8192, n=8192, split="holdout", time_s=t(0.25))])
    eff, info = at.partials_reduce_terms("h100", tmp_path)
    assert eff == pytest.approx(0.5) and info["fit_rows"] == 3 and info["file"] == "h100x2/async_tp.csv"
    # the held-out row ran at half the fitted fraction: the twin predicts it about half as long
    assert info["holdout_rel_errors"][0] == pytest.approx(t(0.5) / t(0.25) - 1.0, abs=1e-4)
    assert at.partials_reduce_terms("h100", tmp_path / "none") == (0.0, {})


def test_update_writes_only_the_term_and_its_provenance(tmp_path):
    import json
    from twin.costs.profile import PROFILES
    gpu = gpu_spec("h100")
    _reduce_records(tmp_path, [dict(shape_tag="a", m=4096, n=4096, split="fit",
                                    time_s=4096 * 4096 * 2 * 1.5 / (gpu.hbm_bytes_per_s * 0.45)
                                    + fitted_profile("h100").launch_s)])
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    before = json.loads((PROFILES / "h100.json").read_text())
    before.pop("partials_reduce_eff", None)
    before["provenance"].pop("partials_reduce", None)
    (profiles / "h100.json").write_text(json.dumps(before))
    eff, _ = at.update_profile("h100", tmp_path, profiles)
    after = json.loads((profiles / "h100.json").read_text())
    assert after["partials_reduce_eff"] == eff and eff == pytest.approx(0.45, rel=0.01)
    assert list(after)[-1] == "provenance" and after["provenance"]["partials_reduce"]["fit_rows"] == 1
    assert {k: v for k, v in after.items() if k not in ("partials_reduce_eff", "provenance")} == \
        {k: v for k, v in before.items() if k != "provenance"}


def test_the_committed_profile_carries_the_term_measured_from_the_committed_records():
    eff, info = at.partials_reduce_terms("h100")
    prof = fitted_profile("h100")
    assert prof.partials_reduce_eff == pytest.approx(eff, rel=1e-12)
    assert prof.provenance["partials_reduce"]["sha256"] == info["sha256"]


def test_the_atp_parts_records_are_predicted_with_the_step_s_own_costs():
    gpu, prof = gpu_spec("h100"), fitted_profile("h100")
    base = dict(bench="atp_parts", k=16384, world_size=8, chunks=8, layout="", split="holdout", time_s=1e-3)
    recs = pd.DataFrame([{**base, "shape_tag": "llama3.1-405b", "op": "reduce", "m": 32768, "n": 16384, "k": None,
                          "layout": "flat", "precision": "bf16", "chunks": None},
                         {**base, "shape_tag": "llama3.1-405b/w1", "op": "full", "m": 32768, "n": 6656, "chunks": 1,
                          "precision": "fp8-tensor"},
                         {**base, "shape_tag": "llama3.1-405b/w1", "op": "chunks_two_streams", "m": 32768, "n": 6656,
                          "precision": "bf16"}])
    rows = at.parts(recs)
    assert rows[0]["predicted_s"] == compute.partials_reduce_time_s(32768 * 16384 * 2, 8, gpu, prof)
    assert rows[1]["predicted_s"] == compute.gemm_time_s(32768, 6656, 16384, "fp8", gpu, prof.with_fp8_recipe("tensorwise"))
    assert rows[2]["predicted_s"] == pytest.approx(8 * compute.gemm_time_s(4096, 6656, 16384, "bf16", gpu, prof))
    assert "W=8 flat" in rows[0]["case"] and rows[2]["rel_error"] == pytest.approx(rows[2]["predicted_s"] / 1e-3 - 1)

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
    # at the measured bandwidth fraction of the reduction at W = 2, not the streaming one
    assert 0 < prof.partials_reduce_eff_at(2) < prof.memory_eff
    assert red == pytest.approx(m * n * 2 * 1.5 / (gpu.hbm_bytes_per_s * prof.partials_reduce_eff_at(2)) + prof.launch_s)
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


def _reduce_records(tmp_path, rows, folder="h100x2", file=at.RECORDS_FILE):
    (tmp_path / folder).mkdir(exist_ok=True)
    base = dict(bench="async_tp", kind="reduce_scatter", op="reduce", k=1024, precision="bf16", status="ok", detail="",
                split="fit")
    pd.DataFrame([{**base, **r} for r in rows]).to_csv(tmp_path / folder / file, index=False)


def _time_at(frac, m, n, w):
    gpu, prof = gpu_spec("h100"), fitted_profile("h100")
    return m * n * 2 * (1 + 1 / w) / (gpu.hbm_bytes_per_s * frac) + prof.launch_s


def test_partials_reduce_eff_is_measured_per_w_on_the_70b_rows_and_the_405b_rows_check_it(tmp_path):
    t = _time_at
    _reduce_records(tmp_path, [dict(shape_tag="llama3.1-70b/w2", m=8192, n=8192, world_size=2, time_s=t(0.4, 8192, 8192, 2)),
                               dict(shape_tag="llama3.1-70b/wo", m=8192, n=8192, world_size=2, time_s=t(0.5, 8192, 8192, 2)),
                               dict(shape_tag="llama3.1-405b/w2", m=8192, n=8192, world_size=2, time_s=t(0.9, 8192, 8192, 2))])
    _reduce_records(tmp_path, [dict(shape_tag="llama3.1-70b", m=4096, n=4096, world_size=8, layout="flat",
                                    time_s=t(0.8, 4096, 4096, 8)),
                               dict(shape_tag="llama3.1-405b", m=4096, n=4096, world_size=4, layout="flat",
                                    time_s=t(0.6, 4096, 4096, 4))], folder="h100", file=at.PARTS_FILE)
    table, info = at.partials_reduce_terms("h100", tmp_path)
    # per W the median of the 70B rows, whatever split the campaign wrote; the 405B rows held out
    assert table == {"2": pytest.approx(0.45), "8": pytest.approx(0.8)}
    assert info["fit_rows"] == {"2": 2, "8": 1} and set(info["files"]) == {"h100x2/async_tp.csv", "h100/atp_parts.csv"}
    held = {(h["shape_tag"], h["world_size"]): h["rel_error"] for h in info["holdout"]}
    assert held[("llama3.1-405b/w2", 2)] == pytest.approx(t(0.45, 8192, 8192, 2) / t(0.9, 8192, 8192, 2) - 1, abs=1e-4)
    # W = 4 between the measured 2 and 8: interpolated in log2 W (0.625), against 0.6 measured
    assert held[("llama3.1-405b", 4)] == pytest.approx(t(0.625, 4096, 4096, 4) / t(0.6, 4096, 4096, 4) - 1, abs=1e-4)
    assert at.partials_reduce_terms("h100", tmp_path / "none") == ({}, {})


def test_the_profile_interpolates_the_reduction_rate_in_log2_w():
    import dataclasses
    prof = dataclasses.replace(fitted_profile("h100"), partials_reduce_eff={"2": 0.4, "8": 0.8})
    assert prof.partials_reduce_eff_at(2) == 0.4 and prof.partials_reduce_eff_at(8) == 0.8
    assert prof.partials_reduce_eff_at(4) == pytest.approx(0.6)
    assert prof.partials_reduce_eff_at(16) == 0.8 and prof.partials_reduce_eff_at(1) == 0.4
    assert dataclasses.replace(prof, partials_reduce_eff={}).partials_reduce_eff_at(8) == prof.memory_eff


def test_update_writes_only_the_term_and_its_provenance(tmp_path):
    import json
    from twin.core.atomic import write_text
    from twin.costs.profile import PROFILES
    _reduce_records(tmp_path, [dict(shape_tag="llama3.1-70b/w2", m=4096, n=4096, world_size=2,
                                    time_s=_time_at(0.45, 4096, 4096, 2))])
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    before = json.loads((PROFILES / "h100.json").read_text())
    before.pop("partials_reduce_eff", None)
    before["provenance"].pop("partials_reduce", None)
    write_text(profiles / "h100.json", json.dumps(before))
    table, _ = at.update_profile("h100", tmp_path, profiles)
    after = json.loads((profiles / "h100.json").read_text())
    assert after["partials_reduce_eff"] == table and table["2"] == pytest.approx(0.45)
    assert list(after)[-1] == "provenance" and after["provenance"]["partials_reduce"]["fit_rows"] == {"2": 1}
    assert {k: v for k, v in after.items() if k not in ("partials_reduce_eff", "provenance")} == \
        {k: v for k, v in before.items() if k != "provenance"}


def test_the_committed_profile_carries_the_term_measured_from_the_committed_records():
    table, info = at.partials_reduce_terms("h100")
    prof = fitted_profile("h100")
    assert set(table) == {"2", "4", "8"}
    assert prof.partials_reduce_eff == pytest.approx(table, rel=1e-12)
    assert prof.provenance["partials_reduce"]["files"] == info["files"]
    # torch's reduction along the ranks runs faster the more partials each output sums
    assert table["2"] < table["4"] < table["8"]


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

"""Rung 2: validation on synthetic records (mechanics) and on the committed records (targets)."""

import shutil

import pytest

from calibration import records as rec
from calibration.fit import fit_gpu, write_profile
from calibration.validate import MEDIAN_TARGET, P90_TARGET, failures, format_table, validate, validate_parts
from tests.calibration.conftest import synthetic_records
from tests.committed import validation


@pytest.fixture(scope="module")
def two_gpu(tmp_path_factory, synthetic_root, synthetic_fit):
    """Synthetic H100 and H200 records, each GPU's profile fitted on its own records (the H100's is
    the session's fit of the same H100 files, copied here unchanged). The H200's fit starts from the
    H100's fitted profile, not the default one: from the default it ran every solve to its
    evaluation limit (~54 s of CPU against ~7 s); recovering curves from the default start is
    tests/calibration/test_fit.py's to judge, this module judges validation."""
    root = tmp_path_factory.mktemp("two")
    shutil.copytree(synthetic_root / "h100", root / "h100")
    synthetic_records(root, gpu="h200")
    profiles = tmp_path_factory.mktemp("profiles")
    write_profile(synthetic_fit[0], profiles)
    write_profile(fit_gpu("h200", root, base=synthetic_fit[0])[0], profiles)
    return root, profiles


@pytest.fixture(scope="module")
def two_gpu_run(two_gpu):
    """(validate's result, the parts it reported done, in order)."""
    parts = []
    return validate(*two_gpu, on_part=parts.append), parts


@pytest.fixture(scope="module")
def two_gpu_validation(two_gpu_run):
    return two_gpu_run[0]


def test_validate_reports_each_part_done_in_order(two_gpu, two_gpu_run, tmp_path):
    """`twin validate`'s progress bar steps on these parts (until s19rev it sat on one of five for most
    of the run)."""
    assert two_gpu_run[1] == validate_parts(two_gpu[0]) == ["h100", "h200", "decode_gemm", "serve_load", "h100_to_h200"]
    for folder in ("h100x2", "h200x4"):   # multi-GPU folders with nothing to predict are done too
        (tmp_path / folder).mkdir()
    parts = []
    validate(tmp_path, two_gpu[1], on_part=parts.append)
    assert parts == validate_parts(tmp_path) == ["h100x2", "h200x4", "decode_gemm", "serve_load", "h100_to_h200"]


def test_validate_synthetic_meets_targets(two_gpu_validation):
    result = two_gpu_validation
    assert set(result["gpus"]) == {"h100", "h200"}
    for gpu, s in result["gpus"].items():
        assert s["num_cases"] > 20
        assert s["median_abs_rel_error"] < 0.02 and s["p90_abs_rel_error"] < 0.03
    case = result["cases"][0]
    assert set(case) == {"name", "gpu", "bench", "kind", "num_gpus", "measured_s", "predicted_s", "rel_error", "held_out"}
    benches = {c["bench"] for c in result["cases"]}
    assert {"gemm", "grouped_gemm", "attn_fwd", "attn_bwd", "memory", "moe_layer_fwd", "moe_layer_bwd"} <= benches
    assert "h100_to_h200" in result
    assert failures(result) == []
    assert "HELD-OUT TOTAL" in format_table(result)


def test_validate_reports_plots(two_gpu_validation, tmp_path):
    from reports.validation_report import write_report
    paths = write_report(two_gpu_validation, tmp_path)
    assert {p.name for p in paths} == {"report.html", "report.md", "result.json", "validation_cases.csv",
                                       "validation_scatter.png", "validation_error_by_op.png",
                                       "validation_by_kind.png"}


def test_validation_report_shows_the_trace_side_by_side(tmp_path):
    import pandas as pd

    from calibration import trace
    from reports.validation_report import write_trace_comparison
    paths = write_trace_comparison(trace.compare(), tmp_path)
    assert {p.name for p in paths} == {"h800_trace.csv", "h800_trace.png"}
    table = pd.read_csv(tmp_path / "h800_trace.csv")
    assert table.phase.iloc[0] == "chunk pair" and set(trace.COMPUTE_PHASES) <= set(table.phase)
    assert (table.rel_error - (table.predicted_us / table.trace_us - 1)).abs().max() < 1e-9


def test_committed_records_meet_targets():
    """Held-out median <= 5% and P90 <= 10% per GPU on calibration/measurements (CI, no GPU)."""
    gpus = rec.gpu_dirs()
    if not gpus:
        pytest.skip("no committed records under calibration/measurements/<gpu>/ yet (run `twin calibrate` on a GPU)")
    result = validation()
    print(format_table(result))
    fails = failures(result)
    assert not fails, f"targets {MEDIAN_TARGET:.0%}/{P90_TARGET:.0%} missed: " + "; ".join(fails)


@pytest.mark.parametrize("gpu", ["h100", "h200"])
def test_mla_cat_of_strided_views_runs_at_its_measured_bandwidth(gpu):
    """real/model.py builds MLA's q and k by torch.cat of strided split views, a third of streaming
    bandwidth; the fit measures it (Profile.cat_eff) and the MLA layers are costed with it."""
    import dataclasses
    import json

    from calibration.fit import PROFILES_DIR
    from calibration.predict import _mla_ops, gpu_spec
    from twin.costs.profile import profile_from_json
    from twin.core.specs import get_model
    prof = profile_from_json(json.loads((PROFILES_DIR / f"{gpu}.json").read_text()))
    assert 0.1 < prof.cat_eff < prof.gather_eff
    fwd, _ = _mla_ops(get_model("v3-slice-1l"), 1, 4096, "bf16", gpu_spec(gpu), prof)
    slower = _mla_ops(get_model("v3-slice-1l"), 1, 4096, "bf16", gpu_spec(gpu),
                      dataclasses.replace(prof, cat_eff=prof.cat_eff / 2))[0]
    assert sum(g for _, g in slower.ops) > sum(g for _, g in fwd.ops)
    held = [c for c in validation()["cases"] if c["gpu"] == gpu and "mla_qk_cat" in c["name"] and c["held_out"]]
    assert held and all(abs(c["rel_error"]) <= 0.05 for c in held)

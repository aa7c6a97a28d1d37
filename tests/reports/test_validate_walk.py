"""s25walk (docs/notes/s25walk.md): `twin validate` as the engineer who re-calibrates runs it. Each test failed before
its fix. No test here runs the whole validation: `--only` picks parts that take well under a second (the
pre-registered s20new train steps, DeepSeek's H800 trace), the report's new sections are built from small results
(no plots drawn)."""

import contextlib
import io
import json
import re

import pandas as pd
import pytest

from calibration.serve_load_validation import format_serve_load
from calibration.validate import format_table
from calibration.validate_sections import JUDGED_KEYS
from reports.validation_report import build_page, pipeline_trace
from twin.cli.calibration import OTHER_PARTS, RECORDS_PART, _headline, validation_inputs
from twin.cli.main import main
from twin.core.chrome_trace import perfetto_drops

CHEAP_PARTS = "prereg_s20new,h800_trace"


@pytest.fixture(scope="module")
def two_parts(tmp_path_factory):
    """`twin validate --only prereg_s20new,h800_trace --json F --out DIR` and what it printed."""
    out = tmp_path_factory.mktemp("validate")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rc = main(["validate", "--quiet", "--only", CHEAP_PARTS, "--json", str(out / "v.json"), "--out", str(out / "report")])
    return rc, json.loads((out / "v.json").read_text()), printed.getvalue(), out / "report"


def test_only_computes_the_parts_it_names_in_the_result_s_order(two_parts):
    """D6: every run computed everything (3-6 minutes here) though a re-calibration asks one part."""
    rc, result, printed, _ = two_parts
    assert rc == 0
    assert list(result) == ["h800_trace", "prereg_s20new", "inputs"]
    assert "H800 chunk pair" in printed and re.search(r"prereg h100: 18 rows, median \|err\|", printed)
    assert "HELD-OUT TOTAL" not in printed


def test_the_result_and_the_report_name_what_the_run_read(two_parts):
    """D11: the records root and the profiles a run predicted with were in neither --json nor the report (a user's
    --records / --profiles run could not be told from the committed one's)."""
    _, result, _, report = two_parts
    inputs = result["inputs"]
    assert inputs["records_root"] == "calibration/measurements" and inputs["profiles_dir"] == "twin/data/profiles"
    assert inputs["parts"] == ["h800_trace", "prereg_s20new"] and {"h100", "h200"} <= set(inputs["profiles_sha256"])
    assert re.fullmatch(r"[0-9a-f]{40}|unknown", inputs["git_commit"])
    assert set(inputs["profile_fitted_on_these_records"]) == {"h100", "h200"}
    md = (report / "report.md").read_text()
    assert "Records: `calibration/measurements`; profiles: `twin/data/profiles` (h100 " in md
    # s26refit: the records the committed profile's stage-2 terms predate, named against its fit-input manifest
    assert ("The H100 profile was fitted on other records than these (compared with its fit-input manifest): "
            "`h100/attention.csv` (changed), `h100/model.csv` (changed).") in md


def test_only_refuses_an_unknown_part_naming_every_part(capsys):
    assert main(["validate", "--only", "prereg_s20new,nccl"]) == 2
    err = capsys.readouterr().err
    assert "--only: got 'prereg_s20new,nccl'; allowed: a comma list of records, h800_trace" in err
    assert "prereg_s22ttft" in err and "Traceback" not in err


def test_the_parts_are_listed_once():
    """The judged sections were computed from one hand-kept list and printed from another (D5)."""
    assert len(set(JUDGED_KEYS)) == len(JUDGED_KEYS) == 26   # s28pp4, s28pp42, s28blind, s29dec, s29idle, s29serve, s29dec2, s30mem, s30dec, s30serve, s30dec2
    assert not {RECORDS_PART, *OTHER_PARTS} & set(JUDGED_KEYS)


def test_the_report_shows_the_pre_registered_judgements(two_parts):
    """D5: the report (--out) showed none of the 15 judged sections; the terminal sent the reader there."""
    md = (two_parts[3] / "report.md").read_text()
    assert "## Pre-registered predictions and fresh shapes" in md
    assert "Pre-registered train steps, models never recorded (s20new; predictions of " in md and "(`prereg_s20new`)" in md
    assert re.search(r"- prereg h100: 18 rows, median \|err\| \d+\.\d%", md)
    assert "records' cases were not computed in this run" in md and "## Per GPU" not in md


def _serve_load() -> dict:
    figure = {"target": 0.05, "num_runs": 5, "median_abs_rel_error": 0.012, "p90_abs_rel_error": 0.02,
              "max_abs_rel_error": 0.025, "runs_within_target": 4}
    empty = {**figure, "num_runs": 0, "runs_within_target": 0}
    return {"h100": {"holdout": {"num_runs": 5, "meets_targets": False,
                                 "figures": {"output_tokens_per_s": figure, "ttft_p99_s": {**figure, "target": 0.2},
                                             "tpot_p99_s": empty}},
                     "fit": {"figures": {k: {"median_abs_rel_error": 0.01} for k in ("output_tokens_per_s", "ttft_p99_s",
                                                                                     "tpot_p99_s")}}}}


def test_the_report_and_the_headline_show_the_serving_load_runs():
    """D4: real/'s serving engine runs (issue 15's targets, README's "66 of 80 figures met") were in --json and
    --detail only: not in the report, not in the headline."""
    md = build_page({"serve_load": _serve_load()}, pd.DataFrame()).markdown()   # no plots to draw: fast
    assert "## Serving load runs: the request simulation against real/'s engine" in md
    assert "| h100 | output_tokens_per_s | 5 | 1.2% | 2% | 4 of 5 (±5%) | 1% |" in md
    assert "h100: 8 of 10 figures within target; targets NOT met" in md
    lines = format_serve_load(_serve_load())
    assert lines[-1] == "serve_load h100    held-out targets: NOT met (8 of 10 figures within target)"
    assert _headline(["\n".join(lines)]).splitlines()[0] == lines[-1]


def test_the_report_shows_decode_s_batched_gemms():
    """D7: the decode GEMMs' held-out figures were computed and shown nowhere but --json."""
    dg = {"h100": {"held_out": {"num_cases": 124, "median_abs_rel_error": 0.12, "p90_abs_rel_error": 0.42},
                   "fit": {"num_cases": 253, "median_abs_rel_error": 0.073, "p90_abs_rel_error": 0.34}}}
    md = build_page({"decode_gemm": dg}, pd.DataFrame()).markdown()
    assert "## Decode's batched GEMMs" in md and "| H100 | 124 | 12% | 42% | 253 | 7.3% |" in md
    assert format_table({"gpus": {}, "decode_gemm": dg}).splitlines()[-1] == \
        "decode GEMMs h100: 124 held out, median 12.0%, P90 42.0% (fit median 7.3%)"


def test_a_gpu_folder_named_as_the_records_root_is_refused_naming_its_parent(tmp_path, capsys):
    """D8: `--records mine/h100` (the folder `twin calibrate` filled) was refused as having no <gpu>/ folders,
    without a word of the root above it."""
    gpu = tmp_path / "mine" / "h100"
    gpu.mkdir(parents=True)
    (gpu / "gemm.csv").write_text("bench,time_s\ngemm,0.001\n")
    assert main(["validate", "--quiet", "--records", str(gpu)]) == 2
    err = capsys.readouterr().err
    assert f"this is a <gpu>/ folder itself: name its parent, --records {gpu.parent.resolve()}" in err


def test_each_pipeline_case_opens_in_perfetto_measured_above_the_twin():
    """D12 (issue 13): the report drew each pipeline case's ranks measured beside simulated as a PNG only; the twin's
    side of a measured configuration could not be opened in Perfetto beside real/'s trace. pipeline_trace names
    the ops and tracks as real/pipeline/bench.py does; an overlapped pair is named from the twin's label."""
    case = {"name": "pipeline_step tiny dualpipev pp2", "gpu": "h200", "pp": 2, "config": {"schedule": "dualpipev"},
            "measured_s": 0.3, "predicted_s": 0.29,
            # rank, kind, micro-batch, chunk, start, end (s, on the host's shared axis)
            "measured_ops": [[0, "F", 0, 0, 10.0, 10.1], [0, "send", 0, 0, 10.1, 10.11], [0, "FB", 2, 1, 10.12, 10.2],
                             [1, "F", 0, 0, 10.11, 10.2], [1, "allreduce", -1, -1, 10.2, 10.3]],
            "simulated_op_spans": [[0, "F0.0", 0.0, 0.1], [0, "F2.1&BW0.0", 0.1, 0.18], [1, "F0.0", 0.1, 0.19]]}
    trace = pipeline_trace(case)
    slices = [(e["pid"], e["tid"], e["name"], e["ts"], e["dur"]) for e in trace["traceEvents"] if e["ph"] == "X"]
    assert slices == [(0, 0, "F0.0", 0.0, 100_000.0), (0, 1, "send 0.0", 100_000.0, 10_000.0),
                      (0, 0, "F2.1&BW0.0", 120_000.0, 80_000.0), (1, 0, "F0.0", 110_000.0, 90_000.0),
                      (1, 2, "allreduce", 200_000.0, 100_000.0),
                      (100, 0, "F0.0", 0.0, 100_000.0), (100, 0, "F2.1&BW0.0", 100_000.0, 80_000.0),
                      (101, 0, "F0.0", 100_000.0, 90_000.0)]
    names = {e["pid"]: e["args"]["name"] for e in trace["traceEvents"] if e["name"] == "process_name"}
    assert names == {0: "measured: GPU 0 (PP rank 0)", 1: "measured: GPU 1 (PP rank 1)", 100: "twin: PP rank 0",
                     101: "twin: PP rank 1"}
    assert not perfetto_drops(trace["traceEvents"])


def test_a_profile_fitted_on_other_records_is_named(tmp_path):
    """D13: a re-calibration's first question, "was this profile fitted on these records?", was answered nowhere:
    the committed H100 and H200 profiles were fitted (2026-11-24, 3581cbf) before records were added to their
    folders. Each profile's provenance holds its records' sha256s; validate compares them with the records read
    and (s26refit) names the ones that differ (a profile without a fit-input manifest entry: its GPU folder's)."""
    from calibration import records as rec

    root, profiles = tmp_path / "records", tmp_path / "profiles"
    (root / "h100").mkdir(parents=True)
    profiles.mkdir()
    (root / "h100" / "gemm.csv").write_text("bench,time_s\ngemm,0.001\n")
    files = rec.records_sha256("h100", root)
    (profiles / "h100.json").write_text(json.dumps({"provenance": {"record_files_sha256": files}}))
    assert validation_inputs(root, profiles, ("records",))["profile_fitted_on_these_records"] == {"h100": True}
    (root / "h100" / "gemm.csv").write_text("bench,time_s\ngemm,0.001\ngemm,0.002\n")
    inputs = validation_inputs(root, profiles, ("records",))
    assert inputs["profile_fitted_on_these_records"] == {"h100": False}
    assert inputs["records_since_fit"]["h100"]["changed"] == ["h100/gemm.csv"]


def test_the_headline_shows_session_28s_judged_sections():
    """s28blind's section printed only its heading and s28pp4's / s28pp42's nothing in the headline (the per-row
    tables stay --detail only)."""
    from calibration import lease_probe, s28blind
    blind = {"by_group": {"h200 decode": {"num_cases": 9, "median_abs_rel_error": 0.079, "p90_abs_rel_error": 0.12,
                                          "max_abs_rel_error": 0.13, "meets_target": False}},
             "idle": {"num_rank_rows": 0}, "ranking": {"num_pairs": 0},
             "rows": [{"gpu": "h200", "num_gpus": 1, "kind": "decode", "model": "m", "measured_s": 1e-3,
                       "predicted_s": 1e-3, "rel_error": 0.0}]}
    shown = _headline([s28blind.format_table(blind)]).splitlines()
    assert "  prereg-blind h200 decode: 9 rows, median |err| 7.9%, P90 12.0%, max 13.0% (target 5% / 10%: MISSED)" in shown
    assert not any(line.startswith("    h200 decode m") for line in shown)
    pp4 = lease_probe.format_section(lease_probe.section())
    shown = _headline([pp4]).splitlines()
    assert shown[0].startswith("s28pp4 four-GPU pipeline steps on a fresh lease")
    assert any(line.startswith("    P (adopted): pp2ep2 median |err|") for line in shown)

"""The s23srvh records (docs/notes/s23srvh_rule.md): fresh held-out load runs of the never-served models at Poisson
12/s, 28/s and a closed loop of 20, each after the pause probe, against the predictions computed at each run's
measured host inputs by the rule's code (calibration/measurements/prereg/s23srvh_predictions.csv). Misses of the
setting in force (both switches off: neither adopted) are strict xfails carrying their live figures."""

import math

import pytest

from calibration import prereg_serve as ps
from calibration import serve_host_stalls as shs
from calibration.serve_load_validation import FIGURES, TARGETS
from twin.serving import engine as serve_engine
from twin.serving import timing

MISSES = {
    ("h100", "n23-qwen3moe-poisson-r12-mid", "ttft_p50_s"): "-15.3%",
    ("h100", "n23-qwen3moe-poisson-r28-mid", "tpot_p50_s"): "+12.4%",
    ("h100", "n23-qwen3moe-closed-c20-mid", "output_tokens_per_s"): "-8.5%",
    ("h100", "n23-qwen3moe-closed-c20-mid", "ttft_p50_s"): "+25.5%",
    ("h100", "n23-qwen3moe-closed-c20-mid", "ttft_p99_s"): "+46.3%",
    ("h100", "n23-qwen2moe-closed-c20-mid", "output_tokens_per_s"): "+5.8%",
    ("h100", "n23-qwen2moe-closed-c20-mid", "ttft_p99_s"): "+29.2%",
    ("h100", "n23-mixtral-poisson-r12-mid", "ttft_p50_s"): "+11.9%",
    ("h100", "n23-mixtral-poisson-r12-mid", "ttft_p99_s"): "+29.1%",
    ("h100", "n23-mixtral-poisson-r12-mid", "tpot_p50_s"): "+32.0%",
    ("h100", "n23-mixtral-poisson-r12-mid", "tpot_p99_s"): "+31.2%",
    ("h100", "n23-mixtral-poisson-r28-mid", "ttft_p99_s"): "+29.8%",
    ("h100", "n23-mixtral-poisson-r28-mid", "tpot_p50_s"): "+18.2%",
    ("h100", "n23-mixtral-poisson-r28-mid", "tpot_p99_s"): "+23.3%",
    ("h100", "n23-mixtral-closed-c20-mid", "output_tokens_per_s"): "-17.4%",
    ("h100", "n23-mixtral-closed-c20-mid", "ttft_p50_s"): "+18.5%",
    ("h100", "n23-mixtral-closed-c20-mid", "ttft_p99_s"): "+39.6%",
    ("h100", "n23-mixtral-closed-c20-mid", "tpot_p50_s"): "+21.2%",
    ("h200", "n23-qwen3moe-poisson-r28-mid", "ttft_p50_s"): "-16.2%",
    ("h200", "n23-qwen3moe-poisson-r28-mid", "ttft_p99_s"): "-26.6%",
    ("h200", "n23-qwen3moe-poisson-r28-mid", "tpot_p50_s"): "-17.4%",
    ("h200", "n23-qwen3moe-closed-c20-mid", "output_tokens_per_s"): "+8.6%",
    ("h200", "n23-qwen2moe-poisson-r28-mid", "ttft_p50_s"): "-24.5%",
    ("h200", "n23-qwen2moe-poisson-r28-mid", "ttft_p99_s"): "-35.5%",
    ("h200", "n23-qwen2moe-poisson-r28-mid", "tpot_p50_s"): "-15.7%",
    ("h200", "n23-qwen2moe-poisson-r28-mid", "tpot_p99_s"): "-28.6%",
    ("h200", "n23-qwen2moe-closed-c20-mid", "output_tokens_per_s"): "+9.0%",
    ("h200", "n23-qwen2moe-closed-c20-mid", "ttft_p50_s"): "-12.8%",
    ("h200", "n23-mixtral-poisson-r12-mid", "ttft_p50_s"): "+13.1%",
    ("h200", "n23-mixtral-poisson-r12-mid", "ttft_p99_s"): "+48.5%",
    ("h200", "n23-mixtral-poisson-r12-mid", "tpot_p50_s"): "+18.9%",
    ("h200", "n23-mixtral-poisson-r12-mid", "tpot_p99_s"): "+20.9%",
    ("h200", "n23-mixtral-closed-c20-mid", "ttft_p50_s"): "+12.2%",
}


def _in_force() -> str:
    now = (timing.ADOPT_GRAPH_DECODE_HOST_UNSCALED, serve_engine.ADOPT_HOST_STALLS)
    return next(name for name, sw in shs.SETTINGS.items() if sw == now)


ALL_ROWS, VERDICTS = shs.judged()
ROWS = [r for r in ALL_ROWS if r["twin"] == _in_force()]
CASES = [(r["gpu"], r["run_id"], k) for r in ROWS for k in FIGURES]


def test_every_planned_run_was_recorded_and_predicted_under_every_setting():
    for gpu in {r["gpu"] for r in ALL_ROWS}:
        want = sorted(ps.run_id(m, run, shs.REG.prefix) for m in ps.MODELS for run in shs.REG.runs)
        for name in shs.SETTINGS:
            assert sorted(r["run_id"] for r in ALL_ROWS if r["gpu"] == gpu and r["twin"] == name) == want
    assert ROWS and {r["gpu"] for r in ROWS} == {"h100", "h200"}   # both sets are committed


def test_the_predictions_were_made_at_the_records_measured_inputs():
    preds = shs.written_predictions()
    recs = shs.with_host_pauses(ps.measured(reg=shs.REG).to_dict("records"))
    for r in recs:
        for p in preds[(preds["gpu"] == r["gpu"]) & (preds["run_id"] == r["run_id"])].to_dict("records"):
            assert p["host_launch_s"] == pytest.approx(r["probe_s"], rel=1e-9)
            assert p["host_stall_rate_per_s"] == pytest.approx(r["host_stall_rate_per_s"], rel=1e-9)


def test_the_rules_verdicts_as_recorded_in_the_note():
    # criteria 1-3 (docs/notes/s23srvh_rule.md outcome): graph_unscaled met them on the H100 alone (27 -> 28 of 45) and
    # failed criterion 4; with the later fresh H200 set (30 -> 26 of 45) it fails criteria 1-3 too (57 -> 54 of 90).
    # The host stalls move nothing (one 2.2 ms pause in 18 s on the H100, none on the H200).
    assert not VERDICTS["graph_unscaled"]["adopt"] and not VERDICTS["host_stalls"]["adopt"]
    assert (timing.ADOPT_GRAPH_DECODE_HOST_UNSCALED, serve_engine.ADOPT_HOST_STALLS) == (False, False)


@pytest.mark.parametrize("gpu,run_id,figure", [
    pytest.param(*c, marks=pytest.mark.xfail(strict=True, reason=f"s23srvh prediction {MISSES[c]} (target "
                                                                    f"{TARGETS[c[2]]:.0%})")) if c in MISSES else c
    for c in CASES])
def test_s23srvh_prediction_meets_issue_15_target(gpu, run_id, figure):
    row = next(r for r in ROWS if r["gpu"] == gpu and r["run_id"] == run_id)
    err = row[f"{figure}_rel_error"]
    assert math.isfinite(err) and abs(err) <= TARGETS[figure], f"{err:+.1%}"


def test_the_misses_listed_are_live():
    assert set(MISSES) <= set(CASES)

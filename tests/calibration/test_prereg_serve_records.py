"""The s21srvnew, s21srvnew2 and s22ttft load runs (calibration/measurements/<gpu>/<registration>/) against the predictions
registered before they ran (calibration/measurements/prereg/<registration>_predictions.csv), primary variant (the
host-input twin at each run's probe; s21srvnew2 and s22ttft under the twin setting in force: ADOPT_LAYER_SCALED_ENGINE,
ADOPT_WARM_PASS_COVERS_BUDGET): every figure within issue 15's target, each miss a strict xfail carrying its live figure
(docs/notes/s21srvnew.md, s21srvnew2.md, s22ttft.md)."""

import pytest

from calibration import prereg_serve as ps
from calibration.records_io import read_csv
from calibration.serve_load_validation import FIGURES, TARGETS

# (gpu, run_id, figure) -> the live error (predicted / measured - 1) of a check the registration misses
# (run ids carry the registration: n21-* s21srvnew, n21b-* s21srvnew2, n22-* s22ttft)
MISSES: dict[tuple[str, str, str], str] = {
    ("h100", "n21-qwen3moe-poisson-r8-mid", "ttft_p99_s"): "-38.0%",
    ("h100", "n21-qwen3moe-closed-c16-mid", "output_tokens_per_s"): "+5.8%",
    ("h100", "n21-qwen3moe-closed-c16-mid", "ttft_p50_s"): "-17.6%",
    ("h100", "n21-qwen3moe-closed-c16-mid", "ttft_p99_s"): "+44.3%",
    ("h100", "n21-qwen2moe-poisson-r8-mid", "ttft_p99_s"): "-45.0%",
    ("h100", "n21-qwen2moe-poisson-r8-mid", "tpot_p50_s"): "+18.0%",
    ("h100", "n21-qwen2moe-poisson-r24-mid", "tpot_p50_s"): "+26.4%",
    ("h100", "n21-qwen2moe-closed-c16-mid", "output_tokens_per_s"): "-7.0%",
    ("h100", "n21-qwen2moe-closed-c16-mid", "ttft_p50_s"): "+10.7%",
    ("h100", "n21-qwen2moe-closed-c16-mid", "ttft_p99_s"): "+66.6%",
    ("h100", "n21-mixtral-poisson-r8-mid", "ttft_p50_s"): "+27.4%",
    ("h100", "n21-mixtral-poisson-r8-mid", "ttft_p99_s"): "-33.5%",
    ("h100", "n21-mixtral-poisson-r8-mid", "tpot_p50_s"): "+25.3%",
    ("h100", "n21-mixtral-poisson-r8-mid", "tpot_p99_s"): "+26.1%",
    ("h100", "n21-mixtral-poisson-r24-mid", "ttft_p50_s"): "+79.1%",
    ("h100", "n21-mixtral-poisson-r24-mid", "ttft_p99_s"): "+105.3%",
    ("h100", "n21-mixtral-poisson-r24-mid", "tpot_p50_s"): "+67.5%",
    ("h100", "n21-mixtral-poisson-r24-mid", "tpot_p99_s"): "+55.3%",
    ("h100", "n21-mixtral-closed-c16-mid", "output_tokens_per_s"): "-22.5%",
    ("h100", "n21-mixtral-closed-c16-mid", "ttft_p50_s"): "+47.2%",
    ("h100", "n21-mixtral-closed-c16-mid", "ttft_p99_s"): "+133.7%",
    ("h100", "n21-mixtral-closed-c16-mid", "tpot_p50_s"): "+28.9%",
    ("h200", "n21-qwen3moe-poisson-r24-mid", "ttft_p99_s"): "+57.7%",
    ("h200", "n21-qwen3moe-closed-c16-mid", "ttft_p50_s"): "+15.3%",
    ("h200", "n21-qwen3moe-closed-c16-mid", "ttft_p99_s"): "+91.0%",
    ("h200", "n21-qwen2moe-poisson-r8-mid", "ttft_p50_s"): "-19.9%",
    ("h200", "n21-qwen2moe-poisson-r8-mid", "ttft_p99_s"): "-20.6%",
    ("h200", "n21-qwen2moe-poisson-r8-mid", "tpot_p50_s"): "-10.4%",
    ("h200", "n21-qwen2moe-poisson-r24-mid", "ttft_p99_s"): "+70.4%",
    ("h200", "n21-qwen2moe-closed-c16-mid", "ttft_p99_s"): "+24.2%",
    ("h200", "n21-mixtral-poisson-r8-mid", "ttft_p50_s"): "+21.7%",
    ("h200", "n21-mixtral-poisson-r24-mid", "ttft_p50_s"): "+32.1%",
    ("h200", "n21-mixtral-poisson-r24-mid", "ttft_p99_s"): "+160.9%",
    ("h200", "n21-mixtral-poisson-r24-mid", "tpot_p50_s"): "+10.4%",
    ("h200", "n21-mixtral-poisson-r24-mid", "tpot_p99_s"): "+25.0%",
    ("h200", "n21-mixtral-closed-c16-mid", "output_tokens_per_s"): "-18.5%",
    ("h200", "n21-mixtral-closed-c16-mid", "ttft_p50_s"): "+47.9%",
    ("h200", "n21-mixtral-closed-c16-mid", "ttft_p99_s"): "+180.3%",
    ("h200", "n21-mixtral-closed-c16-mid", "tpot_p50_s"): "+23.1%",
    ("h200", "n21-mixtral-closed-c16-mid", "tpot_p99_s"): "+24.1%",
    # s21srvnew2 (the judged H100 and H200 runs under the layer-scaled twin, adopted by its rule: docs/notes/s21srvnew2.md)
    ("h100", "n21b-qwen3moe-poisson-r8-mid", "ttft_p50_s"): "-10.8%",
    ("h100", "n21b-qwen3moe-poisson-r24-mid", "ttft_p50_s"): "-12.7%",
    ("h100", "n21b-qwen3moe-poisson-r24-mid", "ttft_p99_s"): "+56.6%",
    ("h100", "n21b-qwen3moe-closed-c16-mid", "ttft_p99_s"): "+61.5%",
    ("h100", "n21b-qwen2moe-poisson-r8-mid", "ttft_p50_s"): "-17.1%",
    ("h100", "n21b-qwen2moe-poisson-r24-mid", "ttft_p50_s"): "-10.5%",
    ("h100", "n21b-qwen2moe-closed-c16-mid", "output_tokens_per_s"): "-11.1%",
    ("h100", "n21b-qwen2moe-closed-c16-mid", "ttft_p50_s"): "+16.5%",
    ("h100", "n21b-qwen2moe-closed-c16-mid", "ttft_p99_s"): "+86.8%",
    ("h100", "n21b-qwen2moe-closed-c16-mid", "tpot_p50_s"): "+14.0%",
    ("h100", "n21b-mixtral-poisson-r8-mid", "ttft_p50_s"): "-13.3%",
    ("h100", "n21b-mixtral-poisson-r8-mid", "ttft_p99_s"): "+27.9%",
    ("h100", "n21b-mixtral-poisson-r8-mid", "tpot_p50_s"): "+32.9%",
    ("h100", "n21b-mixtral-poisson-r8-mid", "tpot_p99_s"): "+26.9%",
    ("h100", "n21b-mixtral-poisson-r24-mid", "ttft_p50_s"): "+17.7%",
    ("h100", "n21b-mixtral-poisson-r24-mid", "ttft_p99_s"): "+100.6%",
    ("h100", "n21b-mixtral-poisson-r24-mid", "tpot_p50_s"): "+31.3%",
    ("h100", "n21b-mixtral-poisson-r24-mid", "tpot_p99_s"): "+28.3%",
    ("h100", "n21b-mixtral-closed-c16-mid", "output_tokens_per_s"): "-16.0%",
    ("h100", "n21b-mixtral-closed-c16-mid", "ttft_p50_s"): "+17.2%",
    ("h100", "n21b-mixtral-closed-c16-mid", "ttft_p99_s"): "+76.1%",
    ("h100", "n21b-mixtral-closed-c16-mid", "tpot_p50_s"): "+15.6%",
    ("h200", "n21b-qwen3moe-poisson-r24-mid", "ttft_p50_s"): "+13.1%",
    ("h200", "n21b-qwen3moe-poisson-r24-mid", "ttft_p99_s"): "+39.8%",
    ("h200", "n21b-qwen3moe-closed-c16-mid", "output_tokens_per_s"): "-10.0%",
    ("h200", "n21b-qwen3moe-closed-c16-mid", "ttft_p50_s"): "+29.1%",
    ("h200", "n21b-qwen3moe-closed-c16-mid", "ttft_p99_s"): "+77.7%",
    ("h200", "n21b-qwen3moe-closed-c16-mid", "tpot_p50_s"): "+11.0%",
    ("h200", "n21b-qwen2moe-poisson-r24-mid", "ttft_p50_s"): "-14.9%",
    ("h200", "n21b-qwen2moe-poisson-r24-mid", "tpot_p50_s"): "-12.3%",
    ("h200", "n21b-qwen2moe-poisson-r24-mid", "tpot_p99_s"): "-23.7%",
    ("h200", "n21b-qwen2moe-closed-c16-mid", "output_tokens_per_s"): "-10.2%",
    ("h200", "n21b-qwen2moe-closed-c16-mid", "ttft_p50_s"): "+24.1%",
    ("h200", "n21b-qwen2moe-closed-c16-mid", "ttft_p99_s"): "+55.5%",
    ("h200", "n21b-mixtral-poisson-r8-mid", "ttft_p99_s"): "+31.0%",
    ("h200", "n21b-mixtral-poisson-r8-mid", "tpot_p99_s"): "-22.0%",
    ("h200", "n21b-mixtral-poisson-r24-mid", "ttft_p99_s"): "+48.9%",
    ("h200", "n21b-mixtral-closed-c16-mid", "output_tokens_per_s"): "-7.7%",
    ("h200", "n21b-mixtral-closed-c16-mid", "ttft_p50_s"): "+27.4%",
    ("h200", "n21b-mixtral-closed-c16-mid", "ttft_p99_s"): "+67.6%",
    # s22ttft (registered layer_scaled, warm_covers; the live figures under warm_covers: docs/notes/s22ttft.md)
    ("h100", "n22-qwen3moe-poisson-r16-mid", "ttft_p99_s"): "-64.7%",
    ("h100", "n22-qwen3moe-poisson-r16-mid", "tpot_p50_s"): "+15.1%",
    ("h100", "n22-qwen3moe-poisson-r16-mid", "tpot_p99_s"): "-29.6%",
    ("h100", "n22-qwen3moe-poisson-r32-mid", "ttft_p99_s"): "-50.7%",
    ("h100", "n22-qwen3moe-closed-c24-mid", "ttft_p50_s"): "+13.4%",
    ("h100", "n22-qwen3moe-closed-c24-mid", "ttft_p99_s"): "+26.5%",
    ("h100", "n22-qwen2moe-poisson-r16-mid", "ttft_p50_s"): "-20.4%",
    ("h100", "n22-qwen2moe-poisson-r16-mid", "ttft_p99_s"): "-69.0%",
    ("h100", "n22-qwen2moe-poisson-r16-mid", "tpot_p50_s"): "-12.4%",
    ("h100", "n22-qwen2moe-poisson-r16-mid", "tpot_p99_s"): "-29.1%",
    ("h100", "n22-qwen2moe-poisson-r32-mid", "ttft_p50_s"): "-20.9%",
    ("h100", "n22-qwen2moe-poisson-r32-mid", "ttft_p99_s"): "-69.1%",
    ("h100", "n22-qwen2moe-poisson-r32-mid", "tpot_p50_s"): "-18.4%",
    ("h100", "n22-qwen2moe-poisson-r32-mid", "tpot_p99_s"): "-32.7%",
    ("h100", "n22-qwen2moe-closed-c24-mid", "ttft_p99_s"): "+31.0%",
    ("h100", "n22-mixtral-poisson-r16-mid", "ttft_p99_s"): "-56.0%",
    ("h100", "n22-mixtral-poisson-r16-mid", "tpot_p50_s"): "+24.5%",
    ("h100", "n22-mixtral-poisson-r16-mid", "tpot_p99_s"): "-28.4%",
    ("h100", "n22-mixtral-poisson-r32-mid", "ttft_p99_s"): "-70.0%",
    ("h100", "n22-mixtral-poisson-r32-mid", "tpot_p50_s"): "+26.0%",
    ("h100", "n22-mixtral-closed-c24-mid", "output_tokens_per_s"): "-13.5%",
    ("h100", "n22-mixtral-closed-c24-mid", "ttft_p50_s"): "+24.3%",
    ("h100", "n22-mixtral-closed-c24-mid", "ttft_p99_s"): "+52.6%",
    ("h100", "n22-mixtral-closed-c24-mid", "tpot_p50_s"): "+20.3%",
    ("h200", "n22-qwen3moe-poisson-r16-mid", "ttft_p50_s"): "-24.3%",
    ("h200", "n22-qwen3moe-poisson-r16-mid", "tpot_p50_s"): "-15.1%",
    ("h200", "n22-qwen3moe-closed-c24-mid", "ttft_p50_s"): "+10.4%",
    ("h200", "n22-qwen3moe-closed-c24-mid", "ttft_p99_s"): "+45.1%",
    ("h200", "n22-qwen2moe-poisson-r32-mid", "ttft_p50_s"): "-20.6%",
    ("h200", "n22-qwen2moe-poisson-r32-mid", "ttft_p99_s"): "-25.6%",
    ("h200", "n22-qwen2moe-poisson-r32-mid", "tpot_p50_s"): "-10.3%",
    ("h200", "n22-qwen2moe-poisson-r32-mid", "tpot_p99_s"): "-25.6%",
    ("h200", "n22-qwen2moe-closed-c24-mid", "output_tokens_per_s"): "-7.7%",
    ("h200", "n22-qwen2moe-closed-c24-mid", "ttft_p50_s"): "+27.3%",
    ("h200", "n22-qwen2moe-closed-c24-mid", "ttft_p99_s"): "+46.5%",
    ("h200", "n22-mixtral-poisson-r32-mid", "ttft_p99_s"): "-21.8%",
    ("h200", "n22-mixtral-closed-c24-mid", "output_tokens_per_s"): "-9.6%",
    ("h200", "n22-mixtral-closed-c24-mid", "ttft_p50_s"): "+27.8%",
    ("h200", "n22-mixtral-closed-c24-mid", "tpot_p50_s"): "+10.6%",
}


def _rows(reg):
    recs = ps.measured(reg=reg)
    if recs.empty:
        return []
    rows = ps.compare(read_csv(reg.predictions_file), recs)
    twin = ps.in_force_twin(rows)   # the registered setting the committed switches select
    return [r for r in rows if r["variant"] == "host_input" and r["twin"] == twin]


ROWS = [r for reg in ps.REGISTRATIONS.values() for r in _rows(reg)]
CASES = [(r["gpu"], r["run_id"], k) for r in ROWS for k in FIGURES]


@pytest.mark.parametrize("reg", ps.REGISTRATIONS.values(), ids=lambda r: r.name)
def test_every_registered_run_was_recorded_on_each_gpu_that_ran(reg):
    rows = [r for r in ROWS if r["run_id"].startswith(reg.prefix + "-")]
    for gpu in {r["gpu"] for r in rows}:
        assert sorted(r["run_id"] for r in rows if r["gpu"] == gpu) == \
            sorted(ps.run_id(m, run, reg.prefix) for m in ps.MODELS for run in reg.runs)
    assert all(r["probe_inside_grid"] for r in ROWS)   # every probe read inside the registered grid


@pytest.mark.parametrize("gpu,run_id,figure", [
    pytest.param(*c, marks=pytest.mark.xfail(strict=True, reason=f"registered prediction {MISSES[c]} (target "
                                                                    f"{TARGETS[c[2]]:.0%})")) if c in MISSES else c
    for c in CASES])
def test_registered_prediction_meets_issue_15_target(gpu, run_id, figure):
    row = next(r for r in ROWS if r["gpu"] == gpu and r["run_id"] == run_id)
    assert abs(row[f"{figure}_rel_error"]) <= TARGETS[figure], f"{row[f'{figure}_rel_error']:+.1%}"


def test_the_misses_listed_are_live():
    assert set(MISSES) <= set(CASES)

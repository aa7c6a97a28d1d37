"""Serving capacity: the fewest GPUs and the prefill/decode split for a request rate within SLOs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import twin
from twin.core.errors import ScenarioError
from twin.core.scenario import SERVING, load_scenario
from twin.planning.serving import size_serving, slo_check


@pytest.fixture(scope="module")
def r1():
    return load_scenario(kind=SERVING)    # R1 on HGX H200, instances of 8 GPUs


def test_more_decode_gpus_lower_tpot_and_more_prefill_gpus_lower_ttft(r1):
    small = slo_check(r1, 10.0, 10.0, 1.0, prefill_gpus=8, decode_gpus=16)
    big = slo_check(r1, 10.0, 10.0, 1.0, prefill_gpus=16, decode_gpus=32)
    assert small.meets and big.meets
    assert big.tpot_s < small.tpot_s and big.decode_batch < small.decode_batch
    assert big.ttft_s < small.ttft_s and big.prefill_utilization_frac == pytest.approx(small.prefill_utilization_frac / 2)
    # Little's law: requests in flight per decode instance = rate per instance x output tokens x TPOT
    assert small.decode_batch >= 10.0 / 2 * r1.serve.output_len * small.tpot_s


def test_fewest_gpus_is_minimal(r1):
    out = size_serving(r1, 20.0, 3.0, 0.05)
    best = out.best
    assert best is not None and best.meets and best.tpot_s <= 0.05 and best.ttft_s <= 3.0
    # every split of one instance fewer fails
    fewer = best.num_gpus - 8
    for p in range(8, fewer, 8):
        assert not slo_check(r1, 20.0, 3.0, 0.05, p, fewer - p).meets
    assert out.evaluated == len(out.checks) and sum(out.infeasible_by_reason.values()) == out.evaluated - 1


def test_unreachable_targets_say_why_without_searching(r1):
    out = size_serving(r1, 1.0, 1e-3, 0.05)
    assert out.best is None and out.evaluated == 0
    assert list(out.infeasible_by_reason)[0].startswith("TTFT of one prompt alone")


def test_api_checks_its_numbers(r1):
    with pytest.raises(ScenarioError, match="rate_per_s"):
        twin.plan_serving(r1, float("nan"), 1.0, 0.05)
    assert twin.plan_serving(r1, 1.0, 3.0, 0.05).best.num_gpus == 16


def test_cli_serving_question_reports_the_split_or_exits_3(tmp_path):
    root = Path(__file__).resolve().parents[2]
    ok = subprocess.run([sys.executable, "-m", "twin.cli.main", "plan", "--rate", "10", "--ttft", "3", "--tpot", "0.05",
                         "--json", str(tmp_path / "s.json"), "--out", str(tmp_path / "s")], capture_output=True, text=True, cwd=root)
    assert ok.returncode == 0, ok.stderr
    best = json.loads((tmp_path / "s.json").read_text())["best"]
    assert best["prefill_gpus"] + best["decode_gpus"] == best["num_gpus"] and "fewest GPUs" in ok.stdout
    assert (tmp_path / "s" / "report.html").is_file()
    no = subprocess.run([sys.executable, "-m", "twin.cli.main", "plan", "--rate", "10", "--ttft", "0.001", "--tpot", "0.05"],
                        capture_output=True, text=True, cwd=root)
    assert no.returncode == 3 and "TTFT of one prompt alone" in no.stderr and "Traceback" not in no.stderr

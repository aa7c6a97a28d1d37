"""Serving capacity: the fewest GPUs and the prefill/decode split for a request rate within SLOs."""

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import twin
from twin.core.errors import ScenarioError
from twin.core.scenario import SERVING, load_scenario
from twin.planning.serving import size_serving, slo_check, steady_requests
from twin.serving.simulate import simulate


@pytest.fixture(scope="module")
def r1():
    """R1 on HGX H200, instances of 8 GPUs, with short outputs so that a few hundred requests reach
    a steady state (a request lasts seconds, not a minute)."""
    sc = load_scenario(kind=SERVING)
    return dataclasses.replace(sc, serve=dataclasses.replace(sc.serve, input_len=512, output_len=64))


N = 400   # requests per simulated deployment in these tests


def test_checks_are_simulated_and_more_gpus_serve_better(r1):
    small = slo_check(r1, 20.0, 10.0, 1.0, prefill_gpus=8, decode_gpus=8, num_requests=N)
    big = slo_check(r1, 20.0, 10.0, 1.0, prefill_gpus=16, decode_gpus=16, num_requests=N)
    assert small.simulated_requests == big.simulated_requests == N
    assert big.tpot_s <= small.tpot_s and big.ttft_s <= small.ttft_s
    # the verdict is the simulation's own percentile of the steady-window requests
    sc = _deployment(r1, 20.0, 1, 1, N)
    res = simulate(sc)
    r = res.requests
    inside = (r["arrival_s"] >= res.steady["window_start_s"]) & (r["arrival_s"] <= res.steady["window_end_s"])
    ttft = (r["first_token_s"] - r["arrival_s"])[inside]
    assert small.ttft_s == pytest.approx(np.percentile(ttft, 90))
    # a deployment far below the load fails, naming the target it misses
    tight = slo_check(r1, 200.0, 0.5, 0.02, prefill_gpus=8, decode_gpus=8, num_requests=N)
    assert not tight.meets and tight.reason in ("TTFT over target", "TPOT over target")


def _deployment(r1, rate, p_inst, d_inst, n):
    from twin.planning.serving import _Deployment, _scenario
    return _scenario(_Deployment(r1, 1.0), rate, p_inst, d_inst, n)


def test_fewest_gpus_is_minimal(r1):
    out = size_serving(r1, 40.0, 0.5, 0.03, num_requests=N, layouts=("disaggregated",))
    best = out.best
    assert best is not None and best.meets and best.tpot_s <= 0.03 and best.ttft_s <= 0.5
    assert best.prefill_gpus + best.decode_gpus == best.num_gpus and best.prefill_gpus >= 8
    # one instance fewer in either pool fails (the bisection's own neighbours, simulated again)
    for p, d in ((best.prefill_gpus - 8, best.decode_gpus), (best.prefill_gpus, best.decode_gpus - 8)):
        if p >= 8 and d >= 8:
            assert not slo_check(r1, 40.0, 0.5, 0.03, p, d, num_requests=N).meets
    assert out.evaluated == len(out.checks) and sum(out.infeasible_by_reason.values()) == out.evaluated - out.feasible


def test_unreachable_targets_say_why_without_searching(r1):
    out = size_serving(r1, 1.0, 1e-3, 0.05)
    assert out.best is None and out.evaluated == 0
    assert list(out.infeasible_by_reason)[0].startswith("TTFT of one prompt alone")


def test_api_checks_its_numbers(r1):
    with pytest.raises(ScenarioError, match="rate_per_s"):
        twin.plan_serving(r1, float("nan"), 1.0, 0.05)
    assert twin.plan_serving(r1, 1.0, 3.0, 0.05, num_requests=N, layouts=("disaggregated",)).best.num_gpus == 16   # one instance each
    with pytest.raises(ScenarioError, match="layouts"):
        twin.plan_serving(r1, 1.0, 3.0, 0.05, num_requests=N, layouts=("colocated",))
    one = twin.plan_serving(r1, 1.0, 3.0, 0.05, num_requests=N, layouts="co-located")   # a bare string: one layout
    assert one.layouts == ("co-located",) and one.best_disaggregated is None


def test_cli_serving_question_reports_the_split_or_exits_3(tmp_path):
    root = Path(__file__).resolve().parents[2]
    short = ["--set", "serve.input_len=512", "--set", "serve.output_len=64", "--requests", "300"]
    ok = subprocess.run([sys.executable, "-m", "twin.cli.main", "plan", "--rate", "10", "--ttft", "3", "--tpot", "0.05", *short,
                         "--json", str(tmp_path / "s.json"), "--out", str(tmp_path / "s")], capture_output=True, text=True, cwd=root)
    assert ok.returncode == 0, ok.stderr
    best = json.loads((tmp_path / "s.json").read_text())["best"]
    assert best["prefill_gpus"] + best["decode_gpus"] == best["num_gpus"] and "fewest GPUs" in ok.stdout
    assert best["simulated_requests"] == 300 and best["percentile"] == 90 and "P90" in ok.stdout
    assert (tmp_path / "s" / "report.html").is_file()
    assert "[serve]" in (tmp_path / "s.scenario.resolved.toml").read_text()   # beside --json F (none until s22walk)
    no = subprocess.run([sys.executable, "-m", "twin.cli.main", "plan", "--rate", "10", "--ttft", "0.001", "--tpot", "0.05"],
                        capture_output=True, text=True, cwd=root)
    assert no.returncode == 3 and "TTFT of one prompt alone" in no.stderr and "Traceback" not in no.stderr


@pytest.mark.parametrize("quiet", [False, True])
def test_serving_question_shows_its_progress_unless_quiet(quiet, capsys):
    """Each deployment is a request-level simulation (seconds; minutes at --requests 1e6): the
    bisection ran 30 of them over 4 minutes without a word on the terminal (until s20ux)."""
    from twin.cli.main import main
    argv = ["plan", "--rate", "1", "--ttft", "3", "--tpot", "0.05", "--set", "serve.input_len=512",
            "--set", "serve.output_len=64", "--requests", "300", *(["--quiet"] if quiet else [])]
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert ("deployments:" in err) is not quiet
    if not quiet:
        assert "1 prefill + 1 decode instances" in err


def test_steady_requests_span_three_lifetimes(r1):
    assert steady_requests(100.0, 50.75) == 15_225   # 3 x 100 x 50.75
    assert steady_requests(1.0, 50.75) == 2_000       # never fewer than the old default
    # a lifetime: the prompt alone, then 63 tokens at a full instance's step (the TPOT target where shorter)
    from twin.planning.serving import _Deployment
    tight, loose = _Deployment(r1, 0.03), _Deployment(r1, 10.0)
    assert tight.prompt_alone_s + 63 * tight.tpot_alone_s < tight.lifetime_s <= tight.prompt_alone_s + 63 * 0.03
    # a loose target ("any TPOT") does not ask for 10 s tokens' worth of requests: the memory-limit batch's pace
    assert loose.lifetime_s < loose.prompt_alone_s + 63 * 0.2


def test_default_run_fills_the_decode_pool(r1):
    """Until s22walk every deployment ran 2,000 requests whatever the rate: at 500/s (a 1.93 s
    lifetime: a 50 ms prompt, 63 tokens at 30 ms) they arrive in 4 s, under three lifetimes, so the
    decode pool never held its steady load (R1 at 100/s with 1,024-token outputs sized at 80 GPUs
    instead of 176)."""
    check = slo_check(r1, 500.0, 0.5, 0.03, prefill_gpus=8, decode_gpus=8)
    from twin.planning.serving import _Deployment
    assert check.simulated_requests == check.steady_requests == steady_requests(500.0, _Deployment(r1, 0.03).lifetime_s) > 2_000


def test_rate_beyond_what_the_simulation_can_judge_is_refused(r1):
    with pytest.raises(ScenarioError, match=r"rate_per_s: got 1000000.0; allowed: at most [\d.e+]+ requests/s for these targets"):
        twin.plan_serving(r1, 1e6, 0.5, 0.03)


def test_a_short_run_is_flagged_in_the_summary_and_report(r1):
    from reports.plan_report import build_serving_page
    from twin.cli.summary import serving_plan_summary
    out = size_serving(r1, 40.0, 3.0, 0.05, num_requests=N)   # 400 requests, fewer than 2,000
    assert out.best.steady_requests == 2_000
    assert "too few for the steady state (2,000" in serving_plan_summary(out)
    assert "too few for the steady state" in build_serving_page(twin.to_json(out)).markdown()
    full = dataclasses.replace(out, best=dataclasses.replace(out.best, simulated_requests=2_000))
    assert "steady state" not in serving_plan_summary(full)


def test_answer_is_the_brute_force_minimum_over_both_layouts(r1):
    """At 60/s (TTFT 0.5 s, TPOT 30 ms) every deployment of at most 32 GPUs (4 instances of 8)
    simulated: 1-4 co-located instances, and every prefill + decode split of 2-4 instances. The
    search's answer is the fewest GPUs among those that meet both targets (here 1 prefill + 3
    decode: 32 GPUs; co-located needs more than 4 instances), each layout's best in the result."""
    from twin.planning.serving import _check, _Deployment
    rate, ttft, tpot = 60.0, 0.5, 0.03
    dep = _Deployment(r1, tpot)
    grid = [_check(dep, rate, ttft, tpot, 0, k, N, 90.0, "co-located") for k in range(1, 5)]
    grid += [_check(dep, rate, ttft, tpot, p, d, N, 90.0) for p in range(1, 4) for d in range(1, 5 - p)]
    brute = min((c for c in grid if c.meets), key=lambda c: c.num_gpus)
    out = size_serving(r1, rate, ttft, tpot, num_requests=N)
    assert (out.best.num_gpus, out.best.layout) == (brute.num_gpus, brute.layout) == (32, "disaggregated")
    assert (out.best.prefill_gpus, out.best.decode_gpus) == (brute.prefill_gpus, brute.decode_gpus)
    assert out.best is out.best_disaggregated and out.best_colocated.num_gpus > 32


def test_one_colocated_instance_is_the_answer_where_it_meets(r1):
    """At 1/s one instance that prefills and decodes meets the targets: 8 GPUs, not the 16 of one
    prefill and one decode instance that the search answered when it knew only that layout."""
    out = size_serving(r1, 1.0, 3.0, 0.05, num_requests=N)
    assert (out.best.layout, out.best.num_gpus, out.best.prefill_gpus) == ("co-located", 8, 0)
    assert out.best_disaggregated.num_gpus == 16
    from twin.cli.summary import serving_plan_summary
    text = serving_plan_summary(out)
    assert "fewest GPUs            8: 1 co-located instance (" in text and "fewest disaggregated   16: 8 prefill + 8 decode" in text
    # the cost of the answer: its GPUs at the scenario's price, and the simulation's split per token
    price = r1.cluster.resolved().price_usd_per_gpu_hour
    assert out.best.usd_per_hour == pytest.approx(8 * price) and out.best_disaggregated.usd_per_hour == pytest.approx(16 * price)
    # every GPU's cost over the output tokens: 8 x price per hour over the output tokens an hour
    all_gpus = 8 * price / 3600 / out.best.output_tokens_per_s * 1e6
    assert out.best.usd_per_million_output_tokens_all_gpus == pytest.approx(all_gpus)
    assert 0 < out.best.usd_per_million_output_tokens < all_gpus   # the simulation charges prompt time to input
    assert f"cost                   ${8 * price:,.2f} per hour: ${all_gpus:,.2f} per million output tokens (every GPU)" in text


@pytest.mark.parametrize("argv, option", [
    (["--rate", "2", "--ttft", "2", "--tpot", "0.1", "--gpu", "h100"], "--gpu"),
    (["--rate", "2", "--ttft", "2", "--tpot", "0.1", "--tokens", "1e12"], "--tokens"),
    (["--rate", "2", "--ttft", "2", "--tpot", "0.1", "--workers", "2"], "--workers"),
    (["--tokens", "1e12", "--days", "30", "--percentile", "50"], "--percentile"),
    (["--tokens", "1e12", "--days", "30", "--layout", "co-located"], "--layout"),
])
def test_options_of_the_other_question_are_refused(argv, option, capsys):
    """`--rate ... --gpu h100` answered for the scenario's H200s, and `--tokens ... --percentile 50`
    ignored the percentile, without a word (until s22walk)."""
    from twin.cli.main import main
    assert main(["plan", "--quiet", *argv]) == 2
    assert capsys.readouterr().err.startswith(f"error: {option}: got ")


def test_a_trace_scenario_says_its_trace_was_replaced(r1, tmp_path):
    """The question's rate replaces a trace's arrivals and lengths: said in the result and summary
    (until s22walk the trace was dropped without a word)."""
    from twin.cli.summary import serving_plan_summary
    trace = tmp_path / "t.csv"
    trace.write_text("arrival_s,input_len,output_len\n0,100,10\n")
    sc = dataclasses.replace(r1, traffic=dataclasses.replace(r1.traffic, arrival="trace", trace_csv=str(trace)))
    out = size_serving(sc, 1.0, 3.0, 0.05, num_requests=N, layouts=("co-located",))
    assert out.arrival == "poisson" and "trace" in out.arrival_note and str(trace) in out.arrival_note
    assert "note: the scenario's trace" in serving_plan_summary(out)
    assert size_serving(r1, 1.0, 3.0, 0.05, num_requests=N, layouts=("co-located",)).arrival_note == ""


def test_counts_of_one_are_singular():
    from twin.cli.summary import count, plural
    assert (plural(1, "instance"), plural(2_000, "request"), count(2_000)) == ("1 instance", "2,000 requests", "2K")


def test_latencies_without_a_finite_value_print_a_dash():
    """Every output one token: TPOT has no value ("nan / nan / nan µs" until s22walk)."""
    from twin.cli.summary import latencies
    nan = float("nan")
    assert latencies(nan, nan, nan) == "-" and latencies(0.0605, 0.0608) == "60.5 / 60.8 ms"


def test_a_capacity_curve_answers_each_rate_as_its_own_question(r1, tmp_path, capsys):
    """`twin plan --rate 1,10 ...`: one answer a rate (each the single-rate answer), one table, one
    report with the curve, one JSON (s22walk: a planner had to run the command once a rate)."""
    from twin.cli.main import main
    short = ["--set", "serve.input_len=512", "--set", "serve.output_len=64", "--requests", str(N)]
    argv = ["plan", "--quiet", "--rate", "1,10", "--ttft", "3", "--tpot", "0.05", *short]
    assert main([*argv, "--json", str(tmp_path / "c.json")]) == 0   # the report: tests/reports (headless Chromium)
    text = capsys.readouterr().out
    data = json.loads((tmp_path / "c.json").read_text())
    assert [p["rate_per_s"] for p in data["plans"]] == [1.0, 10.0]
    for p in data["plans"]:
        assert f"\n{p['rate_per_s']:>6g}  {p['best']['num_gpus']:>4,}  {p['best']['layout']}" in text
    alone = size_serving(r1, 10.0, 3.0, 0.05, num_requests=N)
    assert (data["plans"][1]["best"]["num_gpus"], data["plans"][1]["best"]["layout"]) == (alone.best.num_gpus, alone.best.layout)
    assert (tmp_path / "c.scenario.resolved.toml").is_file()


@pytest.mark.parametrize("rates, message", [("1,nan", "--rate: got nan"), ("2,2", "--rate: got '2,2'; allowed: at most 64 rates, "
                                                                                   "each once"), (",", "--rate: got ','")])
def test_bad_rate_lists_are_refused(rates, message, capsys):
    from twin.cli.main import main
    assert main(["plan", "--quiet", "--rate", rates, "--ttft", "3", "--tpot", "0.05"]) == 2
    assert capsys.readouterr().err.startswith(f"error: {message}")


def test_capacity_api_checks_every_rate_first(r1):
    with pytest.raises(ScenarioError, match="rates_per_s"):
        twin.serving_capacity(r1, 10.0, 3.0, 0.05)
    with pytest.raises(ScenarioError, match="rate_per_s: got 1000000.0; allowed: at most"):
        twin.serving_capacity(r1, [1.0, 1e6], 3.0, 0.05)   # refused before 1/s is simulated
    out = twin.serving_capacity(r1, [1.0], 3.0, 0.05, num_requests=N, layouts="co-located")
    assert len(out.plans) == 1 and out.plans[0].best.num_gpus == 8


def test_a_pool_that_cannot_keep_up_fails_however_loose_the_targets(r1):
    """TPOT 10 s: one decode instance holds 1,482 requests of 63 tokens at 83 ms a step, 283
    requests/s at most (Little's law); at 400/s its queue grows, but the wait for a decode slot falls
    between a request's first and second tokens and TPOT spreads it over 63 tokens, so it "met" the
    targets while finishing 294/s (until s22walk). Two instances keep up."""
    # prefill 48 GPUs: at 40 the prefill pool itself sits at the rate (s30pace's slowest-board pace of its EP8
    # instances took it from 383.5 to 380.7 served/s there), and this test is about the decode pool
    one = slo_check(r1, 400.0, 3.0, 10.0, prefill_gpus=48, decode_gpus=8)
    two = slo_check(r1, 400.0, 3.0, 10.0, prefill_gpus=48, decode_gpus=16)
    assert one.tpot_s <= 10.0 and one.ttft_s <= 3.0   # the targets alone pass it
    assert (one.meets, one.reason) == (False, "served under the rate: a queue that grows") and one.served_rate_per_s < 300
    assert two.meets and two.served_rate_per_s > 0.95 * 400


def test_a_serving_scenario_without_the_question_names_the_serving_options(capsys):
    """`twin plan r1_serve_h200.toml` said "`twin serve` takes serving scenarios", though `twin plan`
    takes them with --rate, --ttft and --tpot (until s22walk)."""
    from twin.cli.main import main
    scenario = str(Path(__file__).resolve().parents[2] / "scenarios" / "r1_serve_h200.toml")
    assert main(["plan", "--quiet", scenario]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --rate in {scenario}: got '<missing>'; allowed: --rate, --ttft and --tpot")

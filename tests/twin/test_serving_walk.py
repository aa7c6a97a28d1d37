"""s24srvwalk: a capacity planner's walk of the serving side (docs/notes/s24srvwalk.md). Each test failed
before its fix. Runs are short (a few hundred requests, short outputs) to keep CI cheap."""

import dataclasses
import re

import numpy as np
import pytest

import twin
from twin.cli.main import main
from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.core.scenario import SERVING, load_scenario

SHORT = ["--set", "serve.input_len=512", "--set", "serve.output_len=64", "--requests", "300", "--quiet"]


@pytest.fixture(scope="module")
def r1():
    sc = load_scenario(kind=SERVING)
    return dataclasses.replace(sc, serve=dataclasses.replace(sc.serve, input_len=512, output_len=64))


def test_a_model_too_big_for_the_instance_says_by_how_much_and_which_instance_holds_it(capsys):
    """D1: `twin plan --rate ... --set cluster.gpu=h100` said "deepseek-v3 does not fit an instance of 8 h100
    GPUs" with no figure and no way on; a 2M-token prompt on H200 said the same of the weights, which fit."""
    assert main(["plan", "--rate", "2", "--ttft", "2", "--tpot", "0.05", "--set", "cluster.gpu=h100", *SHORT]) == 3
    err = capsys.readouterr().err
    assert re.search(r"weights 79\.7 GiB.*> 79\.2 GiB of NVIDIA H100", err), err
    assert "serve.ep=16 --set serve.tp=16" in err and "Traceback" not in err
    assert main(["plan", "--rate", "2", "--ttft", "2", "--tpot", "0.05", "--set", "serve.input_len=2000000",
                 "--requests", "300", "--quiet"]) == 3
    err = capsys.readouterr().err
    assert re.search(r"kv_cache \d+\.\d GiB", err) and "serve.ep=" not in err, err   # no bigger instance holds one request
    with pytest.raises(InfeasiblePlan, match=r"serve\.ep=16 --set serve\.tp=16"):   # twin serve says the same
        twin.serve(load_scenario(None, ["cluster.gpu='h100'"], kind=SERVING), 300)


def test_the_serving_question_takes_an_instance_size_without_a_cluster_to_match(tmp_path, capsys):
    """D2: `--set serve.ep=16 --set serve.tp=16` (the instance the refusal of --gpu names) was refused as
    "serve.ep: got 16; allowed: a divisor of cluster.num_gpus = 8", a field the question does not read."""
    assert main(["plan", "--rate", "1", "--ttft", "5", "--tpot", "0.1", "--layout", "co-located", "--set",
                 "cluster.gpu=h100", "--set", "serve.ep=16", "--set", "serve.tp=16", *SHORT,
                 "--json", str(tmp_path / "q.json")]) == 0
    out = capsys.readouterr().out
    assert "instances of 16 GPUs" in out and "16: 1 co-located instance" in out
    assert "num_gpus = 16" in (tmp_path / "q.scenario.resolved.toml").read_text()


def test_the_summary_does_not_score_a_run_against_another_gpus_published_figure(capsys):
    """D3: `twin serve --set cluster.gpu=h100 ...` printed "h200.nim_3872  762  3,872  -80.3%": the H200
    figure scored against an H100 run (the HTML report already said 'not compared')."""
    argv = ["serve", "--set", "cluster.gpu=h100", "--set", "serve.ep=16", "--set", "serve.tp=16", "--set",
            "cluster.num_gpus=16", "--set", "serve.input_len=512", "--set", "serve.output_len=64", "--requests", "300", "--quiet"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.startswith("h200.nim_3872"))
    assert "not compared" in row and "%" not in row
    assert "describe deepseek-v3 on another GPU type" in out
    assert main(["serve", "--requests", "900", "--quiet"]) == 0   # two requests a client of 419: a steady window (D15)
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("h200.nim_3872"))
    assert re.search(r"[+-]\d+\.\d%$", row)   # the H200 run of the figure's conditions is still scored


def test_the_analytic_prefill_figure_is_named_a_full_chunk_not_one_prompt(capsys, tmp_path):
    """D4: "one prompt's prefill 1,547 ms" was the forward of a full chunk (8,192 prompt tokens per GPU, 65,536 on
    the instance); one 1K prompt alone takes 59 ms (the serving question's own floor)."""
    assert main(["serve", "--set", "serve.input_len=512", "--set", "serve.output_len=64", "--requests", "300", "--quiet",
                 "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "one prompt's prefill" not in out and "a full prefill chunk (8,192 prompt tokens per GPU)" in out
    page = (tmp_path / "o" / "report.md").read_text()
    assert "one prompt's prefill" not in page and "a full prefill chunk (8,192 prompt tokens per GPU)" in page
    assert "instance(s)" not in page and "1 instance of 8 GPUs" in page


def test_a_price_without_tokens_to_spread_over_prints_a_dash(capsys):
    """D5: a closed loop whose measuring window holds no new prompt printed "input $inf"."""
    assert main(["serve", "--requests", "200", "--set", "serve.output_len=64", "--quiet"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.startswith("$ per million tokens"))
    assert "inf" not in line and "input - (no prompt in the measuring window)" in line


def test_the_serving_answer_counts_nodes_and_the_prefill_decode_ratio(r1, tmp_path):
    """D6: "fewest GPUs 336: 40 prefill + 296 decode" answered a planner asking how many nodes and what PD
    ratio in GPUs alone."""
    from twin.cli.summary import serving_plan_summary
    out = twin.plan_serving(r1, 10.0, 3.0, 0.05, num_requests=300, layouts="disaggregated")
    b = out.best
    text = serving_plan_summary(out)
    p, d = b.prefill_gpus // 8, b.decode_gpus // 8
    assert f"{b.num_gpus}: {b.prefill_gpus} prefill + {b.decode_gpus} decode GPUs ({b.num_gpus // 8} nodes; " in text
    assert f"{p} prefill and {d} decode instance{'s' if d != 1 else ''}, P:D 1:{d / p:.3g})" in text
    from reports.plan_report import write_serving_plan_report
    write_serving_plan_report(out, r1, tmp_path / "rep")
    assert f"{p} + {d} instances, P:D 1:{d / p:.3g}, {b.num_gpus // 8} nodes" in (tmp_path / "rep" / "report.md").read_text()
    col = twin.plan_serving(r1, 2.0, 3.0, 0.1, num_requests=300, layouts="co-located")
    assert "8: 1 co-located instance (1 node; prefill and decode on the same GPUs)" in serving_plan_summary(col)


def test_the_python_api_exports_its_errors_and_reads_numbers_as_the_command_line_does(r1):
    """D7: the API raised twin.core.errors' ScenarioError and InfeasiblePlan, which `twin` did not export;
    plan_serving refused num_requests=np.int64(300), which twin.serve takes; serving_capacity ran a repeated rate
    twice (the command line refuses it) and a generator of rates ended in a TypeError."""
    assert twin.ScenarioError is ScenarioError and twin.InfeasiblePlan is InfeasiblePlan
    assert twin.plan_serving(r1, 2.0, 3.0, 0.1, num_requests=np.int64(300), layouts="co-located").best.num_gpus == 8
    with pytest.raises(ScenarioError, match=r"rates_per_s: got \[1, 1\]; allowed: .*each once"):
        twin.serving_capacity(r1, [1, 1], 3.0, 0.1, num_requests=300)
    curve = twin.serving_capacity(r1, (r for r in (1.0, 2.0)), 3.0, 0.1, num_requests=300, layouts="co-located")
    assert [p.rate_per_s for p in curve.plans] == [1.0, 2.0]


def test_each_output_file_keeps_its_own_resolved_scenario(tmp_path):
    """D8: `--json r1.h200.json` and `--json r1.b200.json` both wrote r1.scenario.resolved.toml (the name cut at its
    first dot), so the H200 result sat beside the B200 run's scenario."""
    for gpu in ("h200", "b200"):
        assert main(["serve", "--set", f"cluster.gpu={gpu}", "--set", "serve.output_len=64", "--requests", "200", "--quiet",
                     "--json", str(tmp_path / f"r1.{gpu}.json")]) == 0
    for gpu in ("h200", "b200"):
        assert f'gpu = "{gpu}"' in (tmp_path / f"r1.{gpu}.scenario.resolved.toml").read_text()
    assert main(["serve", "--set", "serve.output_len=64", "--requests", "200", "--quiet",
                 "--trace", str(tmp_path / "run.json.gz")]) == 0
    assert (tmp_path / "run.scenario.resolved.toml").is_file()   # a gzipped trace: both suffixes dropped, as before


def _trace(path, rows: int) -> str:
    lines = ["arrival_s,input_len,output_len"] + [f"{0.2 * k:.1f},{100 + k % 50},{2 + k % 3}" for k in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def test_a_trace_is_simulated_whole_unless_told_otherwise(tmp_path, capsys, monkeypatch):
    """D9: `twin serve --set traffic.arrival=trace --set traffic.trace_csv=F` with a 5,000-row F simulated its first
    2,000 rows (the default request count of drawn traffic), saying only "2,000 requests simulated (trace)"."""
    trace = _trace(tmp_path / "t.csv", 2_500)
    argv = ["serve", "--set", "traffic.arrival=trace", "--set", f"traffic.trace_csv={trace}", "--quiet", "--json", "-"]
    assert main(argv) == 0
    assert '"simulated_requests": 2500' in capsys.readouterr().out
    assert main([*argv, "--requests", "300"]) == 0   # asked: the first 300
    assert '"simulated_requests": 300' in capsys.readouterr().out
    import twin.serving.workload as workload
    monkeypatch.setattr(workload, "MAX_SIM_REQUESTS", 1_000)   # a trace longer than a simulation takes: refused, not cut
    assert main(argv) == 2
    assert re.search(r"traffic.trace_csv: got '.*t.csv'; allowed: at most 1,000 request rows .*--requests", capsys.readouterr().err)


def test_the_serving_summary_separates_thousands_everywhere(capsys):
    """D10: `twin serve scenarios/r1_serve_h800_decode.toml` said "best concurrency 16384 per instance", and a closed loop of
    a million clients "1516140 preemptions", beside figures with separators."""
    from pathlib import Path
    scenario = Path(__file__).resolve().parents[2] / "scenarios" / "r1_serve_h800_decode.toml"
    assert main(["serve", str(scenario), "--requests", "300", "--set", "serve.output_len=32", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"best concurrency \d{1,3}(,\d{3})+ per instance", out) and re.search(r"; [\d,]+ preemptions?\)", out)
    assert not re.search(r"\d{4,} (per instance|preemption)", out)


def test_an_instance_that_cannot_hold_the_model_still_writes_the_answer_with_its_reason(tmp_path, capsys):
    """D11: the serving question on 8 H100 exited 3 and wrote neither --json F nor --out DIR (README: "exit 3 always
    comes with its reason in --json"), where unreachable targets write both; a capacity curve stopped at its first rate."""
    assert main(["plan", "--rate", "2,4", "--ttft", "2", "--tpot", "0.05", "--set", "cluster.gpu=h100", "--quiet",
                 "--json", str(tmp_path / "c.json"), "--out", str(tmp_path / "c")]) == 3
    import json
    plans = json.loads((tmp_path / "c.json").read_text())["plans"]
    assert [p["best"] for p in plans] == [None, None]
    assert all(re.search(r"weights 79\.7 GiB.*serve\.ep=16", next(iter(p["infeasible_by_reason"]))) for p in plans)
    assert (tmp_path / "c" / "report.html").is_file() and (tmp_path / "c.scenario.resolved.toml").is_file()
    assert main(["plan", "--rate", "2", "--ttft", "2", "--tpot", "0.05", "--set", "cluster.gpu=h100", "--quiet",
                 "--out", str(tmp_path / "one")]) == 3
    assert re.search(r"No deployment .* serves 2 requests/s .*: deepseek-v3 at batch 1 needs .* serve\.ep=16",
                     (tmp_path / "one" / "report.md").read_text())   # the page says why, as the terminal does
    assert "infeasible: no deployment serves 2 requests/s within the targets: deepseek-v3 at batch 1" in capsys.readouterr().err


def test_a_serving_sweep_asks_the_question_at_the_percentile_given_and_its_rows_say_which(tmp_path, capsys):
    """D12: "which KV precision serves 2/s within TTFT P99 3 s and TPOT P99 100 ms on the fewest GPUs?" could not be
    asked: `twin sweep --rate --ttft --tpot` held every point at P90 and had no --percentile (`twin plan --rate` has),
    and its rows (results.csv, --json) did not say for which rate and targets their fewest GPUs were; --ttft's help
    said P90 with --percentile beside it."""
    import json
    from twin.cli.main import build_parser
    from twin.planning.sweep import ServingQuestion, candidate_id
    from pathlib import Path
    r1_file = str(Path(__file__).resolve().parents[2] / "scenarios" / "r1_serve_h200.toml")
    argv = ["sweep", r1_file, "--grid", "serve.kv_precision=bf16,fp8", "--set", "serve.input_len=512", "--set", "serve.output_len=64",
            "--rate", "2", "--ttft", "3", "--tpot", "0.1", "--quiet", "--workers", "1"]
    assert main([*argv, "--percentile", "99", "--out", str(tmp_path / "p99"), "--json", str(tmp_path / "p99.json")]) == 0
    rows = json.loads((tmp_path / "p99.json").read_text())["rows"]
    assert {(r["rate_per_s"], r["ttft_target_s"], r["tpot_target_s"], r["percentile"]) for r in rows} == {(2.0, 3.0, 0.1, 99.0)}
    assert "percentile" in (tmp_path / "p99" / "results.csv").read_text().splitlines()[0]
    assert main([*argv, "--percentile", "50", "--out", str(tmp_path / "p99")]) == 0   # another question: its own rows
    assert "0 resumed" in capsys.readouterr().out
    # a P90 question keeps the ids sweeps journaled before the percentile was part of it (resumable)
    old = json.dumps([{}, [], {"rate_per_s": 2.0, "ttft_s": 3.0, "tpot_s": 0.1}], sort_keys=True, separators=(",", ":"))
    import hashlib
    assert candidate_id({}, (), ServingQuestion(2.0, 3.0, 0.1)) == hashlib.sha1(old.encode()).hexdigest()[:12]
    assert main(["sweep", r1_file, "--grid", "serve.kv_precision=bf16", "--percentile", "99", "--quiet"]) == 2   # no question
    assert "--percentile" in capsys.readouterr().err
    sweep_help = build_parser()._subparsers._group_actions[0].choices["sweep"].format_help()
    assert "--percentile" in sweep_help and "P90 time-to-first-token" not in sweep_help
    api = twin.sweep(r1_file, grid="serve.kv_precision=fp8", overrides=["serve.input_len=512", "serve.output_len=64"],
                     serving_question=(2, 3, 0.1, 99), workers=1)
    assert api.rows[0]["percentile"] == 99.0 and api.rows[0]["status"] == "ok"


def test_a_maximum_throughput_figure_is_not_scored_against_a_run_of_other_traffic(tmp_path, capsys):
    """D13: `twin serve --set traffic.arrival=trace --set traffic.trace_csv=my.csv` (300 requests at 5/s) printed
    "h200.nim_3872  2,717  3,872  -29.8%": NVIDIA's maximum-throughput figure (concurrency MAX, 1K/1K) scored against a
    light load; its note said "the twin's value is the best point of the concurrency sweep", where it is the simulation's."""
    import json
    trace = _trace(tmp_path / "t.csv", 300)
    assert main(["serve", "--set", "traffic.arrival=trace", "--set", f"traffic.trace_csv={trace}", "--quiet",
                 "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("h200.")}
    assert "not compared" in rows["h200.nim_3872"] and re.search(r"[+-]\d+\.\d+%$", rows["h200.weights_fp8"])
    claims = {c["id"]: c for c in json.loads((tmp_path / "r.json").read_text())["claims"]}
    assert claims["h200.nim_3872"]["compared"] is False and claims["h200.weights_fp8"]["compared"] is True
    assert "best point of the concurrency sweep" not in claims["h200.nim_3872"]["conditions_note"]
    assert main(["serve", "--set", "serve.output_len=64", "--requests", "300", "--quiet"]) == 0   # 1K/64: other lengths
    assert "not compared" in next(x for x in capsys.readouterr().out.splitlines() if x.startswith("h200.nim_3872"))


def test_asking_more_requests_than_a_trace_holds_says_so(tmp_path, capsys):
    """D14: `--requests 1000` on a 300-row trace simulated 300 without a word."""
    trace = _trace(tmp_path / "t.csv", 300)
    argv = ["serve", "--set", "traffic.arrival=trace", "--set", f"traffic.trace_csv={trace}", "--quiet"]
    assert main([*argv, "--requests", "1000"]) == 0
    assert "note: 1,000 requests asked; the trace holds 300, all simulated" in capsys.readouterr().out
    assert main([*argv, "--requests", "300"]) == 0
    assert "requests asked" not in capsys.readouterr().out


def test_a_closed_loop_too_short_for_a_steady_window_scores_no_throughput_figure(capsys):
    """D15: `twin serve --requests 400` (400 clients, all starting at once) measured a window of a fraction of a second:
    "goodput 264.62 requests/s" and 3,810 output tok/s scored against NIM's 3,872 at -1.6%, beside a note saying the
    window holds no steady state. The memory figures, which need no window, are still scored."""
    assert main(["serve", "--requests", "400", "--quiet"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines() if line.startswith("h200.")}
    assert "not compared" in rows["h200.nim_3872"] and re.search(r"[+-]\d+\.\d+%$", rows["h200.aws_800GB"])
    goodput = next(x for x in out.splitlines() if x.startswith("goodput"))
    assert "requests/s" not in goodput and "no steady state" in goodput


def test_the_serving_answer_says_its_percentile_even_when_no_deployment_meets(tmp_path):
    """D16: `twin plan --rate 2 --ttft 0.001 --tpot 0.05 --percentile 99 --json F`: F held the targets but not the
    percentile they were held at (only each simulated deployment carried it, and here none was simulated)."""
    import json
    assert main(["plan", "--rate", "2", "--ttft", "0.001", "--tpot", "0.05", "--percentile", "99", "--quiet",
                 "--json", str(tmp_path / "q.json")]) == 3
    assert json.loads((tmp_path / "q.json").read_text())["percentile"] == 99.0


def test_a_prefill_instance_of_its_own_size_is_named_in_the_answer(r1):
    """D17: with serve.prefill_ep = 16 the answer was headed "instances of 8 GPUs" (the decode instance's) above a split
    of 16-GPU prefill instances."""
    from twin.cli.summary import serving_plan_summary
    sc = dataclasses.replace(r1, serve=dataclasses.replace(r1.serve, prefill_ep=16))
    text = serving_plan_summary(twin.plan_serving(sc, 2.0, 3.0, 0.1, num_requests=300, layouts="disaggregated"))
    assert "(decode instances of 8 GPUs, prefill instances of 16;" in text and "1 prefill and 1 decode instance," in text


def test_the_serving_question_sizes_for_a_traces_lengths(r1, tmp_path):
    """D18: "how many GPUs serve my traffic (a trace CSV) at 4 requests/s?": the question replaced the trace's arrivals
    by Poisson arrivals at the rate (it must: the rate is the question) and also its lengths by serve.input_len /
    output_len, so a trace of 2,000-token prompts was sized for the scenario's 512. Now its lengths are kept: a trace
    of constant lengths answers exactly as drawn traffic of those lengths does."""
    from twin.planning.serving import size_serving
    rows = ["arrival_s,input_len,output_len"] + [f"{0.5 * k},2000,100" for k in range(50)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    traced = dataclasses.replace(r1, traffic=dataclasses.replace(r1.traffic, arrival="trace", trace_csv=str(tmp_path / "t.csv")))
    drawn = dataclasses.replace(r1, serve=dataclasses.replace(r1.serve, input_len=2000, output_len=100))
    a = size_serving(traced, 4.0, 3.0, 0.05, num_requests=300, layouts=("co-located",))
    b = size_serving(drawn, 4.0, 3.0, 0.05, num_requests=300, layouts=("co-located",))
    assert [(c.num_gpus, c.ttft_s, c.tpot_s, c.meets) for c in a.checks] == [(c.num_gpus, c.ttft_s, c.tpot_s, c.meets) for c in b.checks]
    assert "lengths kept" in a.arrival_note and "mean ISL 2,000, OSL 100" in a.arrival_note


def test_a_deployment_keeping_up_with_spread_output_lengths_is_not_called_a_growing_queue():
    """D19: with output lengths spread (uniform, CV 0.5, mean 1,024) R1 at 20/s needed 136 GPUs, where fixed lengths
    need 40: 64 co-located GPUs met TTFT (105 ms P90) and TPOT (45.7 ms) yet failed "served under the rate: a queue that
    grows" (18.3/s against 18.6). The served rate is read between the times 10% and 90% of requests finished; with
    lifetimes spread, that window reaches into the fill and the drain, where fewer finish, even in a deployment that
    keeps up. The rate is now held to what the same window gives a deployment that serves every request at its own
    length's pace (its arrivals shifted by its ideal lifetime), so fixed lengths are judged exactly as before."""
    from twin.planning.serving import COLOCATED, _check, _Deployment, check_steady_load, lifetime_spread_frac
    sc = load_scenario(kind=SERVING)
    spread = dataclasses.replace(sc, traffic=dataclasses.replace(sc.traffic, output_dist="uniform", output_cv=0.5))
    dep = _Deployment(spread, 0.05)
    check = _check(dep, 20.0, 2.0, 0.05, 0, 8, check_steady_load(spread, 20.0, 0.05, dep=dep), 90.0, COLOCATED)
    assert check.ttft_s < 0.2 and check.tpot_s < 0.05 and check.meets, check.reason
    arrival = np.linspace(0.0, 100.0, 1001)
    assert lifetime_spread_frac(arrival, np.full(1001, 40.0)) == 1.0   # fixed lengths: no correction at all
    # later arrivals living longer (10 s to 70 s over 100 s of arrivals) finish 1.6 times as spread: 1 / 1.6
    assert lifetime_spread_frac(arrival, np.linspace(10.0, 70.0, 1001)) == pytest.approx(1 / 1.6, rel=1e-3)

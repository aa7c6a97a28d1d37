"""s26walk: a capacity planner's walk through planning at scale (docs/notes/s26walk.md). Each test failed
before its fix; each runs in a few CPU-seconds."""

import json
import re

import pytest

from fake_step import fake_step  # tests/ is on sys.path (rootdir conftest)
from twin.cli import summary
from twin.cli.main import main
from twin.core.scenario import load_scenario
from twin.training.replay.run import replay

SHORT = ["--set", "serve.input_len=512", "--set", "serve.output_len=64", "--requests", "300", "--quiet"]


def test_a_target_below_one_request_alone_is_named_with_its_own_value(capsys, tmp_path):
    """D1: `twin plan --rate 10 --ttft 0.001 --tpot 0.03` said "TTFT of one prompt alone (0.0592 s) over target (1)":
    the 1 was the count of the reason, read as the target (1 s, which 0.0592 s is not over)."""
    assert main(["plan", "--rate", "10", "--ttft", "0.001", "--tpot", "0.05", *SHORT,
                 "--json", str(tmp_path / "q.json"), "--out", str(tmp_path / "q")]) == 3
    cap = capsys.readouterr()
    text = cap.out + cap.err + (tmp_path / "q" / "report.md").read_text()
    assert re.search(r"TTFT of one prompt alone \(\d+(\.\d+)? ms\) over the target 1 ms", text), text
    assert "over target (1)" not in text and "target (1)" not in text
    assert main(["plan", "--rate", "10", "--ttft", "2", "--tpot", "0.0001", *SHORT]) == 3
    text = "".join(capsys.readouterr())
    assert re.search(r"TPOT of one request alone \(\d+(\.\d+)? ms\) over the target 0\.1 ms", text), text


def test_the_serving_trace_names_the_model_beside_the_scenario(tmp_path):
    """D2: `twin serve mixtral.toml --trace F` wrote otherData {"scenario": ...} alone, where `twin trace` names the
    model too (since the lead's 1eaff166): a scenario run with `--set model.name=...` keeps its own name."""
    f = tmp_path / "t.json"
    assert main(["serve", "--set", "model.name=mixtral-8x7b", "--set", "serve.tp=2", "--set", "serve.ep=2",
                 "--set", "serve.weight_precision=bf16", *SHORT, "--trace", str(f)]) == 0
    other = json.loads(f.read_text())["otherData"]
    assert other["scenario"] == "r1-serve-h200" and other["model"] == "mixtral-8x7b"


LLAMA_FILE = """name = "llama8b-256"
[model]
name = "llama3-8b"
[cluster]
gpu = "h100"
num_gpus = 256
[plan]
tp = 2
pp = 4
ep = 1
schedule = "1f1b"
gemm_precision = "bf16"
[workload]
seq_len = 8192
global_batch_seqs = 512
"""


@pytest.fixture(scope="module")
def llama_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("walk") / "llama8b.toml"
    path.write_text(LLAMA_FILE)
    return path


def test_a_replay_of_a_scenario_without_stages_says_whose_run_it_replays(llama_file, capsys):
    """D3: `twin replay llama70b.toml` (a scenario with no [[run.stages]]) replayed DeepSeek-V3's published run
    on the llama (14.8T tokens at 4K, context extension to 32K and 128K, SFT, GRPO RL) without a word: the
    headline read "llama70b: 14.9T tokens on 2,048 H100 ... Context extension 90.8K"."""
    sc = load_scenario(str(llama_file))
    res = replay(sc, step_fn=fake_step, uncertainty=False, sweep=False)
    text = summary.replay_summary(sc, res, None)
    assert re.search(r"stages: DeepSeek-V3's published run .*the scenario names no \[\[run\.stages\]\]", text), text
    assert any("[[run.stages]]" in n for n in res.gap_drivers)
    own = load_scenario(str(llama_file), ["run.stages=[{name='pretrain', tokens=1e11, seq_len=8192, global_batch_seqs=512}]"])
    res = replay(own, step_fn=fake_step, uncertainty=False, sweep=False)
    assert "[[run.stages]]" not in summary.replay_summary(own, res, None)
    v3 = load_scenario()   # DeepSeek-V3's own run: its stages are the scenario's
    res = replay(v3, step_fn=fake_step, uncertainty=False, sweep=False)
    assert "[[run.stages]]" not in summary.replay_summary(v3, res, None)



def test_the_cost_against_cluster_size_is_drawn_around_the_scenarios_own_cluster(llama_file):
    """D4: a 256-GPU scenario's replay drew its cost against cluster size at 2,048, 3,072, 4,096 and 8,192 GPUs
    (DeepSeek-V3's sizes, cost.size_sweep_gpus' default), never at its own 256."""
    sc = load_scenario(str(llama_file), ["run.stages=[{name='pretrain', tokens=1e11, seq_len=8192, global_batch_seqs=512}]"])
    res = replay(sc, step_fn=fake_step, uncertainty=False)
    assert [p.num_gpus for p in res.size_sweep] == [256, 384, 512, 1024]
    own = next(p for p in res.size_sweep if p.num_gpus == 256)
    assert own.gpu_hours == pytest.approx(res.total_gpu_hours)
    v3 = replay(load_scenario(), step_fn=fake_step, uncertainty=False)   # the embedded V3 scenario names its sizes
    assert [p.num_gpus for p in v3.size_sweep] == [2048, 3072, 4096, 8192]


def test_a_serving_question_sweep_over_gpu_types_ranks_its_points_by_cost():
    """D5: `twin sweep mixtral.toml --grid cluster.gpu=h100,h200 --rate 50 --ttft 1 --tpot 0.03`: "Best points"
    ranked by GPU count put 12 H200 ($42.0 an hour) above 14 H100 ($41.3), the cost shown as a bare "42.0"."""
    from reports.sweep_report import build_page
    rows = [{"candidate_id": c, "cluster.gpu": g, "status": "ok", "reason": "", "num_gpus": n, "layout": "disaggregated",
             "usd_per_hour": usd, "usd_per_million_output_tokens_all_gpus": per_m}
            for c, g, n, usd, per_m in (("a", "h200", 12, 42.0, 0.477), ("b", "h100", 14, 41.3, 0.489),
                                        ("c", "h100", 16, 47.2, 0.55))]
    page = build_page({"num_points": 3, "mode": "grid", "num_ok": 3, "num_invalid": 0, "num_infeasible": 0, "num_error": 0,
                       "evaluated_now": 3, "axes": {"cluster.gpu": ["h100", "h200"]}, "rows": rows}).markdown()
    best = [line for line in page.splitlines() if re.match(r"\| [abc] \|", line)]
    assert [line[2] for line in best] == ["b", "a", "c"], best
    assert "| b | h100 | 14 | disaggregated | $41.3 | $0.489 |" in page, page


def test_a_plan_search_without_an_answer_writes_its_reason_in_the_json(llama_file, tmp_path, capsys):
    """D6: `twin plan llama70b.toml --tokens 2e11 --days 60 --budget 10 --json F` exited 3 with its reason on stderr
    alone: F held "best": null and "infeasible_by_reason": {} (every candidate ran; none met the budget), where the
    README says exit 3 always comes with its reason in --json (the serving question's F has it since s24srvwalk)."""
    f = tmp_path / "p.json"
    assert main(["plan", str(llama_file), "--tokens", "2e11", "--days", "60", "--budget", "10", "--tp", "2",
                 "--pp", "4", "--quiet", "--json", str(f)]) == 3
    err = capsys.readouterr().err
    data = json.loads(f.read_text())
    assert data["best"] is None and data["no_answer"].startswith("none of the 1 simulated plans trains 200B tokens "
                                                                 "within 60 days for at most $10; the fastest takes")
    assert f"infeasible: {data['no_answer']}" in err
    assert main(["plan", str(llama_file), "--tokens", "2e11", "--days", "3000", "--tp", "2", "--pp", "4", "--quiet",
                 "--json", str(f)]) == 0
    assert json.loads(f.read_text())["no_answer"] == ""
    assert main(["plan", str(llama_file), "--tokens", "2e11", "--days", "60", "--tp", "3", "--pp", "4", "--quiet",
                 "--json", str(f)]) == 3   # no candidate can run: the reason by kind, in F as on stderr
    err = capsys.readouterr().err
    assert f"infeasible: {json.loads(f.read_text())['no_answer']}" in err and "none of the 1 candidates can run" in err


def test_a_search_of_one_candidate_says_one_candidate_and_one_plan(llama_file, tmp_path, capsys):
    """D7: `twin plan ... --tp 8 --pp 4` (one candidate): "screen step time vs simulator over 1 plans" on the
    terminal and "1 candidates over 16 axes" atop the report."""
    assert main(["plan", str(llama_file), "--tokens", "2e11", "--days", "3000", "--tp", "2", "--pp", "4", "--quiet",
                 "--out", str(tmp_path / "p")]) == 0
    out = capsys.readouterr().out
    md = (tmp_path / "p" / "report.md").read_text()
    assert "over 1 plan:" in out and "1 plans" not in out
    assert "1 candidate over 16 axes" in md and "1 candidates" not in md and "1 plans" not in md


@pytest.mark.parametrize("argv, expected", [
    (["--tokens", "-1", "--days", "30"], "error: --tokens: got -1.0; allowed: number > 0"),
    (["--tokens", "1e12", "--days", "inf"], "error: --days: got inf; allowed: finite number > 0"),
    (["--tokens", "1e12", "--days", "30", "--budget", "-5"], "error: --budget: got -5.0; allowed: number > 0"),
    (["--tokens", "1e12", "--days", "30", "--num-gpus", "0"], "error: --num-gpus: got 0; allowed: integer >= 1"),
    (["--tokens", "1e12", "--days", "30", "--vary", "recompute=bogus"], "error: --vary recompute: got 'bogus'; allowed: one of"),
    (["--tokens", "1e12", "--days", "30", "--gpu", "h999"], "error: --gpu: got ['h999']; allowed: one of b200"),
])
def test_a_bad_plan_option_is_named_as_typed(llama_file, argv, expected, capsys):
    """D8: `twin plan llama.toml --tokens -1 --days 30` said "search.tokens in llama.toml: got -1.0": the file named as
    the value's source, which holds no [search] table; the option typed was --tokens."""
    assert main(["plan", str(llama_file), *argv, "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(expected) and len(err.splitlines()) == 1, err


def test_a_burst_of_bursty_arrivals_is_not_read_as_the_mean_rate(capsys):
    """D9: `twin serve mixtral.toml --set traffic.arrival=gamma --set traffic.arrival_cv=100` (10/s): the 2,000 requests
    drawn came in ~2 s, not the 200 s of the mean rate, and the headline read "goodput 55.28 requests/s" (5x the
    offered rate) with no note: the run-too-short note judged the nominal span (requests / rate) alone."""
    argv = ["serve", "--set", "model.name=mixtral-8x7b", "--set", "serve.tp=2", "--set", "serve.ep=2", "--set",
            "serve.weight_precision=bf16", "--set", "serve.input_len=512", "--set", "serve.output_len=64", "--set",
            "traffic.arrival=gamma", "--set", "traffic.rate_per_s=10", "--requests", "300", "--quiet"]
    assert main([*argv, "--set", "traffic.arrival_cv=100"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"note: the 300 gamma arrivals drawn \(CV 100\) came within .+, where the mean rate of 10/s spreads "
                     r"them over 30\.0+ s: the figures are a burst's", out), out
    assert main([*argv, "--set", "traffic.arrival_cv=1"]) == 0   # Poisson-like: 300 over ~30 s, lifetimes well under
    assert "note:" not in capsys.readouterr().out


def test_a_serving_answer_sized_for_a_burst_says_so(capsys, tmp_path):
    """D10: `twin plan mixtral.toml --rate 10 --ttft 1 --tpot 0.03 --set traffic.arrival=gamma --set traffic.arrival_cv=100`
    answered 32 GPUs (4 for Poisson arrivals at 10/s) with "served 88.9/s in the steady window" and no word that the
    2,000 arrivals drawn came as one burst: the deployment was sized for the burst, whose size is --requests'."""
    argv = ["plan", "--rate", "10", "--ttft", "2", "--tpot", "0.05", "--set", "traffic.arrival=gamma", "--layout", "co-located",
            *SHORT]
    assert main([*argv, "--set", "traffic.arrival_cv=100", "--out", str(tmp_path / "q")]) == 0
    out = capsys.readouterr().out
    assert "The 300 gamma arrivals came faster than the rate asked" in (tmp_path / "q" / "report.md").read_text()
    assert re.search(r"note: the 300 gamma arrivals came faster than the rate asked \(10/s; [\d.]+K?/s in the steady window\): "
                     r"the deployment is sized for that burst", out), out
    assert main([*argv, "--set", "traffic.arrival_cv=1"]) == 0
    assert "burst" not in capsys.readouterr().out


def test_a_cost_without_tokens_to_spread_it_over_prints_a_dash(tmp_path, capsys):
    """D11: the serving question's cost line read "split by work $12.74 output, $inf input" where no prompt was
    computed in the steady window (`twin serve` prints "-" there since s24srvwalk)."""
    argv = ["plan", "--rate", "10", "--ttft", "2", "--tpot", "0.05", "--set", "traffic.arrival=gamma", "--set",
            "traffic.arrival_cv=100", "--layout", "co-located", *SHORT, "--out", str(tmp_path / "q")]
    assert main(argv) == 0
    text = capsys.readouterr().out + (tmp_path / "q" / "report.md").read_text()
    assert "inf" not in text.replace("infeasible", "").replace("info", ""), text
    assert re.search(r"split by work \$[\d.]+ output, - input", text), text


def test_a_dask_address_where_another_service_answers_is_refused_as_input(llama_file, tmp_path, capsys):
    """D12: `twin sweep ... --dask tcp://HOST:8786` where something other than a Dask scheduler answered (here an HTTP
    server) ended in a traceback: numpy's "Unable to allocate 3.07 EiB" (Dask read the reply's first bytes as a frame
    length, a MemoryError the refusal of an unreachable scheduler did not catch)."""
    import socket
    import threading

    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)

    def answer():
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n" * 8)
            conn.close()

    threading.Thread(target=answer, daemon=True).start()
    address = f"tcp://127.0.0.1:{srv.getsockname()[1]}"
    try:
        code = main(["sweep", str(llama_file), "--grid", "plan.tp=2,4", "--out", str(tmp_path / "sw"), "--quiet",
                     "--dask", address])
    finally:
        srv.close()
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err, err
    assert err.startswith(f"error: --dask: got '{address}'; allowed: 'local' or the address of a running Dask scheduler"), err
    assert "(the service there does not speak Dask's protocol)" in err or "Error: " in err, err


def test_a_dense_catalog_model_takes_another_depth(llama_file, capsys):
    """D13: `twin step llama70b.toml --set model.num_layers=40` was refused ("model.num_dense_layers in
    twin/data/models.toml: got 80; allowed: <= num_layers = 40") and 100 layers asked for routed experts: the
    catalog's dense model names num_dense_layers = num_layers, which did not follow a new depth."""
    for layers in (40, 100):
        sc = load_scenario(str(llama_file), [f"model.num_layers={layers}"])
        assert (sc.model.num_layers, sc.model.num_dense_layers, sc.model.num_routed_experts) == (layers, layers, 0)
    assert main(["step", str(llama_file), "--set", "model.num_layers=40"]) == 0
    assert "step time" in capsys.readouterr().out
    v3 = load_scenario(None, ["model.num_layers=12", "plan.pp=4"])   # an MoE model keeps its dense first blocks
    assert (v3.model.num_layers, v3.model.num_dense_layers) == (12, 3)
    own = load_scenario(str(llama_file), ["model.num_layers=40", "model.num_dense_layers=40"])   # said outright: as said
    assert own.model.num_dense_layers == 40


def test_a_budget_no_plan_meets_names_the_cheapest_plan_within_the_deadline(llama_file, tmp_path, capsys):
    """s27walk round 2: `twin plan llama8b.toml --days 3000 --budget 10` (a plan meets the deadline, none the
    budget) named only the fastest plan; a budget question wants next what the deadline costs at the least."""
    f = tmp_path / "p.json"
    assert main(["plan", str(llama_file), "--tokens", "2e11", "--days", "3000", "--budget", "10", "--tp", "2",
                 "--pp", "2,4", "--workers", "1", "--json", str(f)]) == 3
    out, err = capsys.readouterr()
    data = json.loads(f.read_text())
    inside = [r for r in data["rows"] if r["status"] == "simulated" and r["wall_days_goodput"] <= 3000]
    cheapest = min(inside, key=lambda r: r["cost_usd_goodput"])
    said = f"the cheapest within 3000 days costs ${cheapest['cost_usd_goodput']:,.0f} with failures ({cheapest['label']};"
    assert said in data["no_answer"] and f"infeasible: {data['no_answer']}" in err, data["no_answer"]
    assert f"the cheapest within 3000 days: {cheapest['label']}, " in out, out
    assert main(["plan", str(llama_file), "--tokens", "2e11", "--days", "1", "--budget", "10", "--tp", "2", "--pp", "4",
                 "--quiet", "--workers", "1", "--json", str(f)]) == 3
    assert "; none is within 1 day at any cost" in json.loads(f.read_text())["no_answer"]

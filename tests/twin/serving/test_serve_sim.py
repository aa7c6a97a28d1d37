"""The request-level serving simulation: the regimes a real engine shows, conservation, Little's law,
KV admission, the deployment knobs, traces and bad input."""

import dataclasses
import json
import math
import re

from pathlib import Path

import numpy as np
import pytest

from twin.cli.main import main as twin_main
from twin.core.chrome_trace import perfetto_drops
from twin.core.errors import InfeasiblePlan, ScenarioError
from twin.core.scenario import SERVING, load_scenario
from twin.serving.iteration import prefill_forward
from twin.serving.simulate import simulate
from twin.serving.timing import IterationCosts
from twin.serving.workload import from_records

JSON_KEYS = ("output_tokens_per_s", "input_tokens_per_s", "ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "tpot_p99_s",
             "goodput_requests_per_s", "memory_per_gpu_bytes", "usd_per_million_output_tokens", "simulated_requests")


def h200(*overrides):
    """R1 on one HGX H200 (the default serving scenario) with overrides."""
    return load_scenario(None, list(overrides), SERVING)


def closed(concurrency, n, isl=1024, osl=1024, *extra):
    return h200('traffic.arrival="closed"', f"traffic.concurrency={concurrency}", f"traffic.num_requests={n}",
                f"serve.input_len={isl}", f"serve.output_len={osl}", *extra)


def test_low_concurrency_ttft_is_one_prompts_prefill_not_a_chunk():
    sc = closed(1, 4, 1024, 16)
    r = simulate(sc)
    costs = IterationCosts(sc.model, sc.gpu, sc.serve)
    one_prompt_s = costs.iteration_s(0, 0.0, 1024, 1024)[0]
    chunk = prefill_forward(sc.model, sc.gpu, sc.serve)["forward_s"]      # 8,192 tokens per GPU
    # one request at a time: nothing queues, the prompt is the whole iteration
    assert r.ttft_s.p50 == pytest.approx(one_prompt_s, rel=1e-9)
    assert r.ttft_s.max == pytest.approx(one_prompt_s, rel=1e-9)
    assert r.ttft_s.p50 < 0.2 * chunk


def test_ttft_grows_with_queueing_under_load():
    p50 = []
    for rate in (0.5, 5.0, 100.0):
        sc = h200('traffic.arrival="poisson"', f"traffic.rate_per_s={rate}", "traffic.num_requests=1500",
                  "serve.output_len=256")
        r = simulate(sc)
        p50.append(r.ttft_s.p50)
        last = r
    assert p50[0] < p50[1] < p50[2]
    # 100 requests/s is several times what one node serves: once the KV cache is full, requests wait
    # in the queue, and the wait grows to tens of seconds
    assert last.requests_per_s < 100.0 / 2
    assert last.ttft_s.p90 > 10.0


def _decode_step_s(sc):
    """A decode-only step with every client's request decoding, at the mean context."""
    costs = IterationCosts(sc.model, sc.gpu, sc.serve)
    return costs.decode_s(sc.traffic.concurrency, sc.serve.input_len + sc.serve.output_len / 2)


def test_colocated_tpot_rises_with_concurrency_at_long_inputs_disaggregated_does_not():
    long_in = ("serve.input_len=8192", "serve.output_len=128")
    colo, disagg = {}, {}
    for c in (2, 32):
        base = [f"traffic.concurrency={c}", f"traffic.num_requests={3 * c}", *long_in]
        sc = h200(*base)
        colo[c] = (simulate(sc).tpot_s.p50, _decode_step_s(sc))
        sd = h200(*base, "cluster.num_gpus=16", "serve.disaggregated=true", "serve.prefill_instances=1")
        disagg[c] = (simulate(sd).tpot_s.p50, _decode_step_s(sd))
    # co-located: 8K-token prompts interleave with decoding, the more so the more requests there are
    assert colo[32][0] > 1.5 * colo[32][1]
    assert colo[32][0] / colo[2][0] > 1.3 * disagg[32][0] / disagg[2][0]
    # disaggregated: decode iterations carry decode work only, never slower than a step of the whole
    # concurrency decoding at once
    for c in (2, 32):
        assert disagg[c][0] <= disagg[c][1] * 1.01


def test_conservation_every_request_finishes_and_tokens_add_up():
    sc = h200('traffic.arrival="poisson"', "traffic.rate_per_s=4", "traffic.num_requests=300",
              'traffic.input_dist="lognormal"', 'traffic.output_dist="lognormal"', "serve.output_len=200")
    r = simulate(sc)
    req = r.requests
    assert np.isfinite(req["finish_s"]).all() and np.isfinite(req["first_token_s"]).all()
    assert (req["first_token_s"] >= req["arrival_s"]).all() and (req["finish_s"] >= req["first_token_s"]).all()
    assert r.preemptions == 0
    # one token per prompt, one per decode step per request: exactly the requested outputs
    assert r.first_tokens + r.decode_token_steps == pytest.approx(req["output_len"].sum(), rel=1e-12)
    assert r.output_tokens_total == req["output_len"].sum()


def test_littles_law_on_a_steady_run():
    sc = h200('traffic.arrival="poisson"', "traffic.rate_per_s=3", "traffic.num_requests=400", "serve.output_len=128")
    r = simulate(sc)
    req = r.requests
    lam = len(req["arrival_s"]) / r.makespan_s
    w = float(np.mean(req["finish_s"] - req["arrival_s"]))
    # the engine's own time-average of requests in the system against arrivals x mean time in it
    assert r.mean_in_system == pytest.approx(lam * w, rel=1e-6)
    assert r.mean_in_system > 1.0


@pytest.mark.parametrize("admission, mtp", [("optimistic", 0), ("reserve", 0), ("optimistic", 1), ("reserve", 1)])
def test_kv_admission_never_exceeds_memory(admission, mtp):
    sc = closed(64, 160, 1024, 1024, "serve.kv_memory_frac=0.02", f'serve.kv_admission="{admission}"',
                f"serve.mtp_draft_tokens={mtp}")
    r = simulate(sc)
    assert r.kv_peak_tokens_per_instance <= r.kv_capacity_tokens_per_instance
    assert r.kv_peak_tokens_per_instance > 0.5 * r.kv_capacity_tokens_per_instance    # the cache was the limit
    if admission == "optimistic":
        assert r.preemptions > 0            # it admits on prompts alone, so decoding fills the cache
    else:
        assert r.preemptions == 0
    assert np.isfinite(r.requests["finish_s"]).all()


def test_a_request_larger_than_the_cache_is_infeasible():
    with pytest.raises(InfeasiblePlan, match="does not fit the KV cache"):
        simulate(closed(1, 2, 100_000, 100_000, "serve.kv_memory_frac=0.01"))


def test_mtp_cuda_graphs_and_two_batch_overlap_move_tpot_the_right_way():
    base = ("traffic.concurrency=8", "traffic.num_requests=16", "serve.output_len=256")
    plain = simulate(h200(*base)).tpot_s.p50
    mtp = simulate(h200(*base, "serve.mtp_draft_tokens=1", "serve.mtp_acceptance_frac=0.85")).tpot_s.p50
    eager = simulate(h200(*base, "serve.cuda_graphs=false")).tpot_s.p50
    tbo_always = simulate(h200(*base, "serve.num_microbatches=2", 'serve.microbatch_policy="always"')).tpot_s.p50
    tbo_auto = simulate(h200(*base, "serve.num_microbatches=2", 'serve.microbatch_policy="auto"')).tpot_s.p50
    assert mtp < plain                      # 1.85 tokens per step for a step a little longer
    assert eager > plain                    # kernel launches are no longer hidden
    assert tbo_always > plain               # two micro-batches re-read the weights at a small batch
    assert tbo_auto == pytest.approx(plain, rel=1e-9)   # auto splits only where it pays: not here


def test_fp8_kv_holds_more_tokens_and_dp_attention_more_requests():
    bf16 = simulate(closed(4, 4, 512, 8))
    fp8 = simulate(closed(4, 4, 512, 8, 'serve.kv_precision="fp8"'))
    dp = simulate(closed(4, 4, 512, 8, "serve.tp=1", "serve.dp_attention=true"))
    assert fp8.kv_capacity_tokens_per_instance > 1.5 * bf16.kv_capacity_tokens_per_instance
    # DP attention keeps each request's latent on one GPU instead of all eight (but replicates dense weights)
    assert dp.kv_capacity_tokens_per_instance > 2 * bf16.kv_capacity_tokens_per_instance


def test_tp16_across_two_nodes_runs_and_pays_for_the_cross_node_all_reduce():
    tp8 = simulate(closed(4, 8, 512, 64, "cluster.num_gpus=16"))
    tp16 = simulate(closed(4, 8, 512, 64, "cluster.num_gpus=16", "serve.tp=16", "serve.ep=16"))
    assert tp16.decode_instances == 1 and tp8.decode_instances == 2
    assert math.isfinite(tp16.tpot_s.p50) and tp16.tpot_s.p50 > 0


def test_shared_prefixes_and_hit_rate_cut_prefill_time():
    base = ('traffic.arrival="poisson"', "traffic.rate_per_s=1", "traffic.num_requests=40", "serve.input_len=4096",
            "serve.output_len=8")
    cold = simulate(h200(*base))
    hit = simulate(h200(*base, "traffic.prefix_hit_frac=0.5"))
    shared = simulate(h200(*base, "traffic.shared_prefix_tokens=3072", "traffic.prefix_groups=2"))
    assert hit.ttft_s.p50 < 0.75 * cold.ttft_s.p50
    assert shared.ttft_s.p50 < 0.5 * cold.ttft_s.p50
    assert hit.input_tokens_per_s > hit.input_computed_tokens_per_s


def test_replays_a_recorded_load_run():
    sc = h200()
    reqs = from_records([0.0, 0.5, 0.5, 2.0], [100, 2000, 300, 50], [10, 20, 5, 1])
    r = simulate(sc, requests=reqs)
    assert r.simulated_requests == 4
    assert np.array_equal(r.requests["arrival_s"], [0.0, 0.5, 0.5, 2.0])
    assert (r.requests["finish_s"] > r.requests["arrival_s"]).all()


def test_trace_csv_arrivals(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("arrival_s,input_len,output_len\n0.0,128,4\n0.1,256,8\n5.0,64,2\n")
    r = simulate(h200('traffic.arrival="trace"', f'traffic.trace_csv="{path}"'))
    assert r.simulated_requests == 3 and r.output_tokens_total == 14


def test_a_relative_trace_is_read_beside_its_scenario_file(tmp_path, monkeypatch):
    """traffic.trace_csv = "trace.csv" in sub/x.toml was read from the working directory until s21walk
    (`twin serve sub/x.toml` refused it); --set still names a path from the working directory, and the
    resolved scenario loads from anywhere."""
    sub = tmp_path / "sub"
    sub.mkdir()
    (sub / "trace.csv").write_text("arrival_s,input_len,output_len\n0.0,128,4\n0.1,256,8\n")
    (sub / "x.toml").write_text('name = "x"\n[model]\nname = "tiny"\n[cluster]\ngpu = "h200"\nnum_gpus = 8\n'
                                '[serve]\ntp = 1\nep = 8\ndp_attention = true\n'
                                '[traffic]\narrival = "trace"\ntrace_csv = "trace.csv"\n')
    monkeypatch.chdir(tmp_path)
    sc = load_scenario("sub/x.toml", [], SERVING)
    assert Path(sc.traffic.trace_csv) == sub / "trace.csv" and simulate(sc).simulated_requests == 2
    assert load_scenario("sub/x.toml", ['traffic.trace_csv="sub/trace.csv"'], SERVING).traffic.trace_csv == "sub/trace.csv"
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert simulate(load_scenario(sub / "x.toml", [], SERVING)).simulated_requests == 2


def test_bad_trace_names_the_field(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("arrival_s,input_len\n0,12\n")
    with pytest.raises(ScenarioError, match=r"traffic\.trace_csv.*missing output_len"):
        simulate(h200('traffic.arrival="trace"', f'traffic.trace_csv="{path}"'))


@pytest.mark.parametrize("content, pattern", [
    (bytes(range(128, 256)) * 2, r"allowed: a UTF-8 CSV file with columns arrival_s"),
    (b"arrival_s,input_len,output_len\n0," + b"1" * 200_000 + b",5\n", r"allowed: a well-formed CSV file \(field larger than"),
])
def test_an_unreadable_trace_names_the_field(tmp_path, content, pattern):
    """Binary bytes in traffic.trace_csv ended in a UnicodeDecodeError traceback (until s19ux)."""
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(ScenarioError, match=r"^traffic\.trace_csv: got .*bad.csv'; " + pattern):
        simulate(h200('traffic.arrival="trace"', f'traffic.trace_csv="{path}"'))


@pytest.mark.parametrize("argv, pattern", [
    (["--set", 'traffic.arrival="sometimes"'], r"traffic\.arrival.*'poisson'"),
    (["--set", "traffic.rate_per_s=-1"], r"traffic\.rate_per_s.*got -1"),
    (["--set", 'traffic.arrival="trace"'], r"traffic\.trace_csv"),
    (["--set", "traffic.prefix_hit_frac=1.5"], r"traffic\.prefix_hit_frac.*1\.5"),
    (["--requests", "0"], r"--requests.*got 0"),
    (["--set", "serve.prefill_instances=1"], r"serve\.prefill_instances.*disaggregated"),
    (["--set", "serve.moe_tp=3"], r"serve\.moe_tp.*divisor"),
])
def test_bad_inputs_exit_2_naming_the_field(argv, pattern, capsys):
    assert twin_main(["serve", *argv]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert pytest.importorskip("re").search(pattern, err), err


def test_serve_json_keys_and_chrome_trace(tmp_path, capsys):
    trace = tmp_path / "iters.json"
    assert twin_main(["serve", "--requests", "40", "--set", "serve.output_len=32", "--json", "-", "--trace", str(trace), "--quiet"]) == 0
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert f"trace: {trace} (" in captured.err   # says where the trace went (nothing until s21walk)
    assert twin_main(["serve", "--requests", "40", "--set", "serve.output_len=32", "--set", "traffic.trace_iterations=5",
                      "--trace", str(tmp_path / "cut.json"), "--quiet"]) == 0
    assert re.search(r"trace: .*cut\.json \(5 iterations, the first 5 of [\d,]+ \(traffic\.trace_iterations\)\)",
                     capsys.readouterr().out)
    for key in JSON_KEYS:
        assert key in out and out[key] is not None, key
    assert out["simulated_requests"] == 40
    events = json.loads(trace.read_text())["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    assert slices and all(e["dur"] > 0 for e in slices)
    assert (tmp_path / "iters.scenario.resolved.toml").exists()
    # back-to-back iterations meet on the same nanosecond: Perfetto dropped ~1 in 8 (ts and dur rounded
    # apart overlapped by 1 ns, until s21walk)
    assert perfetto_drops(events) == []
    # a co-located deployment names only its pool's process (the empty prefill and decode pools too, until s21walk)
    assert [e["args"]["name"] for e in events if e["name"] == "process_name"] == ["colocated instances"]


@pytest.mark.parametrize("disaggregated", [False, True])
def test_reservations_hold_the_drafted_tokens_of_mtp(disaggregated):
    # the cache holds exactly 8 requests of 100 + 51 tokens; with one drafted token a step can write
    # up to 1.85 tokens, so the last step would overrun the output's reservation by up to 0.85: a
    # reservation keeps one lookahead slot, so only 7 fit at once, and the cache never overflows
    pools = ("cluster.num_gpus=16", "serve.disaggregated=true", "serve.prefill_instances=1") if disaggregated else ()
    sc = h200(*pools, "serve.kv_capacity_tokens=1208", 'serve.kv_admission="reserve"', "serve.mtp_draft_tokens=1",
              "traffic.concurrency=8", "traffic.num_requests=16", "serve.input_len=100", "serve.output_len=51")
    r = simulate(sc)
    assert r.preemptions == 0
    assert r.kv_peak_tokens_per_instance <= 1208


def test_disaggregated_transfers_kv_over_the_scale_out_link():
    sc = h200("cluster.num_gpus=16", "serve.disaggregated=true", "serve.prefill_instances=1",
              "traffic.concurrency=4", "traffic.num_requests=8", "serve.output_len=16")
    r = simulate(sc)
    assert r.prefill_gpus == 8 and r.decode_gpus == 8
    kv_per_token = sc.model.num_layers * 576 * 2            # BF16 latent + RoPE key, 61 layers
    assert r.kv_transfer_bytes == pytest.approx(8 * 1024 * kv_per_token, rel=1e-9)
    off = simulate(dataclasses.replace(sc, serve=dataclasses.replace(sc.serve, kv_transfer=False)))
    assert off.tpot_s.p50 < r.tpot_s.p50 and off.kv_transfer_bytes == 0


def test_moe_by_tp_ep_or_both():
    from twin.serving.iteration import decode_step, moe_view
    sc = h200()
    steps = {}
    for moe_tp in (1, 2, 8):
        s = dataclasses.replace(sc.serve, moe_tp=moe_tp)
        mm, ms = moe_view(sc.model, s)
        assert ms.ep * moe_tp == 8 and mm.moe_intermediate_size * moe_tp == sc.model.moe_intermediate_size
        d = decode_step(sc.model, sc.gpu, s, 64)
        steps[moe_tp] = d["step_s"]
        assert (d["per_layer_a2a_s"] == 0.0) == (moe_tp == 8)   # pure TP: no all-to-all; EP groups: one
    assert len(set(steps.values())) == 3          # each layout is timed differently
    r = simulate(closed(4, 8, 512, 32, "serve.moe_tp=8"))
    assert np.isfinite(r.requests["finish_s"]).all()


def test_api_replays_a_load_run_closed_or_timed():
    import twin
    sc = h200("traffic.concurrency=2")
    timed = twin.simulate_load(sc, [0.0, 0.0, 1.0], [512, 512, 64], [8, 8, 4])
    per = timed.per_request()
    assert np.allclose(per["e2e_s"], per["ttft_s"] + per["tpot_s"] * (np.array([8, 8, 4]) - 1))
    closed_run = twin.simulate_load(sc, None, [512] * 6, [8] * 6)
    assert closed_run.concurrency == 2 and closed_run.arrival == "closed"
    arr = closed_run.per_request()["arrival_s"]
    assert arr[0] == arr[1] == 0.0 and (arr[2:] > 0).all()       # released when earlier ones finish
    with pytest.raises(ScenarioError, match="arrival_s"):
        twin.simulate_load(sc, [1.0, 0.0], [5, 5], [2, 2])


def test_a_run_too_long_to_simulate_is_refused_naming_the_field():
    with pytest.raises(ScenarioError, match=r"traffic\.num_requests.*at most 20,000,000 iterations"):
        simulate(h200("traffic.num_requests=1000000", "serve.output_len=1000000", "serve.input_len=16"))


def test_round_robin_dp_groups_pace_a_lone_prompt_by_its_own_group():
    """serve.dp_routing = 'round_robin' (real/serve's EP ranks): a lone request sits on one DP group,
    which carries its whole prompt, so its prefill is slower than the balanced view that spreads it
    over every group; two requests land on different groups and share one iteration."""
    base = ('serve.ep=8', 'serve.tp=1', 'serve.dp_attention=true', 'traffic.arrival="closed"', 'serve.input_len=2048', 'serve.output_len=4',
            'traffic.num_requests=1', 'traffic.concurrency=1')
    bal = simulate(h200(*base))
    rr = simulate(h200(*base, 'serve.dp_routing="round_robin"'))
    assert rr.ttft_s.p50 > bal.ttft_s.p50 * 1.5
    sc = h200(*base, 'serve.dp_routing="round_robin"')
    reqs = from_records(None, [2048, 2048], [4, 4], sc.traffic)
    two = simulate(dataclasses.replace(sc, traffic=dataclasses.replace(sc.traffic, concurrency=2)), requests=reqs)
    # groups 0 and 1 prefill together: both first tokens at the end of the same iteration
    first = two.per_request()["first_token_s"]
    assert first[0] == pytest.approx(first[1]) and first[0] == pytest.approx(rr.ttft_s.p50, rel=0.05)


def test_serve_progress_bar_reports_and_changes_nothing(capsys):
    """`twin serve` ran up to minutes (2M requests) with no progress until s21walk: the simulation reports
    finished requests about 200 times a run, ending at the total, and the result is the same with the bar."""
    from twin.core.results import to_json
    from twin.serving.run import serve
    sc = h200("traffic.concurrency=8", "serve.input_len=64", "serve.output_len=16")
    reports = []
    simulate(sc, 400, on_done=lambda done, total: reports.append((done, total)))
    assert len(reports) == 200 and reports[-1] == (400, 400)
    assert [d for d, _ in reports] == sorted(d for d, _ in reports)
    quiet = serve(sc, 400)
    capsys.readouterr()
    shown = serve(sc, 400, progress=True)
    assert capsys.readouterr().err.startswith("\rserve: ")   # the bar, on stderr
    assert to_json(shown) == to_json(quiet)

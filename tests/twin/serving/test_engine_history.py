"""The idle engine's late wake-up (twin.serving.timing wake_s, twin.serving.engine): real/serve
sleeps until the next arrival, so an idle instance starts its iteration wake_s after the arrival;
a busy one is untouched."""

import numpy as np
import pytest

from calibration.serve_load_validation import scenario_for
from twin.core.specs import serve_engines
from twin.serving import timing
from twin.serving.simulate import simulate
from twin.serving.workload import from_records
from tests.twin.serving.synthetic_run import RUN, served, with_terms


def _first_token_s(arrival_s, input_len=300, output_len=4):
    return served(arrival_s, input_len, output_len)["first_token_s"]


def test_an_idle_engine_starts_wake_s_after_the_arrival(monkeypatch):
    with_terms(monkeypatch, wake_s=0.0)
    base = _first_token_s([1.0, 1.001])
    with_terms(monkeypatch, wake_s=0.0005)
    late = _first_token_s([1.0, 1.001])
    # request 0 wakes the idle engine: its prompt starts 0.5 ms later; request 1 arrives while
    # request 0's prompt runs (a busy engine, no sleep) and joins the next iteration, which the
    # late start shifts by the same 0.5 ms
    assert late[0] == pytest.approx(base[0] + 0.0005, abs=1e-12)
    assert late[1] == pytest.approx(base[1] + 0.0005, abs=1e-12)


def test_the_committed_tables_carry_a_measured_wake_up():
    """The fit's wake_s: a fraction of a millisecond on one GPU (timer slack), about the 1 ms poll
    of the EP ranks' loop under EP."""
    t = serve_engines()
    assert 0.0 < t["real-serve-h200-ep1"]["wake_s"] < 0.001
    assert 0.0 < t["real-serve-h200-ep2"]["wake_s"] < 0.003


def _first_tokens_with_sizes(monkeypatch, new_size_s, arrival_s, input_len, run_batch_sizes=(), new_bin_s=0.0,
                             fade_bins=0.0):
    with_terms(monkeypatch, wake_s=0.0, new_size_s=new_size_s, new_bin_s=new_bin_s, new_size_bin_tokens=16,
               new_bin_fade_bins=fade_bins)
    return served(arrival_s, input_len, 2, run_batch_sizes=run_batch_sizes)["first_token_s"]


def test_an_eager_iteration_of_a_new_flat_batch_size_pays_new_size_s_once(monkeypatch):
    """Three lone prompts, 1 s apart (each its own prefill-only iteration, the decode of 1 token in
    between replayed from a CUDA graph): 300, 300 and 200 tokens. With new_size_s the first 300 and
    the 200 pay it, the second 300 does not; sizes the engine ran before (run_batch_sizes) never do."""
    arrivals, lengths = [1.0, 2.0, 3.0], [300, 300, 200]
    base = _first_tokens_with_sizes(monkeypatch, 0.0, arrivals, lengths)
    new = _first_tokens_with_sizes(monkeypatch, 0.002, arrivals, lengths)
    assert (new - base).tolist() == pytest.approx([0.002, 0.0, 0.002], abs=1e-12)
    warm = _first_tokens_with_sizes(monkeypatch, 0.002, arrivals, lengths, run_batch_sizes={200, 300})
    assert (warm - base).tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)


def test_a_new_size_bin_pays_new_bin_s_once_per_bin(monkeypatch):
    """Lone prompts of 300, 310 and 200 tokens: bins of 16 tokens 18, 19 and 12, all new (each pays
    new_bin_s), then 305 (bin 19, met: no charge); a bin run before (run_batch_sizes) pays nothing."""
    arrivals, lengths = [1.0, 2.0, 3.0, 4.0], [300, 310, 200, 305]
    base = _first_tokens_with_sizes(monkeypatch, 0.0, arrivals, lengths)
    new = _first_tokens_with_sizes(monkeypatch, 0.0, arrivals, lengths, new_bin_s=0.003)
    assert (new - base).tolist() == pytest.approx([0.003, 0.003, 0.003, 0.0], abs=1e-12)
    warm = _first_tokens_with_sizes(monkeypatch, 0.0, arrivals, lengths, run_batch_sizes={(0, 290)}, new_bin_s=0.003)
    assert (warm - base).tolist() == pytest.approx([0.0, 0.003, 0.003, 0.0], abs=1e-12)   # 290 // 16 = 300 // 16


def test_a_new_bins_cost_fades_with_the_bins_met(monkeypatch):
    """new_bin_fade_bins h: the m-th new bin (m bins met before, run_batch_sizes' included) pays
    new_bin_s x h / (h + m): lone prompts of 300, 310 and 200 tokens (three new bins) with h = 2 pay
    1, 2/3 and 1/2 of it; with two bins met before, 2/4, 2/5 and 2/6; a met bin nothing."""
    arrivals, lengths = [1.0, 2.0, 3.0, 4.0], [300, 310, 200, 305]
    base = _first_tokens_with_sizes(monkeypatch, 0.0, arrivals, lengths)
    fade = _first_tokens_with_sizes(monkeypatch, 0.0, arrivals, lengths, new_bin_s=0.003, fade_bins=2.0)
    assert (fade - base).tolist() == pytest.approx([0.003, 0.002, 0.0015, 0.0], abs=1e-12)
    warm = _first_tokens_with_sizes(monkeypatch, 0.0, arrivals, lengths, run_batch_sizes={(0, 1), (0, 40)},
                                    new_bin_s=0.003, fade_bins=2.0)
    assert (warm - base).tolist() == pytest.approx([0.0015, 0.0012, 0.001, 0.0], abs=1e-12)
    assert timing.new_bin_weight(5, 0.0) == 1.0   # no fade in the table: every new bin pays it all


def test_sizes_run_before_counts_earlier_runs_of_the_same_session_only():
    """(rank, size) of the eager iterations (graph_batch 0) of earlier runs within SESSION_GAP_S (no
    durations recorded); a gap starts a new engine process; graph-replayed iterations count no
    size, an EP rank's idle padding step a size of 1."""
    from calibration.serve_load_validation import sizes_run_before
    runs = [{"run_id": "a", "timestamp_utc": "2026-11-26T03:00:00Z"},
            {"run_id": "b", "timestamp_utc": "2026-11-26T03:00:30Z"},
            {"run_id": "c", "timestamp_utc": "2026-11-26T06:00:00Z"}]
    it = lambda run, p, d, g=0, idle=0, rank=0: {"run_id": run, "rank": str(rank), "prefill_tokens": str(p),  # noqa: E731
                                                 "decode_seqs": str(d), "graph_batch": str(g), "idle": str(idle)}
    its = [it("a", 300, 2), it("a", 0, 4, g=4), it("a", 10, 0, idle=1), it("a", 7, 0, rank=1), it("b", 120, 0), it("c", 50, 1)]
    before = sizes_run_before(runs, its)
    assert before == {"a": frozenset(), "b": frozenset({(0, 302), (0, 1), (1, 7)}), "c": frozenset()}


def test_sizes_run_before_ends_a_session_where_a_run_follows_later_than_its_own_duration():
    """With durations, a run continues the session when it ends within its duration + SESSION_SLACK_S
    of the previous one (the h100x2 EP2 plans: two processes, 72 s apart, a 6.4 s first run)."""
    from calibration.serve_load_validation import sizes_run_before
    runs = [{"run_id": "a", "timestamp_utc": "2026-11-26T09:04:38Z", "duration_s": "3.8"},
            {"run_id": "b", "timestamp_utc": "2026-11-26T09:05:50Z", "duration_s": "6.4"},
            {"run_id": "c", "timestamp_utc": "2026-11-26T09:05:56Z", "duration_s": "5.8"}]
    its = [{"run_id": r, "rank": "0", "prefill_tokens": str(p), "decode_seqs": "0", "graph_batch": "0", "idle": "0"}
           for r, p in (("a", 100), ("b", 200))]
    before = sizes_run_before(runs, its)
    assert before == {"a": frozenset(), "b": frozenset(), "c": frozenset({(0, 200)})}


def test_sizes_run_before_counts_the_sizes_warm_shapes_ran():
    """A run recorded with warm_shapes N ran every flat batch size 1..N before it (Engine.warm_shapes):
    those count as run before it and before the later runs of its session, with or without times."""
    from calibration.serve_load_validation import sizes_run_before
    runs = [{"run_id": "a", "timestamp_utc": "2026-11-26T03:00:00Z", "warm_shapes": "0"},
            {"run_id": "b", "timestamp_utc": "2026-11-26T03:00:30Z", "warm_shapes": "4"},
            {"run_id": "c", "timestamp_utc": "2026-11-26T03:01:00Z", "warm_shapes": ""}]
    its = [{"run_id": "a", "rank": "0", "prefill_tokens": "300", "decode_seqs": "2", "graph_batch": "0", "idle": "0"}]
    before = sizes_run_before(runs, its)
    warm = {(0, n) for n in (1, 2, 3, 4, 302)}
    assert before == {"a": frozenset(), "b": frozenset(warm), "c": frozenset(warm)}
    untimed = sizes_run_before([{"run_id": "a", "warm_shapes": "3", "ep_size": "2"}, {"run_id": "b"}], [])
    assert untimed == {"a": frozenset((g, n) for g in (0, 1) for n in (1, 2, 3)), "b": frozenset()}   # every EP rank warmed


def test_a_new_size_stall_hides_behind_a_gpu_bound_iteration(monkeypatch):
    """new_size_host_bound: a first-met size's stall is paid where the iteration is host-bound (its
    kernels shorter than its fixed host terms), hidden behind a longer GPU queue: a lone 300-token
    prompt pays it, a lone 2,000-token prompt (kernels well over the ~3 ms of host terms) does not;
    without the rule both pay."""
    def extra_s(input_len: int, host_bound: float) -> float:
        with monkeypatch.context() as m:
            with_terms(m, wake_s=0.0, new_size_s=0.004, new_bin_s=0.0, new_size_bin_tokens=16,
                       new_size_host_bound=host_bound)
            stalled = served([1.0], input_len, 2)["first_token_s"][0]
            seen = served([1.0], input_len, 2, run_batch_sizes={(0, input_len)})["first_token_s"][0]
        return stalled - seen

    assert extra_s(300, 1.0) == pytest.approx(0.004, abs=1e-9)
    assert extra_s(2000, 1.0) == pytest.approx(0.0, abs=1e-9)
    assert extra_s(2000, 0.0) == pytest.approx(0.004, abs=1e-9)


def test_exposed_stall_is_what_the_gpu_backlog_does_not_hide():
    """(s12srv, not adopted: new_size_backlog 0 in the tables) With new_size_backlog the GPU's queue
    hides a first-met size's stall only as far as the kernels' excess over the host terms reaches;
    the all-or-nothing rule hides all of it at any excess, and without new_size_host_bound none."""
    from twin.serving.timing import exposed_stall_s
    assert exposed_stall_s(0.007, 0.004, 0.003, 1.0, 1.0) == pytest.approx(0.006)   # 1 ms of backlog
    assert exposed_stall_s(0.007, 0.004, 0.003, 1.0, 0.0) == 0.0                    # all or nothing
    assert exposed_stall_s(0.007, 0.002, 0.003, 1.0, 1.0) == pytest.approx(0.007)   # host-bound: all
    assert exposed_stall_s(0.007, 0.030, 0.003, 1.0, 1.0) == 0.0                    # a deep queue: none
    assert exposed_stall_s(0.007, 0.030, 0.003, 0.0, 1.0) == pytest.approx(0.007)   # no rule: all


def test_backlog_fit_features_are_the_unhidden_share():
    """calibration.serve_engine_fit.stall_share: flag x (stall - backlog) / stall under a fit's terms."""
    import pandas as pd

    from calibration.serve_engine_fit import stall_share
    coef = {"iteration_s": 0.001, "eager_iteration_s": 0.002, "prompt_iteration_s": 0.0, "new_size_s": 0.001, "new_bin_s": 0.003}
    df = pd.DataFrame({"physics_s": [0.002, 0.005, 0.010, 0.005], "iteration_s": 1.0, "eager_iteration_s": 1.0,
                       "prompt_iteration_s": 1.0, "new_size_flag": [1.0, 1.0, 1.0, 0.0], "new_bin_flag": [1.0, 1.0, 0.0, 0.0]})
    # host terms 3 ms: backlogs 0, 2, 7 ms against stalls 4, 4, 1 ms (the last row flags nothing)
    assert stall_share(df, coef).tolist() == pytest.approx([1.0, 0.5, 0.0, 1.0])


def test_a_closed_loop_successor_waits_for_its_client_to_issue_it(monkeypatch):
    """issue_s_per_request / issue_s_per_token: real/serve's closed-loop client draws a finished
    request's successor in the engine's thread, so the successor (arriving at the finish) starts
    its prompt that much later; the first wave (issued before the run) does not wait."""
    def ttft(per_token_s: float) -> np.ndarray:
        with monkeypatch.context() as m:
            with_terms(m, wake_s=0.0, issue_s_per_request=0.0, issue_s_per_token=per_token_s)
            sc = scenario_for({**RUN, "arrival": "closed", "concurrency": "1"}, spread=False)
            reqs = from_records(None, np.asarray([300, 500]), np.full(2, 3), sc.traffic)
            return simulate(sc, requests=reqs).per_request()["ttft_s"]
    base, issued = ttft(0.0), ttft(1e-6)
    assert issued[0] == pytest.approx(base[0], abs=1e-12)
    assert issued[1] == pytest.approx(base[1] + 500 * 1e-6, abs=1e-12)


def test_issue_terms_fit_the_gaps_after_issuing_iterations(tmp_path):
    """calibration.serve_engine_fit.issue_rows / issue_terms on made-up closed-loop records: the gap
    after an iteration that issued requests (arrival = its end) is 10 us + 0.5 us a prompt token."""
    import pandas as pd

    from calibration.serve_engine_fit import issue_rows, issue_terms
    starts, durs, reqs, t = [], [], [], 0.0
    lens = {2: [200], 5: [400, 100], 8: [1000]}
    for i in range(10):
        starts.append(t)
        durs.append(0.002)
        end = t + 0.002
        issued = lens.get(i, [])
        for n in issued:
            reqs.append({"run_id": "c", "rank": 0, "request_id": len(reqs), "arrival_s": end, "input_len": n})
        t = end + 1e-5 + 0.5e-6 * sum(issued) + (10e-6 * len(issued) if issued else 0.0)
    reqs.append({"run_id": "c", "rank": 0, "request_id": len(reqs), "arrival_s": 0.0, "input_len": 300})   # the first wave
    pd.DataFrame({"run_id": "c", "rank": 0, "iteration": range(10), "start_s": starts, "duration_s": durs}).to_csv(
        tmp_path / "serve_iterations.csv", index=False)
    pd.DataFrame(reqs).to_csv(tmp_path / "serve_requests.csv", index=False)
    pd.DataFrame([{"run_id": "c", "split": "fit", "arrival": "closed"}]).to_csv(tmp_path / "serve_load.csv", index=False)
    rows = issue_rows(tmp_path)
    assert rows.iteration.tolist() == [2, 5, 8] and rows.tokens.tolist() == [200, 500, 1000] and rows.requests.tolist() == [1, 2, 1]
    terms = issue_terms(tmp_path, loop_s=1e-5)
    assert terms["issue_s_per_token"] == pytest.approx(0.5e-6, rel=1e-6)
    assert terms["issue_s_per_request"] == pytest.approx(10e-6, rel=1e-6)


def test_launch_overlap_times_an_eager_iteration_at_the_later_of_kernels_and_launches(monkeypatch):
    """(s12srv, not adopted: launch_overlap 0 in the tables) With launch_overlap a one-GPU eager
    iteration takes max(kernels, launch terms) + the other terms, not their sum."""
    def prompt_s(overlap: float, launch_s: float) -> float:
        with monkeypatch.context() as m:
            with_terms(m, wake_s=0.0, new_size_s=0.0, new_bin_s=0.0, iteration_s=0.0, prompt_iteration_s=0.0,
                       eager_iteration_s=launch_s, launch_overlap=overlap)
            sc = scenario_for(RUN, spread=False)
            return timing.IterationCosts(sc.model, sc.gpu, sc.serve).iteration_s(0, 0.0, 300, 300.0, chunks=1, pairs=9e4)[0]
    assert prompt_s(1.0, 0.0) == pytest.approx(prompt_s(0.0, 0.0))          # no launch terms: the kernels alone
    kern = prompt_s(0.0, 0.0)                                                  # kernels + other terms
    big = 0.05                                                                 # launches far longer than the kernels
    assert prompt_s(0.0, big) == pytest.approx(kern + big)                     # the sum
    rest = prompt_s(1.0, big) - big                                            # the other terms alone
    assert 0.0 <= rest < kern                                                  # the kernels hidden under the launches
    assert prompt_s(1.0, 2 * big) - prompt_s(1.0, big) == pytest.approx(big)   # host-bound: each launch second counts


def test_a_cold_process_prompt_pays_a_share_fading_with_the_sizes_it_ran(monkeypatch):
    """(s12srv, not adopted: cold_prompt_s 0 in the tables) cold_prompt_s x h / (h + m), m the distinct
    flat sizes the engine ran before, on a host-bound prompt iteration: a lone 300-token prompt pays
    it in full in a fresh engine, h / (h + 100) of it after 100 sizes, as the fit marks it."""
    import pandas as pd

    from calibration.serve_engine_fit import mark_new_sizes

    def extra_s(run_before) -> float:
        with monkeypatch.context() as m:
            with_terms(m, wake_s=0.0, new_size_s=0.0, new_bin_s=0.0, cold_prompt_s=0.002, cold_sizes=50.0)
            cold = served([1.0], 300, 2, run_batch_sizes=run_before)["first_token_s"][0]
        with monkeypatch.context() as m:
            with_terms(m, wake_s=0.0, new_size_s=0.0, new_bin_s=0.0, cold_prompt_s=0.0, cold_sizes=50.0)
            warm = served([1.0], 300, 2, run_batch_sizes=run_before)["first_token_s"][0]
        return cold - warm

    assert extra_s(()) == pytest.approx(0.002, abs=1e-9)
    assert extra_s({(0, 1000 + n) for n in range(100)}) == pytest.approx(0.002 * 50 / 150, abs=1e-9)
    df = pd.DataFrame([{"run_id": "a", "rank_sizes": (300,), "sizes_before": frozenset({(0, 7), (0, 9)}), "graph_rows": 0,
                        "prompt_iteration_s": 1.0},
                       {"run_id": "a", "rank_sizes": (310,), "sizes_before": frozenset(), "graph_rows": 0, "prompt_iteration_s": 1.0},
                       {"run_id": "a", "rank_sizes": (5,), "sizes_before": frozenset(), "graph_rows": 0, "prompt_iteration_s": 0.0}])
    assert mark_new_sizes(df, cold_sizes=2.0).cold_prompt_s.tolist() == pytest.approx([2 / 4, 2 / 5, 0.0])

"""(s28serve round 2, docs/notes/s28serve2_rule.md) ADOPT_WARM_PASS_AND_BUDGET: a warmed run's process has met the flat
sizes 1..warm_shapes and its token budget's size, not the sizes between; off, the warm pass covers the budget as s22ttft
adopted. And calibration.serve_ttft_parts' measured split of TTFT (wait, the first-token step, the tail)."""

import numpy as np

import calibration.serve_load_validation as slv
from calibration.serve_load_validation import sizes_run_before, warm_pass_sizes
from calibration.serve_ttft_parts import measured_parts, prompt_steps

RUNS = [{"run_id": "w", "timestamp_utc": "2026-11-28T15:00:00Z", "warm_shapes": "8", "token_budget": "32"},
        {"run_id": "x", "timestamp_utc": "2026-11-28T15:00:03Z", "warm_shapes": "0", "token_budget": "32"}]
ITS = [{"run_id": "w", "rank": "0", "prefill_tokens": "14", "decode_seqs": "2", "graph_batch": "0", "idle": "0"}]


def test_off_the_warm_pass_covers_every_size_to_the_budget(monkeypatch):
    monkeypatch.setattr(slv, "ADOPT_WARM_PASS_AND_BUDGET", False)
    assert set(warm_pass_sizes(RUNS[0])) == set(range(1, 33)) and not set(warm_pass_sizes(RUNS[1]))
    assert sizes_run_before(RUNS, ITS)["w"] == {(0, n) for n in range(1, 33)}


def test_on_the_warm_pass_covers_its_own_sizes_and_the_budget_not_between(monkeypatch):
    monkeypatch.setattr(slv, "ADOPT_WARM_PASS_AND_BUDGET", True)
    assert warm_pass_sizes(RUNS[0]) == set(range(1, 9)) | {32} and not set(warm_pass_sizes(RUNS[1]))
    before = sizes_run_before(RUNS, ITS)
    assert before["w"] == {(0, n) for n in (*range(1, 9), 32)}
    assert before["x"] == before["w"] | {(0, 16)}   # the same process: the first run's new size now met
    assert warm_pass_sizes({"warm_shapes": "64", "token_budget": "32"}) == set(range(1, 65))   # a pass beyond it


def test_measured_ttft_parts_split_at_the_first_token_iteration():
    its = [{"rank": "0", "iteration": "0", "start_s": "1.000", "duration_s": "0.010", "prefill_tokens": "300",
            "decode_seqs": "0"},
           {"rank": "0", "iteration": "1", "start_s": "1.012", "duration_s": "0.002", "prefill_tokens": "0",
            "decode_seqs": "1"},
           {"rank": "0", "iteration": "2", "start_s": "1.015", "duration_s": "0.008", "prefill_tokens": "200",
            "decode_seqs": "1"}]
    reqs = [{"rank": "0", "arrival_s": "0.999", "first_token_s": "1.010", "first_token_iteration": "0", "num_chunks": "1"},
            {"rank": "0", "arrival_s": "1.005", "first_token_s": "1.0235", "first_token_iteration": "2",
             "num_chunks": "1"}]
    got = measured_parts(reqs, its)
    np.testing.assert_allclose(got["wait_s"], [0.001, 0.010], atol=1e-9)
    np.testing.assert_allclose(got["step_s"], [0.010, 0.008], atol=1e-9)
    np.testing.assert_allclose(got["tail_s"], [0.0, 0.0005], atol=1e-9)
    np.testing.assert_allclose(got["ttft_s"], got["wait_s"] + got["step_s"] + got["tail_s"], atol=1e-12)
    assert prompt_steps(its) == [(300, 0, 0.010), (200, 1, 0.008)]

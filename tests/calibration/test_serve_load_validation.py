"""The request simulation replays real/'s recorded load runs: settings to scenario, requests to
the same load, figures reduced as the load generator does."""

import csv
import dataclasses

import numpy as np
import pytest

from calibration.serve_load_validation import FIGURES, SPREAD_SEEDS, gpu_key, loadgen_figures, scenario_for, validate_load
from twin.serving.simulate import simulate
from twin.serving.workload import from_records

RUN = {"run_id": "r1", "split": "holdout", "arrival": "poisson", "rate_per_s": "20", "concurrency": "0",
       "model": "v3-slice-2l", "precision": "bf16", "num_gpus": "2", "ep_size": "2", "attention_parallel": "dp",
       "page_size": "16", "num_pages": "4096", "token_budget": "2048", "max_running": "32",
       "cuda_graphs": "1", "graph_batch_buckets": "1 2 4 8 16 32", "gpu_name": "NVIDIA H200"}


def test_settings_become_the_scenario():
    sc = scenario_for(RUN)
    s = sc.serve
    assert (sc.model.name, sc.cluster.gpu, sc.cluster.num_gpus) == ("v3-slice-2l", "h200", 2)
    assert (s.ep, s.tp, s.dp_attention, s.weight_precision) == (2, 1, True, "bf16")
    # per-rank engine limits x 2 DP ranks = one instance's (page 0 is real/serve's scratch page);
    # real/serve captures no CUDA graphs under EP, so the EP2 scenario runs eager
    assert (s.batch, s.kv_capacity_tokens, s.max_batch_tokens) == (64, 2 * 4095 * 16, 2048)
    assert (s.cuda_graphs, s.token_budget_counts_decode, s.kv_admission) == (False, True, "reserve")
    assert s.engine_costs == "real-serve-h200-ep2"
    one = scenario_for({**RUN, "num_gpus": "1", "ep_size": "1"}).serve
    assert one.cuda_graphs and one.graph_batch_buckets == (1, 2, 4, 8, 16, 32) and one.kv_page_size == 16
    assert scenario_for(RUN, engine_costs=False).serve.engine_costs == ""
    assert gpu_key("NVIDIA H100 80GB HBM3") == "h100"


def test_a_pinned_engine_has_a_table_of_its_own():
    """real/serve run with --pin numa|core is its own deployment (serve_engines.toml
    real-serve-<gpu>-ep<n>-pin<mode>); unpinned (no column, '' or 'none') keeps the plain name."""
    from calibration.serve_load_validation import engine_name
    assert engine_name(RUN) == engine_name({**RUN, "pin": ""}) == engine_name({**RUN, "pin": "none"}) == "real-serve-h200-ep2"
    assert engine_name({**RUN, "pin": "numa"}) == "real-serve-h200-ep2-pinnuma"
    # no table fitted for it (yet): the scenario runs without engine terms rather than borrowing another's
    assert scenario_for({**RUN, "gpu_name": "NVIDIA H100 80GB HBM3", "pin": "core"}).serve.engine_costs == ""


@pytest.mark.parametrize("spread", [False, True])
def test_a_run_the_twin_itself_recorded_validates_with_no_error(tmp_path, spread):
    """Recorded by the twin (with the measured spread: each figure the median of SPREAD_SEEDS
    replays, traffic seeds 0..N-1), replayed by validate_load: no error."""
    rng = np.random.default_rng(1)
    n = 40
    arrival = np.cumsum(rng.exponential(1 / 20, n))
    isl, osl = rng.integers(64, 512, n), rng.integers(8, 64, n)
    sc = scenario_for(RUN, spread=spread)
    runs = []
    for seed in range(SPREAD_SEEDS if spread else 1):
        one = dataclasses.replace(sc, traffic=dataclasses.replace(sc.traffic, seed=seed))
        runs.append(loadgen_figures(simulate(one, requests=from_records(arrival, isl, osl, one.traffic)).per_request()))
    figs = {k: float(np.median([r[k] for r in runs])) for k in FIGURES}
    if spread:   # the draws differ from seed to seed
        assert len({r["ttft_p99_s"] for r in runs}) > 1
    with open(tmp_path / "serve_load.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=[*RUN, *FIGURES])
        w.writeheader()
        w.writerow({**RUN, **figs})
    with open(tmp_path / "serve_requests.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["run_id", "rank", "arrival_s", "input_len", "output_len"])
        w.writeheader()
        for i in range(n):
            w.writerow({"run_id": "r1", "rank": i % 2, "arrival_s": arrival[i], "input_len": isl[i], "output_len": osl[i]})
    (row,) = validate_load(tmp_path, spread=spread)
    for k in FIGURES:
        assert row[f"{k}_rel_error"] == pytest.approx(0.0, abs=1e-9), k
        assert row[f"{k}_within_target"]


def test_ep_ranks_prefill_their_chunks_side_by_side():
    """Under EP with DP attention each rank launches and scores its own prompt chunks, the ranks in
    lockstep: one 1,000-token prompt on each rank takes the same iteration as one prompt on one rank
    (the engine terms count the busiest rank's chunks and query-key pairs, as the fit does: on the
    committed EP2 fit runs a long prompt's iteration takes ~42 ms with or without one on the other rank)."""
    sc = scenario_for({**RUN, "gpu_name": "NVIDIA H100 80GB HBM3"}, spread=False)
    assert sc.serve.engine_costs == "real-serve-h100-ep2"

    def first_iteration_s(n_prompts: int) -> float:
        reqs = from_records([0.0] * n_prompts, [1000] * n_prompts, [4] * n_prompts, sc.traffic)
        it = simulate(sc, requests=reqs).trace[0]
        assert it[5] == 1000 * n_prompts          # every prompt in the first iteration, whole
        return it[3]

    assert first_iteration_s(2) == pytest.approx(first_iteration_s(1), rel=1e-9)

"""One synthetic real/serve run and its engine table, shared by the serving-engine term tests (first launch,
kernel first launch, cold eager, engine history, post-prompt decode): a one-GPU H200 Poisson run of the
v3-slice-2l engine, the fields calibration.serve_load_validation.scenario_for reads; `with_terms` serves
that engine's committed table with some terms replaced, `served` simulates given requests on the run."""

import numpy as np

from calibration.serve_load_validation import scenario_for
from twin.core.specs import serve_engines
from twin.serving import timing
from twin.serving.simulate import simulate
from twin.serving.workload import from_records

RUN = {"run_id": "r", "split": "fit", "arrival": "poisson", "rate_per_s": "1", "concurrency": "0",
       "model": "v3-slice-2l", "precision": "bf16", "num_gpus": "1", "ep_size": "1", "attention_parallel": "dp",
       "page_size": "64", "num_pages": "4096", "token_budget": "2048", "max_running": "64",
       "cuda_graphs": "1", "graph_batch_buckets": "1 2 4 8 16 32 64", "graph_page_buckets": "1 2 4 8 16 33",
       "gpu_name": "NVIDIA H200"}
ENGINE = "real-serve-h200-ep1"


def with_terms(monkeypatch, **terms) -> None:
    """twin.serving.timing reads the committed tables with ENGINE's `terms` replaced and its spread
    dropped (deterministic times), priced as before candidate T (timing.T_SWITCHES off): these tests judge the
    additive engine terms, which T's pipeline replaces on eager iterations (docs/notes/s26start2_rule.md)."""
    for name in timing.T_SWITCHES:
        monkeypatch.setattr(timing, name, False)
    table = {k: dict(v) for k, v in serve_engines().items()}
    table[ENGINE].update(terms)
    table[ENGINE].pop("spread", None)
    monkeypatch.setattr(timing, "serve_engines", lambda: table)


def served(arrival_s, input_len, output_len, **simulate_kw) -> dict:
    """per_request() of RUN's scenario (no spread) serving one request per arrival; `input_len` and
    `output_len` one per request, or one for all."""
    sc = scenario_for(RUN, spread=False)
    n = len(arrival_s)

    def per_request(x):
        return np.asarray(x) if np.ndim(x) else np.full(n, x)
    reqs = from_records(np.asarray(arrival_s, float), per_request(input_len), per_request(output_len), sc.traffic)
    return simulate(sc, requests=reqs, **simulate_kw).per_request()

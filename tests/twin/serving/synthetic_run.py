"""One synthetic real/serve run and its engine table, shared by the serving-engine term tests (first launch,
kernel first launch, cold eager, engine history, post-prompt decode): a one-GPU H200 Poisson run of the
v3-slice-2l engine, the fields calibration.serve_load_validation.scenario_for reads."""

RUN = {"run_id": "r", "split": "fit", "arrival": "poisson", "rate_per_s": "1", "concurrency": "0",
       "model": "v3-slice-2l", "precision": "bf16", "num_gpus": "1", "ep_size": "1", "attention_parallel": "dp",
       "page_size": "64", "num_pages": "4096", "token_budget": "2048", "max_running": "64",
       "cuda_graphs": "1", "graph_batch_buckets": "1 2 4 8 16 32 64", "graph_page_buckets": "1 2 4 8 16 33",
       "gpu_name": "NVIDIA H200"}
ENGINE = "real-serve-h200-ep1"

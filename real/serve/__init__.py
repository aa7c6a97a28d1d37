"""A small serving engine for the model of `real/model.py`, the ground truth of the serving twin.

    python -m real.serve --out DIR --plan gpu1|ep2|tiny [--device cpu] [--budget-s S]
    torchrun --standalone --nproc-per-node 2 -m real.serve --out DIR --plan ep2

What it does (the twin replays exactly this policy; `records.py` says what is recorded):
- Requests arrive (Poisson at a rate, or closed loop at a fixed concurrency; `loadgen.py`) with
  input/output lengths drawn from fixed, uniform or listed values; output lengths are forced (no
  EOS: the weights are random), prompts are random token ids.
- Continuous batching (`engine.py`): every iteration runs all running decode sequences first (one
  token each), then prefill chunks, first-come first-served, until the token budget is spent
  (chunked prefill: a prompt longer than what is left of the budget is split over iterations).
  A request is admitted when a running slot is free and the page pool holds pages for its whole
  context (input + output - 1 tokens), so nothing is ever preempted.
- A paged MLA cache (`paged_cache.py`): each layer stores only the compressed latent (C values) and
  the shared rope key (R values) per token, in fixed-size pages; a request owns a page list.
  Prefill chunks attend with expanded keys/values over the request's cached latents (SDPA);
  decode attends over the latents with the up-projections absorbed (`forward.py`).
- Decode-only iterations on one GPU replay CUDA graphs captured for batch-size and context-page
  buckets (`graphs.py`); mixed iterations, the CPU and EP2 run eagerly (EP dispatch moves split
  sizes to the host, which a graph cannot capture).
- Expert parallelism over W ranks with data-parallel attention: each rank runs its own engine and
  requests (request i goes to rank i mod W), MoE layers exchange tokens with `real/ep.py`; a rank
  with nothing to do runs one padding token so the all-to-alls stay in step.
- Greedy sampling. Random-init weights; nothing is downloaded.
- `--host-probe` (`hostspeed.py`): the host's speed measured right before and right after each run in
  the engine's process (host time per small kernel launch, per CUDA-graph replay, per pure-Python
  pass), into the run's serve_load row: the serving twin's `serve.host_launch_s`.

Torch-free at import: `records.py` and `plans.py` are read by machines without torch.
"""

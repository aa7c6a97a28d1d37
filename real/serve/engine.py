"""Continuous batching: the scheduler, one iteration's execution, and request bookkeeping.

Scheduling policy of one iteration (what the serving twin replays):
1. every running request that has finished its prompt decodes one token (decode rows first);
2. requests part-way through their prompt continue it, oldest first;
3. waiting requests are admitted first-come first-served while fewer than `max_running` run and
   the page pool holds pages for the request's whole context (input + output - 1 tokens);
steps 2-3 give each request a chunk of at most what is left of `token_budget` (chunked prefill).
A request whose prompt completes in this iteration samples its first token at the end of it; a
decode row samples its next one. A request finishes when it has `output_len` tokens, and its
pages go back to the pool. Every token of an iteration is stamped with the iteration's end time.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

import torch

from real.fp8 import BF16, Precision
from real.serve.forward import PrefillChunk, StepInputs, step_forward
from real.serve.graphs import DecodeGraphs, default_batch_buckets, default_page_buckets
from real.serve.hostpin import cpu_mhz, current_cpu
from real.serve.paged_cache import SCRATCH_PAGE, PagedMLACache


@dataclass(frozen=True)
class EngineConfig:
    """page_size tokens per page; num_pages in the pool (page 0 is scratch); token_budget tokens
    per iteration (decode rows + prefill chunk tokens); max_running concurrent requests;
    max_context tokens of one request (input + output); cuda_graphs for decode-only iterations
    (ignored on the CPU and with expert parallelism)."""

    page_size: int = 64
    num_pages: int = 2048
    token_budget: int = 2048
    max_running: int = 64
    max_context: int = 4096
    cuda_graphs: bool = True

    def __post_init__(self):
        if self.token_budget < self.max_running:
            raise ValueError(f"token_budget ({self.token_budget}) must be >= max_running "
                             f"({self.max_running}) so every running request decodes each iteration")


@dataclass
class Request:
    request_id: int
    arrival_s: float
    prompt: list[int]
    output_len: int
    pages: list[int] = field(default_factory=list)
    num_prefilled: int = 0  # prompt tokens whose latents are cached
    output: list[int] = field(default_factory=list)
    token_times_s: list[float] = field(default_factory=list)
    admitted_s: float = float("nan")
    first_token_iteration: int = -1
    finish_iteration: int = -1
    num_chunks: int = 0

    @property
    def input_len(self) -> int:
        return len(self.prompt)

    @property
    def prefill_done(self) -> bool:
        return self.num_prefilled == self.input_len

    @property
    def finished(self) -> bool:
        return len(self.output) >= self.output_len

    @property
    def context_tokens(self) -> int:
        """Cache rows the request needs in all: every prompt token and every output token but the last."""
        return self.input_len + self.output_len - 1


@dataclass
class IterationRecord:
    iteration: int
    start_s: float
    duration_s: float
    prefill_tokens: int
    prefill_seqs: int
    decode_seqs: int
    kv_tokens: int  # cached tokens attended over by all rows (decode contexts + chunk contexts)
    decode_kv_tokens: int
    max_kv_tokens: int  # the longest context in the batch (sets a graph's page bucket)
    waiting: int  # requests waiting for admission when the iteration was scheduled
    running: int  # requests admitted (prefilling or decoding) after scheduling
    graph_batch: int  # CUDA-graph batch bucket replayed; 0 = eager
    idle: bool = False  # an EP rank's padding iteration (no request of its own)
    # where the time went (engine.timing on): host_s from the iteration's start until every kernel
    # was launched (scheduling, inputs, launches; under EP also the waits for the all-to-all sizes),
    # the rest of duration_s waiting for the tokens; gpu_s between CUDA events recorded before the
    # first and after the last launch (NaN on CPU); the main thread's CPU at the start and end
    host_s: float = float("nan")
    gpu_s: float = float("nan")
    cpu_id: int = -1
    cpu_id_end: int = -1
    cpu_mhz: float = float("nan")
    sm_clock_mhz: float = float("nan")  # the GPU's SM clock read right after the iteration (NVML)
    clock_reasons: int = -1  # NVML's clocks event reasons bitmask then (1 = GPU idle, 4 = SW power cap, ...)


@dataclass
class Plan:
    decode: list[Request]
    prefill: list[tuple[Request, int]]  # (request, chunk tokens)

    @property
    def empty(self) -> bool:
        return not self.decode and not self.prefill


class Engine:
    """One rank's engine: its own requests, page pool and (without EP) CUDA graphs."""

    def __init__(self, model, cfg: EngineConfig, precision: Precision = BF16, clock=time.perf_counter):
        self.model, self.cfg, self.precision, self.clock = model, cfg, precision, clock
        spec = model.spec
        if cfg.max_context > model.cos_LR.shape[0]:
            raise ValueError(f"max_context {cfg.max_context} exceeds the model's rope table "
                             f"({model.cos_LR.shape[0]}); build the model with max_seq_len >= it")
        p = model.embed_YD.weight
        self.device = p.device
        self.cache = PagedMLACache(spec.num_layers, cfg.num_pages, cfg.page_size, spec.kv_lora_rank,
                                   spec.qk_rope_head_dim, dtype=p.dtype, device=p.device)
        self.ep = any(m.ep_group is not None for m in model.moe_layers())
        self.graphs: DecodeGraphs | None = None
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []  # admission order
        self.finished: list[Request] = []
        self.iterations: list[IterationRecord] = []
        self.t0 = 0.0
        # per-iteration host / GPU split and CPU readings (hostpin); off, an iteration is timed as before
        self.timing = False
        self._events = None
        self.sm_clock = None  # () -> MHz (real/telemetry.Telemetry.sm_clock_mhz), read per iteration with timing on
        self.clock_reasons = None  # () -> NVML clocks event reasons bitmask, likewise
        self.warmed_tokens = 0  # flat batch sizes 1.._warmed have run (warm_shapes)
        # per-iteration host counters (real/serve/stalltrace.HostCounters, --stall-trace): a snapshot before each
        # iteration, outside its timed window; None (the default) takes none
        self.counters = None

    # ---- setup -------------------------------------------------------------------------------
    @property
    def uses_graphs(self) -> bool:
        return self.cfg.cuda_graphs and self.device.type == "cuda" and not self.ep

    def capture_graphs(self) -> int:
        if not self.uses_graphs:
            return 0
        max_pages = self.cache.pages_for(self.cfg.max_context)
        self.graphs = DecodeGraphs(self.model, self.cache, self.precision,
                                   default_batch_buckets(self.cfg.max_running),
                                   default_page_buckets(max_pages))
        return self.graphs.capture()

    def warm_shapes(self, max_tokens: int) -> int:
        """Run one eager forward of every flat batch size 1..max_tokens not run yet (a prompt chunk
        written to the scratch page), so no later iteration is the first of its token count: the
        first forward of a new size pays a one-off host cost (library heuristics per GEMM shape),
        measured ~20% of a short eager iteration. Returns how many sizes were run."""
        dev, ps = self.device, self.cfg.page_size
        done = 0
        for n in range(self.warmed_tokens + 1, max_tokens + 1):
            scratch_T = torch.full((n,), SCRATCH_PAGE * ps, dtype=torch.long, device=dev)
            pages_P = torch.full((self.cache.pages_for(n),), SCRATCH_PAGE, dtype=torch.long, device=dev)
            inp = StepInputs(torch.zeros(n, dtype=torch.long, device=dev), torch.arange(n, device=dev), scratch_T, 0,
                             chunks=[PrefillChunk(0, n, 0, pages_P)],
                             logit_rows_N=torch.tensor([n - 1], dtype=torch.long, device=dev))
            step_forward(self.model, self.cache, inp, self.precision).tolist()
            done += 1
        self.warmed_tokens = max(self.warmed_tokens, max_tokens)
        return done

    def reset(self, t0: float) -> None:
        """Forget all requests and records (after a warm-up); times are measured from t0."""
        for r in self.running:
            self.cache.free(r.pages)
        self.waiting.clear()
        self.running, self.finished, self.iterations = [], [], []
        self.t0 = t0
        if self.counters is not None:
            self.counters.reset()

    # ---- requests ----------------------------------------------------------------------------
    def add(self, req: Request) -> None:
        if req.context_tokens + 1 > self.cfg.max_context:
            raise ValueError(f"request {req.request_id}: input {req.input_len} + output "
                             f"{req.output_len} exceeds max_context {self.cfg.max_context}")
        if self.cache.pages_for(req.context_tokens) > self.cfg.num_pages - 1:
            raise ValueError(f"request {req.request_id} needs more pages than the pool has")
        self.waiting.append(req)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    # ---- scheduling --------------------------------------------------------------------------
    def schedule(self) -> Plan:
        decode = [r for r in self.running if r.prefill_done]
        budget = self.cfg.token_budget - len(decode)
        prefill = []
        for r in self.running:
            if not r.prefill_done and budget > 0:
                n = min(r.input_len - r.num_prefilled, budget)
                prefill.append((r, n))
                budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.cfg.max_running:
            r = self.waiting[0]
            need = self.cache.pages_for(r.context_tokens)
            if need > self.cache.num_free_pages:
                break  # FCFS: the head waits for pages, nobody overtakes it
            self.waiting.popleft()
            r.pages = self.cache.allocate(need)
            r.admitted_s = self.clock() - self.t0
            self.running.append(r)
            n = min(r.input_len, budget)
            prefill.append((r, n))
            budget -= n
        return Plan(decode, prefill)

    # ---- execution ---------------------------------------------------------------------------
    def _eager_inputs(self, plan: Plan) -> StepInputs:
        cache, dev = self.cache, self.device
        tokens, positions, slots = [], [], []
        for r in plan.decode:
            pos = r.input_len + len(r.output) - 1  # the newest token, not yet cached
            tokens.append(r.output[-1])
            positions.append(pos)
            slots.append(cache.slot(r.pages, pos))
        chunks, logit_rows = [], list(range(len(plan.decode)))
        for r, n in plan.prefill:
            start = r.num_prefilled
            row = len(tokens)
            tokens.extend(r.prompt[start:start + n])
            positions.extend(range(start, start + n))
            slots.extend(cache.slot(r.pages, p) for p in range(start, start + n))
            used_pages = r.pages[:cache.pages_for(start + n)]
            chunks.append(PrefillChunk(row, n, start, torch.tensor(used_pages, dtype=torch.long, device=dev)))
            if start + n == r.input_len:
                logit_rows.append(row + n - 1)
        as_index = lambda xs: torch.tensor(xs, dtype=torch.long, device=dev)  # noqa: E731
        inp = StepInputs(as_index(tokens), as_index(positions), as_index(slots), len(plan.decode),
                         chunks=chunks, logit_rows_N=as_index(logit_rows))
        if plan.decode:
            width = max(cache.pages_for(r.input_len + len(r.output)) for r in plan.decode)
            table = torch.full((len(plan.decode), width), SCRATCH_PAGE, dtype=torch.long)
            for i, r in enumerate(plan.decode):
                used = r.pages[:cache.pages_for(r.input_len + len(r.output))]
                table[i, :len(used)] = torch.tensor(used)
            inp.block_table_BdM = table.to(dev)
            inp.seq_lens_Bd = as_index([r.input_len + len(r.output) for r in plan.decode])
        return inp

    def _run(self, plan: Plan) -> tuple[torch.Tensor, int]:
        """Next tokens (decode rows, then requests whose prompt completed; on the device, not yet
        waited for) and the graph bucket."""
        if self.graphs is not None and plan.decode and not plan.prefill:
            lens = [r.input_len + len(r.output) for r in plan.decode]
            bucket = self.graphs.bucket(len(plan.decode), max(self.cache.pages_for(n) for n in lens))
            if bucket is not None:
                out = self.graphs.replay(
                    bucket, [r.output[-1] for r in plan.decode], [n - 1 for n in lens],
                    [self.cache.slot(r.pages, n - 1) for r, n in zip(plan.decode, lens)],
                    [r.pages[:self.cache.pages_for(n)] for r, n in zip(plan.decode, lens)], lens)
                return out, bucket[0]
        return step_forward(self.model, self.cache, self._eager_inputs(plan), self.precision), 0

    def _timing_events(self):
        if self._events is None and self.device.type == "cuda":
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
        return self._events

    def step(self) -> IterationRecord | None:
        """Schedule and run one iteration; None when there is nothing to run."""
        waiting = len(self.waiting)
        cpu0 = current_cpu() if self.timing else -1
        if self.counters is not None:
            self.counters.mark(len(self.iterations))
        start = self.clock()
        plan = self.schedule()
        if plan.empty:
            return None
        events = self._timing_events() if self.timing else None
        if events:
            events[0].record()
        out, graph_batch = self._run(plan)
        launched = self.clock()
        if events:
            events[1].record()
        next_tokens = out.tolist()  # waits for the device
        end = self.clock()
        it = len(self.iterations)
        end_s = end - self.t0
        emitting = plan.decode + [r for r, n in plan.prefill if r.num_prefilled + n == r.input_len]
        decode_kv = [r.input_len + len(r.output) for r in plan.decode]
        chunk_kv = [r.num_prefilled + n for r, n in plan.prefill]
        rec = IterationRecord(it, start - self.t0, end - start, sum(n for _, n in plan.prefill),
                              len(plan.prefill), len(plan.decode), sum(decode_kv) + sum(chunk_kv),
                              sum(decode_kv), max(decode_kv + chunk_kv), waiting, len(self.running),
                              graph_batch)
        if self.timing:
            self._time(rec, launched - start, events, cpu0)
        for r, n in plan.prefill:
            r.num_prefilled += n
            r.num_chunks += 1
        for r, tok in zip(emitting, next_tokens):
            if not r.output:
                r.first_token_iteration = it
            r.output.append(int(tok))
            r.token_times_s.append(end_s)
        for r in [r for r in self.running if r.finished]:
            r.finish_iteration = it
            self.cache.free(r.pages)
            self.running.remove(r)
            self.finished.append(r)
        self.iterations.append(rec)
        return rec

    def _time(self, rec: IterationRecord, host_s: float, events, cpu0: int) -> None:
        """Fill the host / GPU split and the CPU readings of a finished iteration (after its end)."""
        rec.host_s = host_s
        if events:
            rec.gpu_s = events[0].elapsed_time(events[1]) / 1e3  # ms -> s; both have completed
        rec.cpu_id, rec.cpu_id_end = cpu0, current_cpu()
        rec.cpu_mhz = cpu_mhz(rec.cpu_id_end)
        if self.sm_clock is not None:
            rec.sm_clock_mhz = self.sm_clock()
        if self.clock_reasons is not None:
            rec.clock_reasons = self.clock_reasons()

    def idle_step(self) -> IterationRecord:
        """An EP rank with no request runs one padding decode row so the all-to-alls match."""
        dev = self.device
        cpu0 = current_cpu() if self.timing else -1
        events = self._timing_events() if self.timing else None
        if self.counters is not None:
            self.counters.mark(len(self.iterations))
        start = self.clock()
        if events:
            events[0].record()
        inp = StepInputs(torch.zeros(1, dtype=torch.long, device=dev),
                         torch.zeros(1, dtype=torch.long, device=dev),
                         torch.full((1,), SCRATCH_PAGE * self.cfg.page_size, dtype=torch.long, device=dev), 1,
                         torch.full((1, 1), SCRATCH_PAGE, dtype=torch.long, device=dev),
                         torch.ones(1, dtype=torch.long, device=dev))
        out = step_forward(self.model, self.cache, inp, self.precision)
        launched = self.clock()
        if events:
            events[1].record()
        out.tolist()
        end = self.clock()
        rec = IterationRecord(len(self.iterations), start - self.t0, end - start, 0, 0, 0, 0, 0, 0,
                              len(self.waiting), len(self.running), 0, idle=True)
        if self.timing:
            self._time(rec, launched - start, events, cpu0)
        self.iterations.append(rec)
        return rec

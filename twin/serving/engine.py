"""The request-level serving simulation: SimPy processes for arrivals and for each instance's
iteration loop. `env.now` is float seconds.

What an instance does each iteration (continuous batching, as vLLM / SGLang / TensorRT-LLM):
  1. admit waiting requests in arrival order (first come, first served, no overtaking) while their
     prompt fits the free KV cache (`kv_admission = 'reserve'`: their whole output too) and the
     running count stays within serve.batch (0 = memory only);
  2. before decoding, if the cache cannot hold one more step of every running request
     ('optimistic' admission), preempt the newest running requests: their KV is freed and they go
     back to the head of the queue to recompute prompt + generated tokens (vLLM's recompute);
  3. build the batch: every decoding request advances 1 + drafted x accepted tokens (MTP, as an
     expectation), and prompts take up to `token_budget` x attention groups tokens, the partly
     prefilled prompt first, the last one chunked (chunked prefill);
  4. the iteration takes IterationCosts.iteration_s (twin.serving.timing) of the batch; an instance
     woken from idle by an arrival starts it the engine's wake_s later (real/serve sleeps until
     the next arrival and wakes late); under ADOPT_HOST_STALLS an eager iteration also pays the pauses
     drawn for it from its host's measured pause rate and sizes (HostStalls);
  5. at its end, a prompt whose last chunk ran emits its first token (TTFT) and starts decoding;
     a request with all its tokens finishes (E2E) and frees its KV.

Co-located instances do all of this; disaggregated prefill instances do 1, 3 (prompts only) and 4,
then send the KV over the scale-out link to a decode instance (one GPU's NIC: bytes / achieved
bandwidth + latency), which admits it when its output fits ('reserve') and decodes. With
serve.prefill_instances = 0 the prefill pool is not simulated: each prompt is prefilled alone on
arrival (no queue).

Symmetry: the attention groups of one instance (DP attention) are taken as evenly loaded (DeepSeek
balances them), so an instance is simulated as one queue whose iteration is timed at its total
batch; instances are separate processes, requests go to them round-robin.

Cost per iteration is O(log n): decoding requests share one counter G of tokens produced per
request, so a request finishes when G reaches the value stored for it in a heap, and the summed
context of the running batch is kept as (sum of prompts - sum of G at join) + batch x G.
"""

from __future__ import annotations

import bisect
import collections
import functools
import heapq
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import simpy

from twin.core.serve_specs import ServeSpec, TrafficSpec
from twin.serving.first_launch import kernels, regions
from twin.serving.timing import IterationCosts, eager_warmth, new_bin_weight
from twin.serving.workload import Requests

EPS = 1e-9
MAX_RUN = 4096   # decode iterations run back to back in one timeout (bounds the per-run lists)

# (s23srvh, docs/notes/s23srvh_rule.md, committed before any figure under it) Sporadic host stalls of 10-50 ms on
# eager iterations (the s22ttft H100: 22 over ~7 s of eager iterations, none over ~15 s of graph replays) set a
# Poisson run's TTFT P99 there; the measured spread (multiplicative, from the fit host) carries none. Under the
# switch a scenario giving its host's measured pauses (serve.host_stall_rate_per_s, host_stall_sizes_s: the pause
# probe, real/serve/hostspeed.py) lengthens each eager iteration by the pauses drawn for it (HostStalls). Off: none.
ADOPT_HOST_STALLS = False
STALL_STREAM = 23   # the stalls' generator: seeded by (traffic seed, this), apart from the spread's draws

# (s29serve, docs/notes/s29serve_rule.md, committed before its judging records existed; off until that rule adopts it)
# An iteration that follows an idle of IDLE_WAKE_AFTER_S or more on its instance (the run's first: the engine idled
# before it, between runs) is "post-idle". Under the switch (a) a flat size the engine process met only in its warm pass
# between warm_shapes and the token budget (run_batch_sizes entries (group, size, "busy"):
# calibration.serve_load_validation.sizes_run_before) pays the table's first-met terms when first met on a post-idle
# iteration, and counts as met without a charge when first met mid-stream (the host's first-met stall hides under the
# queued GPU work there); (b) a post-idle iteration carrying prompt tokens pays the table's idle_prompt_s (fitted on
# the fitting runs' post-idle prompt steps: calibration/s29serve_fit.json). Off: neither (every warm-pass size met).
ADOPT_IDLE_WAKE = False
IDLE_WAKE_AFTER_S = 0.1   # calibration/s29serve_fit.json: the idle before a step from which the fitting runs' steps run long
BUSY_MET = "busy"         # the third element of a run_batch_sizes entry met only mid-stream under ADOPT_IDLE_WAKE
IDLE_WAKE_PROMPT_TERM = True   # ADOPT_IDLE_WAKE's part (b); off: part (a) alone (candidate I-a, the rule's amendment)

# (s30serve, docs/notes/s30serve_rule.md, committed before its judging records existed; off until that rule adopts it)
# Candidate P: the first-met cost of a flat size as the engine process pays it, measured by the probe
# real/serve/firstmet.py (fitting records; calibration.serve_first_met fits the constants per card and model). Every
# serving step starts with nothing queued on the GPU (the engine waits for each step's tokens), so a step's host work is
# exposed whatever came before: the probe times a prompt step's first run of a size the warm pass did not cover against
# the same size's repeat, after a 200 ms sleep and right after another step. Under the switch, a run whose replay is
# handed a FirstMetProbe (an element of run_batch_sizes) pays, on the first eager iteration that runs one of its sizes
# (the sizes between the warm pass and the token budget, which the twin in force counts met, less those earlier runs of
# the process ran), the probe's busy_s, or idle_s when the iteration follows an idle of IDLE_WAKE_AFTER_S or more; and
# a prompt iteration after such an idle pays post_idle_prompt_s (the probe's met-size steps after the sleep against
# those right after a step). Off, or without a probe record: nothing changes.
ADOPT_PROBED_FIRST_MET = False
# (s31look, docs/notes/s31look_rule.md, committed before its judging records existed) Candidate L: an exact flat size new
# to the engine process costs cuBLASLt's heuristics look-up (s30blas: gone with CUBLASLT_HEURISTICS_CACHE_CAPACITY=0),
# one per distinct dense GEMM shape whose row count is the size (real/serve/gemmshapes.py counts them per model: every
# layer after the first hits the cache), at a fixed cost per look-up that does not fade (the probe's later sizes,
# calibration.serve_lookup fit). Under the switch the same replay path as ADOPT_PROBED_FIRST_MET runs with a
# FirstMetProbe whose busy_s = idle_s = shapes x lookup_s and post_idle_prompt_s = 0 (calibration.serve_load_validation
# .lookup_charges), for every model with a shape count on a card with a fitted look-up. Off: nothing changes.
ADOPT_LOOKUP_PER_SHAPE = False
# (s31look "amendment 1", docs/notes/s31look_rule.md: VOID as a rule change, committed 20 s after the campaign that judges L
# had started; evidence only, off) under ADOPT_LOOKUP_PER_SHAPE the look-ups' charge as a host stall, paid where the table
# pays its own first-met stall (twin.serving.timing.exposed_stall_s: new_size_host_bound, new_size_backlog), not on
# every eager iteration. The candidate judged is L without it (the rule's commit, 1fa3a350).
LOOKUP_HOST_EXPOSED = False
# (s32cold, docs/notes/s32cold_rule.md, committed before its judging records existed; off until that rule adopts it)
# Candidate K: a warmed process's first prompt steps at sizes above its warm pass cost more the fewer such sizes it has
# met (the s32cold probe: host time in the GEMM calls, cuBLASLt's look-ups of a new row count and its kernels first
# used; not CUDA's module loading, not the allocator). Under the switch the replay path of ADOPT_PROBED_FIRST_MET runs
# with a FirstMetProbe whose busy_s = idle_s = shapes x shape_s and fade_sizes = h (calibration.serve_load_validation
# .cold_charges, calibration/s32cold_fit.json): the first eager iteration of one of its sizes pays busy_s x h / (h + n),
# n the probe's sizes the process met before (earlier runs, then this run's). Off: nothing changes.
ADOPT_COLD_SIZES = False
# (s32cold, evidence only, no rule: added after the guard screen showed set I's v3-slice-1l over-charged) under
# ADOPT_COLD_SIZES the charge as a host stall, paid as the table pays its own first-met stall (exposed_host_stall_s). Off.
COLD_HOST_EXPOSED = False
# (s32kern, docs/notes/s32kern_rule.md) Candidate C: a warmed one-GPU H200 process pays, on an eager iteration of flat
# size M, kernel_s per GEMM kernel the model's kernel map gives for M that the process has not launched yet (the warm-up
# loads' and the warm pass's sizes launched first), plus lookup_s where M is an exact size above the pass it had not
# run (calibration/s32kern_fit.json, from the s32cold probe's traced records alone). Off until the rule says adopt.
ADOPT_COLD_KERNELS = False
# (s32kern2, docs/notes/s32kern2_rule.md, committed before its judging records existed; off until that rule adopts it)
# Candidate C-kx: C-k (ADOPT_COLD_KERNELS with s32kern_fit.json) whose charge an eager iteration pays only as far as the
# host is its critical path: real/serve launches a whole forward and waits once at its end, so a first-use's host time
# hides behind the GPU work the forward's launches keep ahead of the host: exposed = max(0, charge - max(0, kernels_s -
# host_s)), kernels_s / host_s the engine table's own GPU and fixed launch terms of that iteration
# (twin.serving.timing.exposed_stall_s with the backlog, whatever the table's new_size flags). No fitted figure.
# Implies ADOPT_COLD_KERNELS.
ADOPT_COLD_KERNELS_EXPOSED = False
# (s33cold, docs/notes/s33cold_rule.md, committed before its judging records existed; off until that rule adopts it)
# Candidate S, the per-step form of the cold charge: a warmed one-GPU H200 process's eager iteration pays, for each flat
# size M it runs that the process never ran (not a warm-up size, not 1..W of its warm pass, not an earlier eager size of
# any run of the process), one look-up (lookup_s), plus kernel_s per GEMM kernel the model's kernel map gives for M that
# the process has not launched; the process's history carries across its runs. The same ColdKernels replay path as
# ADOPT_COLD_KERNELS with calibration/s33cold_fit.json's constants (fitted on the unprofiled fitting processes with the
# map's counts). Off: nothing changes.
ADOPT_COLD_STEPS = False


@dataclass(frozen=True)
class FirstMetProbe:
    """The probe's charges for one run's replay (seconds): `sizes`, (attention group, flat size) pairs the warm pass did
    not run but the twin in force counts met; `busy_s` / `idle_s` the first-met excess mid-stream / after an idle;
    `post_idle_prompt_s` a prompt step's excess after an idle (a size met or not)."""

    sizes: frozenset
    busy_s: float
    idle_s: float
    post_idle_prompt_s: float
    fade_sizes: float = 0.0   # (ADOPT_COLD_SIZES) > 0: a first-met charge x fade / (fade + the probe's sizes met before)


class ColdKernels:
    """(ADOPT_COLD_KERNELS) One run's first-used GEMM kernels (docs/notes/s32kern_rule.md): `kernels[M]` the kernel ids
    an eager iteration of flat size M launches (the model's kernel map; empty past its end), `met` the flat sizes the
    process ran before this run (the warm-up loads', the warm pass's, its earlier runs' eager ones), `kernel_s` per
    kernel first launched, `lookup_s` per exact size above the pass first run. An element of run_batch_sizes (it
    counts no size met for the table's terms); hashed by identity."""

    def __init__(self, kernels: tuple, met, kernel_s: float, lookup_s: float):
        self.kernels, self.met = kernels, frozenset(int(n) for n in met)
        self.kernel_s, self.lookup_s = float(kernel_s), float(lookup_s)
        self.launched = frozenset().union(*(self.of(n) for n in self.met))

    def of(self, size: int) -> frozenset:
        return self.kernels[size] if 0 <= size < len(self.kernels) else frozenset()


class HostStalls:
    """A host's pauses while launching eagerly: Poisson(rate_per_s x exposed seconds) of them an iteration, each
    of a size drawn with equal weight from the measured sizes_s."""

    every_iteration = False   # eager iterations only

    def __init__(self, rate_per_s: float, sizes_s, seed: int):
        self.rate_per_s = float(rate_per_s)
        self.sizes_s = np.asarray(sizes_s, dtype=float)
        self.rng = np.random.default_rng([seed, STALL_STREAM])

    def draw_s(self, exposed_s: float) -> float:
        """Seconds of pauses an eager iteration of `exposed_s` seconds pays (the sum of its draws; 0 mostly)."""
        n = int(self.rng.poisson(self.rate_per_s * exposed_s))
        if n == 0:
            return 0.0
        return float(self.sizes_s[self.rng.integers(0, len(self.sizes_s), n)].sum())


# (s24stall, docs/notes/s24stall_rule.md (c), committed before any figure under it) On the hosts that stall, the
# lost time comes in ~4 ms quanta at the pause probe's rate, on graph iterations as well as eager ones, in clusters
# (an eager stall of 10-30 ms is several quanta of one cluster in one long iteration). Under the switch (off) a host's
# measured pauses (the same inputs as ADOPT_HOST_STALLS) fall on each instance's busy-time axis in clusters, and every
# iteration pays those in its busy interval; ADOPT_HOST_STALLS's independent draws are then not used.
ADOPT_CLUSTERED_HOST_PAUSES = False
# the clusters' shape, calibration.serve_stall_causes.cluster_shape on session 23's two stalling H100 sets
# (h100/s23srvh_host2, h100/s23srvh_host3: 401 pauses in 71 clusters)
CLUSTER_MEAN_PAUSES = 5.65    # pauses a cluster holds, on average
CLUSTER_SPACING_S = 0.0123    # busy seconds between consecutive pauses of a cluster, on average


class ClusteredPauses:
    """A host's pauses on one instance's busy-time axis: clusters of N pauses (N geometric, mean CLUSTER_MEAN_PAUSES)
    Exp(CLUSTER_SPACING_S) apart, clusters Exp(g) apart with g set so the long-run rate is rate_per_s; each pause of
    a size drawn with equal weight from sizes_s. Every iteration pays the pauses in its busy interval."""

    every_iteration = True

    def __init__(self, rate_per_s: float, sizes_s, seed: int, instance: int = 0,
                 mean_pauses: float = CLUSTER_MEAN_PAUSES, spacing_s: float = CLUSTER_SPACING_S):
        self.sizes_s = np.asarray(sizes_s, dtype=float)
        self.rng = np.random.default_rng([seed, STALL_STREAM + 1, instance])
        self.mean_pauses, self.spacing_s = float(mean_pauses), float(spacing_s)
        self.gap_s = max(self.spacing_s, self.mean_pauses / float(rate_per_s) - (self.mean_pauses - 1) * self.spacing_s)
        self.left = 0          # pauses still to come in the current cluster after the last one
        self.opening = True    # the next pause opens a cluster
        self.to_next_s = float(self.rng.exponential(self.gap_s))   # busy seconds until the next pause

    def draw_s(self, busy_s: float) -> float:
        """Seconds of pauses falling in the next busy_s seconds of this instance's work."""
        total, left_s = 0.0, float(busy_s)
        while self.to_next_s <= left_s:
            left_s -= self.to_next_s
            if self.opening:   # this cluster's pauses after this one: N - 1, N geometric with mean mean_pauses
                self.left = int(self.rng.geometric(1.0 / self.mean_pauses)) - 1
            total += float(self.sizes_s[self.rng.integers(0, len(self.sizes_s))])
            self.opening = self.left == 0
            if self.opening:
                self.to_next_s = float(self.rng.exponential(self.gap_s))
            else:
                self.left -= 1
                self.to_next_s = float(self.rng.exponential(self.spacing_s))
        self.to_next_s -= left_s
        return total


def host_stalls(s: ServeSpec, seed: int, instance: int = 0) -> "HostStalls | ClusteredPauses | None":
    """The scenario's host pauses: ClusteredPauses under ADOPT_CLUSTERED_HOST_PAUSES, else HostStalls under
    ADOPT_HOST_STALLS; None when both are off or without a measured pause."""
    if s.host_stall_rate_per_s <= 0 or not s.host_stall_sizes_s:
        return None
    if ADOPT_CLUSTERED_HOST_PAUSES:
        return ClusteredPauses(s.host_stall_rate_per_s, s.host_stall_sizes_s, seed, instance)
    if not ADOPT_HOST_STALLS:
        return None
    return HostStalls(s.host_stall_rate_per_s, s.host_stall_sizes_s, seed)


@dataclass
class Records:
    """Per-request and per-iteration outcomes of a simulation (filled in by the engine)."""

    first_token_s: np.ndarray
    finish_s: np.ndarray
    preemptions: np.ndarray
    instance: np.ndarray
    arrival_s: np.ndarray                # closed-loop arrivals are written when released
    iterations: int = 0
    busy_s: float = 0.0                  # summed over instances
    prefill_busy_s: float = 0.0          # of which prompt work (marginal cost in mixed batches)
    transfer_bytes: float = 0.0
    in_system_integral: float = 0.0      # integral of requests in the system over time
    peak_kv_tokens: list = field(default_factory=list)     # per decode-capable instance
    kv_capacity_tokens: list = field(default_factory=list)
    peak_running: int = 0
    decode_token_steps: float = 0.0      # tokens produced by decode steps (requests x tokens per step)
    prefill_tokens_emitted: int = 0      # first tokens (one per completed prompt, recomputes included)
    trace: list = field(default_factory=list)   # (pool, instance, start_s, dur_s, decode_batch, prompt_tokens)


class Engine:
    """Builds the processes for one run; `run()` simulates until every request finished."""

    def __init__(self, reqs: Requests, s: ServeSpec, t: TrafficSpec, decode_costs: IterationCosts,
                 prefill_costs: IterationCosts | None, num_instances: int, kv_capacity_tokens: float,
                 transfer_s_per_token: float, transfer_latency_s: float, kv_bytes_per_token: float,
                 concurrency: int, trace_cap: int, run_batch_sizes=(), prompts_before: int = 0,
                 on_done: Callable[[int, int], None] | None = None):
        self.env = simpy.Environment()
        # on_done(finished, total): a progress report, about 200 times a run (it changes nothing simulated)
        self.on_done = on_done
        self.report_every = max(1, len(reqs) // 200)
        self.r, self.s, self.t = reqs, s, t
        # host-bound prompt iterations the engine process ran before this run (cold_prompt_iterations)
        self.prompts_before = int(prompts_before)
        # flat batch sizes the engine ran before: (attention group, size) pairs, a bare size for group 0
        self.run_batch_sizes = _sizes_run(run_batch_sizes, ADOPT_IDLE_WAKE)
        # (ADOPT_PROBED_FIRST_MET) the probe's charges: its sizes count met for the table's terms (as in force) and pay
        # the probe's first-met excess when first run, unless an earlier run of the process ran them
        probe = (next((x for x in run_batch_sizes if isinstance(x, FirstMetProbe)), None)
                 if ADOPT_PROBED_FIRST_MET or ADOPT_LOOKUP_PER_SHAPE or ADOPT_COLD_SIZES else None)
        self.first_met_probe = probe
        # (ADOPT_COLD_KERNELS) the run's first-used kernels and look-ups (None: none charged)
        self.cold_kernels = (next((x for x in run_batch_sizes if isinstance(x, ColdKernels)), None)
                             if ADOPT_COLD_KERNELS or ADOPT_COLD_KERNELS_EXPOSED or ADOPT_COLD_STEPS else None)
        self.probed_unmet = frozenset(probe.sizes) - self.run_batch_sizes if probe is not None else frozenset()
        if probe is not None:
            self.run_batch_sizes = self.run_batch_sizes | frozenset(probe.sizes)
        # (ADOPT_IDLE_WAKE) the warm pass's sizes met on a busy iteration only: charged when first met after an idle
        self.busy_met_sizes = frozenset((int(x[0]), int(x[1])) for x in run_batch_sizes
                                        if ADOPT_IDLE_WAKE and isinstance(x, tuple) and x[2:] == (BUSY_MET,)
                                        ) - self.run_batch_sizes
        n = len(reqs)
        # the engine's measured iteration spread (twin.serving.timing.IterationSpread), drawn from a
        # generator of its own seeded by the traffic seed: one run per seed
        self.rng = np.random.default_rng([t.seed, 15])
        # the host's measured pauses on eager iterations (ADOPT_HOST_STALLS; None: none)
        self.stalls = host_stalls(s, t.seed)
        self.rec = Records(np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, dtype=np.int64),
                           np.zeros(n, dtype=np.int64), reqs.arrival_s.copy())
        self.input_len = reqs.input_len.tolist()
        self.output_len = reqs.output_len.tolist()
        self.cached_len = reqs.cached_len.tolist()
        self.group = reqs.prefix_group.tolist()
        # attention-DP group of each request (serve.dp_routing = 'round_robin'): i mod dp, a
        # closed-loop client's next request on the group of its last
        self.dp_group = (np.arange(n) % s.attention_dp).tolist()
        self.trace_cap = trace_cap
        self.kv_bytes_per_token = kv_bytes_per_token
        self.transfer_s_per_token, self.transfer_latency_s = transfer_s_per_token, transfer_latency_s
        self.closed = bool(np.isnan(reqs.arrival_s).all())   # closed loop: arrivals are released by finishes
        self.concurrency = min(concurrency, n) if self.closed else 0
        self.next_closed = self.concurrency
        self.in_system = 0
        self.last_change_s = 0.0
        self.done = 0
        self.all_done = self.env.event()
        disagg = s.disaggregated
        self.decoders = [Instance(self, i, decode_costs, kv_capacity_tokens, prefill=not disagg, decode=True)
                         for i in range(num_instances)]
        self.prefillers = []
        if disagg and s.prefill_instances:
            self.prefillers = [Instance(self, i, prefill_costs, math.inf, prefill=True, decode=False)
                               for i in range(s.prefill_instances)]
        self.solo_prefill = prefill_costs if disagg and not s.prefill_instances else None
        self._rr_decode = 0
        # can work reach a decoding instance from outside while it runs? (other instances' finishes
        # releasing closed-loop requests, KV transfers from the prefill pool)
        self.outside_work = disagg or (self.closed and num_instances > 1)
        self._solo_s: dict[tuple[int, int], float] = {}
        self.next_arrival_s = math.inf if self.closed else float(reqs.arrival_s[0])   # open loop: known ahead
        self._rr_prefill = 0

    # -- bookkeeping --------------------------------------------------------------------------
    def _count(self, delta: int) -> None:
        now = self.env.now
        self.rec.in_system_integral += self.in_system * (now - self.last_change_s)
        self.last_change_s = now
        self.in_system += delta

    def arrive(self, rid: int) -> None:
        """Request `rid` enters the system now."""
        self._count(+1)
        if self.prefillers:
            inst = self.prefillers[self._rr_prefill]
            self._rr_prefill = (self._rr_prefill + 1) % len(self.prefillers)
            inst.enqueue(rid)
        elif self.solo_prefill is not None:
            key = (self.input_len[rid], self.cached_len[rid])
            pre_s = self._solo_s.get(key)
            if pre_s is None:
                span = key[0] + key[1]
                pre_s = self._solo_s[key] = self.solo_prefill.iteration_s(0, 0.0, key[0] - key[1], span, prefix_tokens=key[1])[0]
            self.rec.prefill_busy_s += pre_s
            ev = self.env.timeout(pre_s)
            ev.callbacks.append(lambda _ev, rid=rid: self.prefilled(rid))
        else:
            self.decoders[rid % len(self.decoders)].enqueue(rid)

    def prefilled(self, rid: int) -> None:
        """Disaggregated: the prompt of `rid` is done (first token now); its KV moves to a decoder."""
        self.rec.first_token_s[rid] = self.env.now
        if self.output_len[rid] <= 1:
            self.finish(rid)
            return
        inst = self.decoders[self._rr_decode]
        self._rr_decode = (self._rr_decode + 1) % len(self.decoders)
        if not self.s.kv_transfer:
            inst.enqueue(rid)
            return
        tokens = self.input_len[rid]
        self.rec.transfer_bytes += tokens * self.kv_bytes_per_token
        ev = self.env.timeout(tokens * self.transfer_s_per_token + self.transfer_latency_s)
        ev.callbacks.append(lambda _ev, rid=rid, inst=inst: inst.enqueue(rid))

    def finish(self, rid: int, inst: "Instance | None" = None) -> None:
        """Request `rid` is done now; a closed loop releases its successor (on the same attention
        group), which `inst` (the instance it finished on) spends issue time on before its next
        iteration (IterationCosts.issue_s: real/serve's client issues in the engine's thread)."""
        self.rec.finish_s[rid] = self.env.now
        self._count(-1)
        self.done += 1
        if self.on_done is not None and (self.done % self.report_every == 0 or self.done == len(self.input_len)):
            self.on_done(self.done, len(self.input_len))
        if self.closed and self.next_closed < len(self.input_len):
            nxt = self.next_closed
            self.next_closed += 1
            self.dp_group[nxt] = self.dp_group[rid]
            self.rec.arrival_s[nxt] = self.env.now
            if inst is not None:
                inst.issued(self.dp_group[rid], self.input_len[nxt])
            self.arrive(nxt)
        if self.done == len(self.input_len) and not self.all_done.triggered:
            self.all_done.succeed()

    def _arrivals(self):
        arrival = self.r.arrival_s
        now = 0.0
        for rid in range(len(arrival)):
            a = float(arrival[rid])
            if a > now:
                yield self.env.timeout(a - now)
                now = a
            self.next_arrival_s = float(arrival[rid + 1]) if rid + 1 < len(arrival) else math.inf
            self.arrive(rid)

    def run(self) -> Records:
        if self.closed:
            for rid in range(self.concurrency):
                self.rec.arrival_s[rid] = 0.0
                self.arrive(rid)
        else:
            self.env.process(self._arrivals())
        for inst in self.prefillers + self.decoders:
            self.env.process(inst.loop())
        self.env.run(until=self.all_done)
        self._count(0)
        for inst in self.decoders:
            self.rec.peak_kv_tokens.append(inst.peak_kv)
            self.rec.kv_capacity_tokens.append(inst.kv_capacity)
        return self.rec


class GroupQueues:
    """The waiting requests of round-robin DP groups: one FIFO per group (the deque interface the
    instance uses: truthiness, length, append, appendleft)."""

    def __init__(self, groups: int, group_of: list):
        self.queues = [deque() for _ in range(groups)]
        self.group_of = group_of
        self.n = 0

    def __bool__(self) -> bool:
        return self.n > 0

    def __len__(self) -> int:
        return self.n

    def append(self, rid: int) -> None:
        self.queues[self.group_of[rid]].append(rid)
        self.n += 1

    def appendleft(self, rid: int) -> None:
        self.queues[self.group_of[rid]].appendleft(rid)
        self.n += 1

    def popleft(self, g: int) -> int:
        self.n -= 1
        return self.queues[g].popleft()


def _sizes_run(run_batch_sizes, idle_wake: bool) -> frozenset:
    """Engine.run_batch_sizes: the (attention group, size) pairs of `run_batch_sizes` (a bare size: group 0), less the
    warm pass's busy-only sizes (under ADOPT_IDLE_WAKE), the probe and the kernel map (ColdKernels). (s32ci) A run's seeded replays pass one
    frozenset of a thousand sizes: its pairs are made once (_sizes_run_of)."""
    try:
        return _sizes_run_of(run_batch_sizes, idle_wake)
    except TypeError:   # unhashable (a list): made each time
        return _sizes_run_of.__wrapped__(run_batch_sizes, idle_wake)


@functools.lru_cache(maxsize=16)
def _sizes_run_of(run_batch_sizes, idle_wake: bool) -> frozenset:
    return frozenset((int(x[0]), int(x[1])) if isinstance(x, tuple) else (0, int(x)) for x in run_batch_sizes
                     if not (idle_wake and isinstance(x, tuple) and x[2:] == (BUSY_MET,))
                     and not isinstance(x, (FirstMetProbe, ColdKernels)))


class _Draws:
    """`n` uniform draws of a generator, drawn as they are used (s32ci: a decode run draws one per step it may run, up
    to MAX_RUN, and mostly runs a few): draw i is rng.random(n).tolist()[i], and finish() leaves the generator where
    rng.random(n) leaves it (PCG64 takes one 64-bit step a double: the unused ones are skipped by advance). A bit
    generator without advance draws all n at once."""

    __slots__ = ("rng", "n", "u")

    def __init__(self, rng: np.random.Generator, n: int):
        self.rng, self.n = rng, n
        self.u: list[float] = [] if hasattr(rng.bit_generator, "advance") else rng.random(n).tolist()

    def at(self, i: int) -> float:
        u = self.u
        if i >= len(u):
            u += self.rng.random(min(max(16, 2 * len(u)), self.n - len(u))).tolist()
        return u[i]

    def finish(self) -> None:
        left = self.n - len(self.u)
        if left > 0:
            self.rng.bit_generator.advance(left)
            self.n = len(self.u)


class Instance:
    """One serving instance: a queue, a prefill FIFO, a decoding set, and its iteration loop.

    KV accounting in tokens: `used` = prompts admitted for prefill (whole, from admission) + the
    contexts of decoding requests (prompt + tokens produced). Admission checks `committed`: `used`
    with 'optimistic' admission; with 'reserve' (and on disaggregated decoders) every admitted
    request's prompt + remaining output, constant from admission to finish."""

    def __init__(self, eng: Engine, index: int, costs: IterationCosts, kv_capacity: float, prefill: bool, decode: bool):
        self.eng, self.index, self.costs = eng, index, costs
        # the host's pauses (ADOPT_HOST_STALLS: the engine's one generator; ADOPT_CLUSTERED_HOST_PAUSES: this
        # instance's own busy-time axis)
        self.stalls = (host_stalls(eng.s, eng.t.seed, 2 * index + (0 if decode else 1))
                       if isinstance(eng.stalls, ClusteredPauses) else eng.stalls)
        self.kv_capacity = kv_capacity
        self.does_prefill, self.does_decode = prefill, decode
        self.pool = "decode" if decode and not prefill else ("prefill" if prefill and not decode else "colocated")
        self.reserve = eng.s.kv_admission == "reserve" or not prefill
        self.waiting: deque[int] = deque()
        self.prefilling: deque[int] = deque()   # admitted, prompt not done (FIFO)
        self.prefill_left: dict[int, int] = {}  # prompt tokens still to compute
        self.prefill_span0: dict[int, int] = {} # tokens before the next chunk (cached + computed)
        self.generated: dict[int, int] = {}     # tokens produced before the current prefill (preempted requests)
        self.heap: list[tuple[float, int, int]] = []   # (G at which it finishes, epoch, rid)
        self.epoch: dict[int, int] = {}
        self.join: dict[int, tuple[float, float]] = {}  # rid -> (G at join, context at join)
        self.order: list[int] = []              # decoding requests, oldest first (preemption takes the newest)
        self.ctx_heap: list[tuple[float, int, int]] = []   # (-(context at join - G at join), epoch, rid): the longest
        self.batch = 0
        self.G = 0.0
        self.ctx_base = 0.0                     # sum over decoding requests of (context at join - G at join)
        self.kv_prefill = 0.0
        self.kv_fixed = 0.0                     # 'reserve': sum of prompt + remaining output of admitted requests
        self.peak_kv = 0.0
        # MTP: a step writes the KV of every drafted token, accepted or not, so a reservation keeps
        # that many lookahead slots per request (vLLM's num_lookahead_slots)
        self.lookahead = eng.s.mtp_draft_tokens
        self.tokens_per_step = 1.0 + sum(eng.s.mtp_acceptance_frac ** (i + 1) for i in range(eng.s.mtp_draft_tokens))
        self.seen_prefix: set[int] = set()
        self.wake: simpy.Event | None = None
        # (attention group, flat batch size) and (group, size bin) this instance has run eagerly
        # (engine terms new_size_s, new_bin_s)
        self.size_bin = costs.size_bin_tokens
        self.sizes = set(eng.run_batch_sizes) if costs.tracks_sizes else None
        self.size_bins = {(g, n // self.size_bin) for g, n in eng.run_batch_sizes}
        self.bins_met = collections.Counter(g for g, _ in self.size_bins)   # per group: new_bin_fade_bins
        self.sizes_met = collections.Counter(g for g, _ in (self.sizes or ()))   # per group: cold_sizes
        self.bin_fade = (costs.engine or {}).get("new_bin_fade_bins", 0.0)
        # (s16srv) new_bin_s per GEMM kernel region first met instead of per 16-token bin (new_bin_regions):
        # per group the (weight, region) pairs launched, from the sizes run before and the captured graphs'
        self.by_regions = (costs.engine or {}).get("new_bin_regions", 0.0) > 0
        # (s17srv) or per GPU kernel first launched, on the GPU's kernel map (new_bin_kernels)
        by_kernels = (costs.engine or {}).get("new_bin_kernels", 0.0) > 0
        self.launches = functools.partial(kernels, costs.gpu.name) if by_kernels else regions
        self.by_regions = self.by_regions or by_kernels
        self.regions_met: dict[int, set] = {}
        if self.by_regions:   # (s32ci) read only under new_bin_regions / new_bin_kernels: kept only there
            for g, n in eng.run_batch_sizes:
                self._met_regions(g).update(self.launches(n))
        # (ADOPT_IDLE_WAKE) the end of this instance's last iteration (-inf: idle before the run) and the sizes met
        # only mid-stream so far unmet; a post-idle prompt iteration's extra seconds (the table's idle_prompt_s)
        self.last_end = -math.inf
        self.busy_met = set(eng.busy_met_sizes) if self.sizes is not None else set()
        self.idle_prompt_s = ((costs.engine or {}).get("idle_prompt_s", 0.0)
                              if ADOPT_IDLE_WAKE and IDLE_WAKE_PROMPT_TERM else 0.0)
        # (ADOPT_PROBED_FIRST_MET) the probe's sizes this instance has not run yet, and its charges
        self.probe = eng.first_met_probe
        self.probed_unmet = set(eng.probed_unmet)
        # (ADOPT_COLD_SIZES) the probe's sizes the process met before this run (its earlier runs'), then this run's
        self.probed_met = len(self.probe.sizes) - len(self.probed_unmet) if self.probe is not None else 0
        # (ADOPT_COLD_KERNELS) the kernels this process has launched and the sizes it has run, then this run's
        self.cold = eng.cold_kernels
        self.cold_launched = set(self.cold.launched) if self.cold is not None else set()
        self.cold_met = set(self.cold.met) if self.cold is not None else set()
        # graph iterations since the last eager one (cold_eager_s; the first eager iteration is cold)
        self.cold_eager_after = costs.cold_eager_after
        self.graphs_since_eager = math.inf
        self.tracks_warmth = costs.tracks_warmth   # (ADOPT_EAGER_WARMTH) counted for the eager host's warmth too
        # (s18srv) decode-only iterations since the last prompt iteration (post_prompt_s; none before the first)
        self.post_prompt_after = costs.post_prompt_after
        self.since_prompt = math.inf
        # (s19srv2) host-bound prompt iterations the engine process ran before (the run's earlier runs, then
        # this instance's own): the share of cold_prompt_s its next one pays (warmup_weight)
        self.warms_prompts = costs.warms_prompts
        self.prompts_before = eng.prompts_before
        self.budget = eng.s.token_budget * eng.s.attention_dp
        # closed-loop successors issued since the last iteration, per attention group (issued())
        self.issue_requests: collections.Counter = collections.Counter()
        self.issue_tokens: collections.Counter = collections.Counter()
        # round-robin DP groups: per group a queue, decoding and prefilling counts, KV reservation
        dp = eng.s.attention_dp
        self.rr = eng.s.dp_routing == "round_robin" and dp > 1
        self.dp = dp
        if self.rr:
            self.waiting = GroupQueues(dp, eng.dp_group)
            self.dec_g = [0] * dp
            self.pre_g = [0] * dp
            self.kv_g = [0.0] * dp

    def issued(self, group: int, prompt_tokens: int) -> None:
        """A closed-loop successor of `prompt_tokens` issued by `group`'s client after this iteration."""
        self.issue_requests[group] += 1
        self.issue_tokens[group] += prompt_tokens

    # -- queue and KV -----------------------------------------------------------------------
    def enqueue(self, rid: int, front: bool = False) -> None:
        (self.waiting.appendleft if front else self.waiting.append)(rid)
        if self.wake is not None and not self.wake.triggered:
            self.wake.succeed()

    def kv_used(self) -> float:
        return self.kv_prefill + self.ctx_base + self.batch * self.G

    def kv_committed(self) -> float:
        return self.kv_fixed if self.reserve else self.kv_used()

    def prompt_tokens(self, rid: int) -> int:
        return self.eng.input_len[rid] + self.generated.get(rid, 0)

    def _remaining_out(self, rid: int) -> int:
        return self.eng.output_len[rid] - self.generated.get(rid, 0)

    # -- admission ----------------------------------------------------------------------------
    def _admit(self) -> None:
        if self.rr:
            self._admit_groups()
            return
        s = self.eng.s
        cap_running = s.batch if s.batch else math.inf
        while self.waiting:
            rid = self.waiting[0]
            if self.batch + len(self.prefilling) >= cap_running:
                break
            prompt = self.prompt_tokens(rid)
            need = prompt + (self._remaining_out(rid) + self.lookahead if self.reserve else 0)
            if self.kv_committed() + need > self.kv_capacity + EPS:
                break
            self.waiting.popleft()
            if self.reserve:
                self.kv_fixed += prompt + self._remaining_out(rid) + self.lookahead
            if not self.does_prefill:          # a decoder receiving a prefilled request
                self._start_decode(rid, prompt)
                continue
            cached = self._cached(rid)
            self.prefilling.append(rid)
            self.prefill_left[rid] = prompt - cached
            self.prefill_span0[rid] = cached
            self.kv_prefill += prompt

    def _admit_groups(self) -> None:
        """Round-robin DP groups: each group admits its own queue first come first served, within
        its running cap (batch / dp) and its share of the KV cache (reserved for the whole request)."""
        s, dp = self.eng.s, self.dp
        cap_running = s.batch / dp if s.batch else math.inf
        cap_kv = self.kv_capacity / dp
        for g, q in enumerate(self.waiting.queues):
            while q:
                rid = q[0]
                if self.dec_g[g] + self.pre_g[g] >= cap_running:
                    break
                prompt = self.prompt_tokens(rid)
                need = prompt + self._remaining_out(rid) + self.lookahead
                if self.kv_g[g] + need > cap_kv + EPS:
                    break
                self.waiting.popleft(g)
                self.kv_g[g] += need
                self.kv_fixed += need if self.reserve else 0.0
                if not self.does_prefill:
                    self._start_decode(rid, prompt)
                    continue
                cached = self._cached(rid)
                self.prefilling.append(rid)
                self.pre_g[g] += 1
                self.prefill_left[rid] = prompt - cached
                self.prefill_span0[rid] = cached
                self.kv_prefill += prompt

    def _cached(self, rid: int) -> int:
        eng = self.eng
        if self.generated.get(rid):
            return 0                            # recompute after preemption: all of it
        cached = eng.cached_len[rid]
        g = eng.group[rid]
        if g >= 0:
            shared = min(eng.t.shared_prefix_tokens, eng.input_len[rid] - 1)
            if g in self.seen_prefix:
                cached = max(cached, shared)
            else:
                self.seen_prefix.add(g)
        return cached

    def _release(self, rid: int) -> None:
        if self.rr:
            self.kv_g[self.eng.dp_group[rid]] -= self.prompt_tokens(rid) + self._remaining_out(rid) + self.lookahead
        if self.reserve:
            self.kv_fixed -= self.prompt_tokens(rid) + self._remaining_out(rid) + self.lookahead

    def _start_decode(self, rid: int, context: int) -> None:
        left = self.eng.output_len[rid] - 1 - self.generated.get(rid, 0)
        if left <= 0:
            self._release(rid)
            self.eng.finish(rid, self)
            return
        ep = self.epoch.get(rid, 0) + 1
        self.epoch[rid] = ep
        self.join[rid] = (self.G, context - self.G)
        heapq.heappush(self.heap, (self.G + left - EPS, ep, rid))
        heapq.heappush(self.ctx_heap, (-(context - self.G), ep, rid))
        self.order.append(rid)
        self.batch += 1
        if self.rr:
            self.dec_g[self.eng.dp_group[rid]] += 1
        self.ctx_base += context - self.G

    def _stop_decode(self, rid: int) -> float:
        """Take a request out of the decoding set; returns the tokens it produced there."""
        g0, base = self.join.pop(rid)
        self.batch -= 1
        if self.rr:
            self.dec_g[self.eng.dp_group[rid]] -= 1
        self.ctx_base -= base
        self.epoch[rid] += 1                     # its heap entry is now stale
        return self.G - g0

    def max_ctx(self) -> float:
        """The longest context of the decoding set (its page-table width)."""
        h = self.ctx_heap
        while h and (h[0][2] not in self.join or self.epoch.get(h[0][2]) != h[0][1]):
            heapq.heappop(h)
        return (-h[0][0] + self.G) if h else 0.0

    def _preempt_for_growth(self, growth: float) -> None:
        """'optimistic': free the newest decoding requests until one more step fits."""
        eng = self.eng
        while self.batch and self.kv_used() + growth * self.batch > self.kv_capacity + EPS:
            rid = self.order.pop()
            if rid not in self.join:
                continue                          # finished already
            if self.rr:                            # its group's KV reservation goes back with it
                self.kv_g[eng.dp_group[rid]] -= self.prompt_tokens(rid) + self._remaining_out(rid) + self.lookahead
            produced = self._stop_decode(rid)
            gen = self.generated.get(rid, 0) + 1 + int(produced + EPS)   # the prefill's token + decoded ones
            self.generated[rid] = min(gen, eng.output_len[rid] - 1)
            eng.rec.preemptions[rid] += 1
            self.enqueue(rid, front=True)

    # -- the loop -------------------------------------------------------------------------------
    def loop(self):
        eng, env, s = self.eng, self.eng.env, self.eng.s
        rec = eng.rec
        costs = self.costs
        tps = self.tokens_per_step
        trace = rec.trace
        optimistic = not self.reserve
        while True:
            if self.issue_requests:               # the client issued successors in the engine's thread
                wait = max(costs.issue_s(n, self.issue_tokens[g]) for g, n in self.issue_requests.items())
                self.issue_requests.clear()
                self.issue_tokens.clear()
                if wait > 0.0:
                    yield env.timeout(wait)
            if self.waiting:
                self._admit()
            if not self.batch and not self.prefilling:
                self.wake = env.event()
                yield self.wake
                self.wake = None
                if costs.wake_s > 0.0:          # the engine slept until the arrival and wakes late
                    yield env.timeout(costs.wake_s)
                continue
            if self.batch and not self.prefilling and not self.waiting:
                yield from self._decode_run(tps)
                continue
            chunk: list[tuple[int, int]] = []
            n_chunks = 0                          # chunks the engine terms count (see the round-robin branch)
            prompt_tokens = 0
            span_weighted = 0.0
            pairs = 0.0
            prefix = 0                            # cached tokens the chunks attend over (latents expanded)
            busiest = 0.0                         # round-robin groups: the most prompt tokens of one group
            if self.prefilling and self.rr:
                counts = s.token_budget_counts_decode and s.mixed_batches
                left = [s.token_budget - (self.dec_g[g] if counts else 0) for g in range(self.dp)]
                for rid in self.prefilling:
                    g = eng.dp_group[rid]
                    if left[g] <= 0:
                        continue
                    take = min(self.prefill_left[rid], left[g])
                    left[g] -= take
                    chunk.append((rid, take))
                    prompt_tokens += take
                    span_weighted += take * (take + 2 * self.prefill_span0[rid])
                    pairs += take * (take + self.prefill_span0[rid])
                    prefix += self.prefill_span0[rid]
                if chunk:
                    per = [0] * self.dp
                    per_chunks = [0] * self.dp
                    per_pairs = [0.0] * self.dp
                    for rid, take in chunk:
                        g = eng.dp_group[rid]
                        per[g] += take
                        per_chunks[g] += 1
                        per_pairs[g] += take * (take + self.prefill_span0[rid])
                    busiest = max(per)
                    # each group launches and scores its own chunks, the groups side by side: the
                    # engine's per-chunk and per-pair terms count the busiest group's
                    n_chunks, pairs = max(per_chunks), max(per_pairs)
            elif self.prefilling:
                budget = self.budget - (self.batch if s.token_budget_counts_decode and s.mixed_batches else 0)
                for rid in self.prefilling:
                    if budget <= 0:
                        break
                    take = min(self.prefill_left[rid], budget)
                    budget -= take
                    chunk.append((rid, take))
                    prompt_tokens += take
                    span_weighted += take * (take + 2 * self.prefill_span0[rid])
                    pairs += take * (take + self.prefill_span0[rid])
                    prefix += self.prefill_span0[rid]
            if not self.rr:
                n_chunks = len(chunk)
            decode_now = self.batch if (not chunk or s.mixed_batches) else 0
            if decode_now and optimistic:
                self._preempt_for_growth(tps)
                decode_now = self.batch
            ctx = (self.ctx_base + self.batch * self.G) / self.batch if self.batch else 0.0
            span = span_weighted / prompt_tokens if prompt_tokens else 0.0
            if not decode_now and not prompt_tokens:
                continue                          # everything was preempted: admit again
            # lockstep groups: timed as if every group carried the busiest one's rows and prompt
            b_time = self.dp * max(self.dec_g) if self.rr and decode_now else decode_now
            p_time = self.dp * busiest if self.rr else prompt_tokens
            width_ctx = self.max_ctx() if decode_now else 0.0
            if self.rr and self.sizes is not None:   # each group's own flat size (an idle one runs a padding row)
                per_g = [0] * self.dp
                for rid, take in chunk:
                    per_g[eng.dp_group[rid]] += take
                sizes = [(self.dec_g[g] if decode_now else 0) + per_g[g] or 1 for g in range(self.dp)]
            else:
                sizes = [decode_now + prompt_tokens]
            cold = (max(costs.cold_weight(self.sizes_met[g]) for g in range(len(sizes)))
                    if self.sizes is not None and prompt_tokens else 0.0)   # before this iteration's sizes count
            prefix_tokens = prefix * p_time / prompt_tokens if prompt_tokens else 0.0
            if self.warms_prompts and prompt_tokens:   # (s19srv2) the prompt path warming with host-bound prompt work
                cold = costs.warmup_weight(self.prompts_before)
                self.prompts_before += costs.prompt_host_bound(b_time, ctx, p_time, span, width_ctx, prefix_tokens)
            post_idle = ADOPT_IDLE_WAKE and env.now - self.last_end >= IDLE_WAKE_AFTER_S
            if self.busy_met:
                self._meet_busy(sizes, post_idle)
            new_size, new_bin = self._new_size(sizes, b_time, p_time, width_ctx)
            # (ADOPT_EAGER_WARMTH) the eager host work's factor after the graph replays since the last eager step
            warmth = eager_warmth(self.graphs_since_eager) if self.tracks_warmth else 1.0
            cold_eager = (self._eager_step(costs.is_eager(b_time, p_time, width_ctx), 1) and bool(self.cold_eager_after)
                          if self.cold_eager_after or self.tracks_warmth else False)
            post_prompt = not prompt_tokens and self._post_prompt_flags(1)[0]
            self.since_prompt = 0 if prompt_tokens else self.since_prompt + 1
            dur, pre_s = costs.iteration_s(b_time, ctx, p_time, span, width_ctx, n_chunks, pairs, prefix_tokens,
                                           new_size, new_bin, cold, cold_eager, post_prompt, warmth)
            eager_now = costs.is_eager(b_time, p_time, width_ctx) if costs.loop_s != costs.graph_loop_s or eng.stalls is not None else True
            if costs.spread is not None:
                loop = costs.loop_of(eager_now)
                body = dur - loop
                r = costs.spread.ratio(prompt_tokens > 0, body, float(eng.rng.random()))
                dur, pre_s = loop + body * r, pre_s * r
            stalls = self.stalls
            if stalls is not None and (eager_now or stalls.every_iteration):
                dur += stalls.draw_s(dur)
            if post_idle and prompt_tokens and self.idle_prompt_s > 0.0:   # (ADOPT_IDLE_WAKE) the prompt step after idle
                dur += self.idle_prompt_s
                pre_s += self.idle_prompt_s
            if self.probe is not None:   # (ADOPT_PROBED_FIRST_MET) the probe's measured charges
                extra = self._probe_charge(sizes, prompt_tokens, costs.is_eager(b_time, p_time, width_ctx),
                                           env.now - self.last_end >= IDLE_WAKE_AFTER_S)
                if not ADOPT_PROBED_FIRST_MET and ((ADOPT_LOOKUP_PER_SHAPE and LOOKUP_HOST_EXPOSED)
                                                   or (ADOPT_COLD_SIZES and COLD_HOST_EXPOSED)):
                    # (s31look amendment) the look-ups are a host stall: paid as the table pays its own first-met stall
                    extra = costs.exposed_host_stall_s(extra, b_time, ctx, p_time, span, width_ctx, prefix_tokens)
                dur += extra
                pre_s += extra if prompt_tokens else 0.0
            if self.cold is not None and costs.is_eager(b_time, p_time, width_ctx):   # (ADOPT_COLD_KERNELS)
                extra = self._cold_kernel_charge(sizes)
                if ADOPT_COLD_KERNELS_EXPOSED and extra > 0.0:   # (s32kern2) only where the host is the critical path
                    extra = costs.exposed_kernel_charge_s(extra, b_time, ctx, p_time, span, width_ctx, prefix_tokens)
                dur += extra
                pre_s += extra if prompt_tokens else 0.0
            kv_now = self.kv_used() + decode_now * tps
            if kv_now > self.peak_kv:
                self.peak_kv = kv_now
            start = env.now
            yield env.timeout(dur)
            self.last_end = env.now
            rec.iterations += 1
            rec.busy_s += dur
            rec.prefill_busy_s += pre_s
            rec.decode_token_steps += decode_now * tps
            if len(trace) < eng.trace_cap:
                trace.append((self.pool, self.index, start, dur, decode_now, prompt_tokens))
            if decode_now:
                self.G += tps
            running = self.batch + len(self.prefilling)
            if running > rec.peak_running:
                rec.peak_running = running
            # prompts whose last chunk ran: first token now
            for rid, take in chunk:
                left = self.prefill_left[rid] - take
                if left > 0:
                    self.prefill_left[rid] = left
                    self.prefill_span0[rid] += take
                    continue
                self.prefilling.remove(rid) if self.rr else self.prefilling.popleft()   # FIFO (per group)
                if self.rr:
                    self.pre_g[eng.dp_group[rid]] -= 1
                del self.prefill_left[rid], self.prefill_span0[rid]
                prompt = self.prompt_tokens(rid)
                self.kv_prefill -= prompt
                rec.prefill_tokens_emitted += 1
                if math.isnan(rec.first_token_s[rid]):
                    rec.first_token_s[rid] = env.now
                if not self.does_decode:
                    self._release(rid)
                    eng.prefilled(rid)
                    continue
                self._start_decode(rid, prompt)
            self._finish_due()

    def _probe_charge(self, sizes: list[int], prompt_tokens: float, eager: bool, post_idle: bool) -> float:
        """(ADOPT_PROBED_FIRST_MET) This iteration's extra seconds: the probe's first-met excess if it is the first
        eager iteration of one of the probe's sizes (idle_s after an idle, else busy_s; one charge however many groups
        meet one: the lockstep's groups meet theirs side by side), plus post_idle_prompt_s for a prompt step after an
        idle. Counts the sizes met."""
        p = self.probe
        extra = p.post_idle_prompt_s if post_idle and prompt_tokens else 0.0
        if eager and self.probed_unmet:
            keys = set(enumerate(sizes)) & self.probed_unmet
            if keys:
                self.probed_unmet -= keys
                fade = p.fade_sizes / (p.fade_sizes + self.probed_met) if p.fade_sizes > 0 else 1.0
                self.probed_met += len(keys)
                extra += (p.idle_s if post_idle else p.busy_s) * fade
        return extra

    def _cold_kernel_charge(self, sizes: list[int]) -> float:
        """(ADOPT_COLD_KERNELS) An eager iteration's extra seconds: kernel_s per kernel of its flat size(s) the process
        had not launched, lookup_s per size it had not run. Counts them launched and run."""
        c, extra = self.cold, 0.0
        for n in set(sizes):
            new = c.of(n) - self.cold_launched
            extra += c.kernel_s * len(new) + (c.lookup_s if n not in self.cold_met else 0.0)
            self.cold_launched |= new
            self.cold_met.add(n)
        return extra

    def _meet_busy(self, sizes: list[int], post_idle: bool) -> None:
        """(ADOPT_IDLE_WAKE) This iteration's sizes that the warm pass ran but a post-idle iteration had not met: first
        met after an idle, left to _new_size (its first-met terms); mid-stream, counted as met without a charge."""
        keys = set(enumerate(sizes)) & self.busy_met
        if not keys:
            return
        self.busy_met -= keys
        if post_idle:
            return
        for g, n in keys - self.sizes:
            self.sizes_met[g] += 1
            if self.by_regions:
                self._met_regions(g).update(self.launches(n))
        self.sizes |= keys
        fresh = {(g, n // self.size_bin) for g, n in keys} - self.size_bins
        for g, _ in fresh:
            self.bins_met[g] += 1
        self.size_bins |= fresh

    def _met_regions(self, g: int) -> set:
        """The (weight, region) pairs (or kernels, new_bin_kernels) attention group g has launched (its graph
        buckets' at capture)."""
        if g not in self.regions_met:
            self.regions_met[g] = set().union(*(self.launches(b) for b in self.costs.batch_buckets))
        return self.regions_met[g]

    def _new_regions(self, keys: set) -> float:
        """The most (weight, region) pairs (or kernels) any group's size launches for the first time (recorded):
        under new_bin_regions (new_bin_kernels) the count of new_bin_s this iteration pays (the lockstep waits
        for the slowest)."""
        counts = [0]
        for g, n in keys:
            met = self._met_regions(g)
            fresh = self.launches(n) - met
            counts.append(len(fresh))
            met |= fresh
        return float(max(counts))

    def _new_size(self, sizes: list[int], batch: int, prompt_tokens: float, max_ctx: float) -> tuple[bool, float]:
        """Is this eager iteration the first of its flat size for any attention group (`sizes`: each
        group's flat tokens, in group order), and what share of new_bin_s does a first of its size bin
        cost (0 if no group's bin is new; the largest new_bin_weight over the groups meeting one: the
        lockstep waits for the slowest)? (Records them.)"""
        if self.sizes is None or not self.costs.is_eager(batch, prompt_tokens, max_ctx):
            return False, 0.0
        keys = set(enumerate(sizes))
        fresh = {(g, n // self.size_bin) for g, n in keys} - self.size_bins
        new_bin = max((new_bin_weight(self.bins_met[g], self.bin_fade) for g, _ in fresh), default=0.0)
        if self.by_regions:
            new_bin = self._new_regions(keys)
        new_size = not keys <= self.sizes
        for g, _ in keys - self.sizes:
            self.sizes_met[g] += 1
        self.sizes |= keys
        self.size_bins |= fresh
        for g, _ in fresh:
            self.bins_met[g] += 1
        return new_size, new_bin

    def _eager_step(self, eager: bool, steps: int) -> bool:
        """Is the first of `steps` iterations (all eager or all graph replays) a cold eager one
        (cold_eager_after or more graph iterations since the last eager one)? Counts them."""
        cold = eager and self.graphs_since_eager >= self.cold_eager_after
        self.graphs_since_eager = 0 if eager else self.graphs_since_eager + steps
        return cold

    def _post_prompt_flags(self, steps: int) -> list[bool]:
        """Which of the next `steps` decode-only iterations pay post_prompt_s: those within post_prompt_after
        iterations of the instance's last prompt iteration (since_prompt counts the iterations since)."""
        k = self.post_prompt_after
        return [bool(k) and self.since_prompt + i + 1 <= k for i in range(steps)]

    def _finish_due(self) -> None:
        heap = self.heap
        while heap and heap[0][0] <= self.G:
            _, ep, rid = heapq.heappop(heap)
            if self.epoch.get(rid) != ep:
                continue
            self._stop_decode(rid)
            self._release(rid)
            self.eng.finish(rid, self)

    def _decode_run(self, tps: float):
        """Decode-only iterations with nothing waiting: run them back to back up to the next finish
        (at most MAX_RUN), as one SimPy timeout that an arrival (the wake event) cuts short at the
        end of the iteration in progress. Same iterations, same times as one by one."""
        eng, env = self.eng, self.eng.env
        b = self.batch
        heap = self.heap
        while heap and self.epoch.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)                    # drop stale entries so the top is live
        steps = max(1, min(MAX_RUN, math.ceil((heap[0][0] - self.G) / tps))) if heap else 1
        if not self.reserve:                       # 'optimistic': only as many steps as the cache holds
            room = (self.kv_capacity + EPS - self.kv_used()) / (b * tps)
            if room < 1:
                self._preempt_for_growth(tps)
                return
            steps = min(steps, int(room))
        ctx0 = (self.ctx_base + b * self.G) / b
        max0 = self.max_ctx()
        cum = []
        total = 0.0
        until = eng.next_arrival_s - env.now     # an open loop's next arrival is known: stop at it
        b_time = self.dp * max(self.dec_g) if self.rr else b
        spread = self.costs.spread
        draws = _Draws(eng.rng, steps) if spread is not None else None
        sizes = [n or 1 for n in self.dec_g] if self.rr else [b]
        if self.busy_met:
            self._meet_busy(sizes, env.now - self.last_end >= IDLE_WAKE_AFTER_S)
        new_size, new_bin = self._new_size(sizes, b_time, 0, max0)   # the same sizes throughout: only the first can be new
        # eager or graph throughout (the rows do not change); the steps are counted when the run ends
        run_eager = self.costs.is_eager(b_time, 0, max0)
        eager = bool(self.cold_eager_after) and run_eager
        # (ADOPT_EAGER_WARMTH) an eager decode run's first step after the graph replays since the last eager one
        warm0 = eager_warmth(self.graphs_since_eager) if self.tracks_warmth and run_eager else 1.0
        warm1 = eager_warmth(0) if self.tracks_warmth and run_eager else 1.0
        loop_s = self.costs.loop_of(run_eager)
        stalls = self.stalls if run_eager or (self.stalls is not None and self.stalls.every_iteration) else None
        cold_eager = eager and self.graphs_since_eager >= self.cold_eager_after
        post = self._post_prompt_flags(steps)   # counted in _end_run, for the steps that ran
        for i in range(steps):
            dur = self.costs.iteration_s(b_time, ctx0 + i * tps, 0, 0.0, max0 + i * tps, 0, 0.0,
                                         new_size=new_size and i == 0, new_bin=new_bin if i == 0 else 0.0,
                                         cold_eager=cold_eager and i == 0, post_prompt=post[i],
                                         warmth=warm0 if i == 0 else warm1)[0]
            if spread is not None:
                dur = loop_s + (dur - loop_s) * spread.ratio(False, dur - loop_s, draws.at(i))
            if stalls is not None:
                dur += stalls.draw_s(dur)
            total += dur
            cum.append(total)
            if total >= until:
                break
        if draws is not None:
            draws.finish()                         # the generator where rng.random(steps) leaves it
        steps = len(cum)
        start = env.now
        done = steps
        if not eng.outside_work:
            # new work reaches this instance only from open-loop arrivals (bounded above) or from
            # its own finishes (closed loop, one instance): nothing can cut the run short
            yield env.timeout(total)
            self._end_run(start, cum, done, b, tps, bool(eager or (self.tracks_warmth and run_eager)))
            return
        self.wake = env.event()
        yield env.timeout(total) | self.wake
        if self.wake.triggered and env.now < start + total - 1e-15:
            elapsed = env.now - start
            done = bisect.bisect_left(cum, elapsed - 1e-15) + 1
            done = min(done, steps)
            yield env.timeout(max(0.0, start + cum[done - 1] - env.now))
        self.wake = None
        self._end_run(start, cum, done, b, tps, bool(eager or (self.tracks_warmth and run_eager)))

    def _end_run(self, start: float, cum: list, done: int, b: int, tps: float, eager: bool = False) -> None:
        eng = self.eng
        if self.cold_eager_after or self.tracks_warmth:
            self._eager_step(eager, done)
        self.since_prompt += done
        rec = eng.rec
        kv_end = self.kv_used() + b * tps * done
        if kv_end > self.peak_kv:
            self.peak_kv = kv_end
        rec.iterations += done
        rec.busy_s += cum[done - 1]
        self.last_end = start + cum[done - 1]
        rec.decode_token_steps += b * tps * done
        trace = rec.trace
        prev = 0.0
        for i in range(min(done, max(0, eng.trace_cap - len(trace)))):
            trace.append((self.pool, self.index, start + prev, cum[i] - prev, b, 0))
            prev = cum[i]
        if b > rec.peak_running:
            rec.peak_running = b
        self.G += tps * done
        self._finish_due()

"""The load generator: who arrives when, with which lengths, and the loop that drives an engine
in wall-clock time and records what happened.

Arrivals (requests are numbered over all ranks; with W ranks, rank r serves ids r, r+W, ...):
- `PoissonArrivals`: exponential gaps at `rate_per_s` (all ranks together) over [0, load_s);
- `ClosedLoopArrivals`: `concurrency / W` requests in flight per rank; each finish issues the next
  request at once (its arrival is the finish time) until load_s.
Lengths come from `LengthDist` ("fixed:N", "uniform:LO-HI" inclusive, "list:A,B,C" uniformly
chosen), drawn from a generator seeded by (seed, request id), so a request's lengths and prompt do
not depend on the rank that serves it.

`run_load` calls `engine.step()` back to back while there is work: requests that arrive during an
iteration join at the next one. With a control group (EP), all ranks exchange (has work, still
live) each loop, so every rank enters the same iterations, running a padding row if it has none.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from real.serve.engine import Engine, Request

MAX_REQUESTS_PER_RUN = 100_000  # bounds memory whatever the rate and load time


@dataclass(frozen=True)
class LengthDist:
    kind: str
    values: tuple[int, ...]

    def sample(self, rng: random.Random) -> int:
        if self.kind == "fixed":
            return self.values[0]
        if self.kind == "uniform":
            return rng.randint(self.values[0], self.values[1])
        return rng.choice(self.values)

    @property
    def max(self) -> int:
        return max(self.values)


def parse_lengths(text: str, name: str = "length") -> LengthDist:
    """'fixed:N', 'uniform:LO-HI' or 'list:A,B,...' (positive integers)."""
    kind, _, rest = text.partition(":")
    try:
        if kind == "fixed":
            values = (int(rest),)
        elif kind == "uniform":
            lo, hi = (int(v) for v in rest.split("-"))
            if hi < lo:
                raise ValueError
            values = (lo, hi)
        elif kind == "list":
            values = tuple(int(v) for v in rest.split(","))
        else:
            raise ValueError
        if not values or min(values) < 1:
            raise ValueError
    except ValueError:
        raise ValueError(f"{name} {text!r}: expected 'fixed:N', 'uniform:LO-HI' or 'list:A,B,...' "
                         "with positive integers") from None
    return LengthDist(kind, values)


def make_request(request_id: int, arrival_s: float, input_len: LengthDist, output_len: LengthDist,
                 vocab_size: int, seed: int) -> Request:
    rng = random.Random(seed * 1_000_003 + request_id)
    n_in, n_out = input_len.sample(rng), output_len.sample(rng)
    prompt = [rng.randrange(vocab_size) for _ in range(n_in)]
    return Request(request_id, arrival_s, prompt, n_out)


class PoissonArrivals:
    def __init__(self, rate_per_s: float, load_s: float, input_len: LengthDist, output_len: LengthDist,
                 vocab_size: int, seed: int = 0, rank: int = 0, world: int = 1):
        rng = random.Random(seed)
        t, times = 0.0, []
        while len(times) < MAX_REQUESTS_PER_RUN:
            t += rng.expovariate(rate_per_s)
            if t >= load_s:
                break
            times.append(t)
        self.pending = [make_request(i, t, input_len, output_len, vocab_size, seed)
                        for i, t in enumerate(times) if i % world == rank]
        self.pending.reverse()  # pop() from the end gives the earliest

    def due(self, now_s: float) -> list[Request]:
        out = []
        while self.pending and self.pending[-1].arrival_s <= now_s:
            out.append(self.pending.pop())
        return out

    def on_finish(self, req: Request, now_s: float) -> None:
        pass

    def next_arrival_s(self) -> float:
        return self.pending[-1].arrival_s if self.pending else math.inf

    def exhausted(self, now_s: float) -> bool:
        return not self.pending


class ClosedLoopArrivals:
    def __init__(self, concurrency: int, load_s: float, input_len: LengthDist, output_len: LengthDist,
                 vocab_size: int, seed: int = 0, rank: int = 0, world: int = 1):
        if concurrency % world:
            raise ValueError(f"concurrency {concurrency} does not divide over {world} ranks")
        self.load_s, self.rank, self.world = load_s, rank, world
        self.make = lambda rid, t: make_request(rid, t, input_len, output_len, vocab_size, seed)
        self.issued = 0
        self.ready = [self._next(0.0) for _ in range(concurrency // world)]

    def _next(self, t: float) -> Request:
        rid = self.rank + self.world * self.issued
        self.issued += 1
        return self.make(rid, t)

    def due(self, now_s: float) -> list[Request]:
        out, self.ready = self.ready, []
        return out

    def on_finish(self, req: Request, now_s: float) -> None:
        if now_s < self.load_s and self.issued < MAX_REQUESTS_PER_RUN:
            self.ready.append(self._next(now_s))

    def next_arrival_s(self) -> float:
        return 0.0 if self.ready else math.inf

    def exhausted(self, now_s: float) -> bool:
        return not self.ready and (now_s >= self.load_s or self.issued >= MAX_REQUESTS_PER_RUN)


def make_arrivals(run, vocab_size: int, rank: int = 0, world: int = 1):
    inp, out = parse_lengths(run.input_len, "input_len"), parse_lengths(run.output_len, "output_len")
    if run.arrival == "poisson":
        return PoissonArrivals(run.rate_per_s, run.load_s, inp, out, vocab_size, run.seed, rank, world)
    return ClosedLoopArrivals(run.concurrency, run.load_s, inp, out, vocab_size, run.seed, rank, world)


def _exchange(flags: list[int], group) -> list[int]:
    """Elementwise max of the flags over the control group's ranks."""
    t = torch.tensor(flags, dtype=torch.int64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return t.tolist()


def run_load(engine: Engine, arrivals, max_duration_s: float, control_group=None) -> float:
    """Drive the engine until every rank has issued and finished its requests or the hard cap
    passes; returns the run's duration (start to the end of its last iteration, this rank).
    The engine keeps the requests (`finished`, `running`, `waiting`) and `iterations`."""
    clock = engine.clock
    t0 = clock()
    engine.reset(t0)
    last_end_s = 0.0
    while True:
        now = clock() - t0
        for req in arrivals.due(now):
            engine.add(req)
        over = now >= max_duration_s
        has_work = engine.has_work and not over
        live = not over and (engine.has_work or not arrivals.exhausted(now))
        any_work, any_live = (_exchange([int(has_work), int(live)], control_group)
                              if control_group is not None else (has_work, live))
        if not any_live:
            if engine.counters is not None:
                engine.counters.close_run()  # the last iteration's counters row
            return last_end_s
        if any_work:
            n_done = len(engine.finished)
            rec = engine.step() if has_work else None
            if rec is None and control_group is not None:
                rec = engine.idle_step()
            if rec is not None:
                last_end_s = rec.start_s + rec.duration_s
            for req in engine.finished[n_done:]:
                arrivals.on_finish(req, req.token_times_s[-1])
        else:
            wait = arrivals.next_arrival_s() - (clock() - t0)
            if control_group is not None:
                wait = min(wait, 0.001)  # stay in step with the other ranks
            time.sleep(max(0.0, min(wait, max_duration_s - now)))


def request_rows(engine: Engine, run_id: str, rank: int) -> list[dict]:
    rows = []
    for r in engine.finished + engine.running + list(engine.waiting):
        times = r.token_times_s
        gaps = [b - a for a, b in zip(times, times[1:])]
        done = r.finished
        rows.append({
            "run_id": run_id, "rank": rank, "request_id": r.request_id, "arrival_s": r.arrival_s,
            "admitted_s": r.admitted_s, "input_len": r.input_len, "output_len": r.output_len,
            "first_token_s": times[0] if times else "", "finish_s": times[-1] if done else "",
            "mean_tpot_s": (times[-1] - times[0]) / (len(times) - 1) if done and len(times) > 1 else "",
            "max_gap_s": max(gaps) if gaps else "", "first_token_iteration": r.first_token_iteration,
            "finish_iteration": r.finish_iteration if done else "", "num_chunks": r.num_chunks,
            "tokens_out": len(times)})
    rows.sort(key=lambda row: row["request_id"])
    return rows


def iteration_rows(engine: Engine, run_id: str, rank: int) -> list[dict]:
    return [{"run_id": run_id, "rank": rank, **vars(it)} for it in engine.iterations]


def stall_rows(engine: Engine, run_id: str, rank: int) -> list[dict]:
    """The run's per-iteration host counters (--stall-trace; none without)."""
    return [{"run_id": run_id, "rank": rank, **row} for row in engine.counters.rows] if engine.counters else []

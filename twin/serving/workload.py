"""The requests of a load run: arrival times, prompt and output lengths, prefix-cache hits.

`make_requests(traffic, serve)` draws them from the [traffic] section (seeded numpy), or reads a
CSV trace. A load run recorded by real/'s load generator is the same thing: `from_records` takes its
arrivals and lengths, so the twin replays exactly the run it is compared against.

Lengths: 'fixed' = the mean; 'uniform' = mean x (1 +- sqrt(3) cv), the uniform law with that CV;
'lognormal' = the lognormal law with that mean and CV. Every length is at least 1.

Arrivals: 'poisson' (exponential gaps at rate_per_s), 'gamma' (gamma gaps with mean 1/rate and CV
arrival_cv: shape 1/cv^2; cv > 1 is burstier than Poisson), 'closed' (the engine releases each
client's next request when its last finishes; arrival_s is NaN until then), 'trace' (the CSV).
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from twin.core.errors import ScenarioError
from twin.core.serve_specs import MAX_SIM_REQUESTS, ServeSpec, TrafficSpec
from twin.core.specs import MAX_SEQ_LEN

TRACE_COLUMNS = ("arrival_s", "input_len", "output_len")
DEFAULT_REQUESTS = 2000


@dataclass(frozen=True)
class Requests:
    """One row per request (numpy arrays of equal length)."""

    arrival_s: np.ndarray      # float; NaN = released by the closed loop
    input_len: np.ndarray      # int tokens
    output_len: np.ndarray     # int tokens (>= 1; the first comes out of the prefill)
    cached_len: np.ndarray     # int prompt tokens found in the prefix cache at arrival
    prefix_group: np.ndarray   # int shared-prefix group, -1 = none

    def __len__(self) -> int:
        return len(self.input_len)


def _lengths(rng: np.random.Generator, dist: str, mean: float, cv: float, n: int) -> np.ndarray:
    if dist == "fixed" or cv == 0:
        x = np.full(n, float(mean))
    elif dist == "uniform":
        half = min(math.sqrt(3.0) * cv, 1.0) * mean
        x = rng.uniform(mean - half, mean + half, n)
    else:   # lognormal with mean `mean` and coefficient of variation cv
        sigma2 = math.log1p(cv * cv)
        x = rng.lognormal(math.log(mean) - sigma2 / 2, math.sqrt(sigma2), n)
    return np.clip(np.rint(x), 1, MAX_SEQ_LEN).astype(np.int64)


def _arrivals(rng: np.random.Generator, t: TrafficSpec, n: int) -> np.ndarray:
    if t.arrival == "closed":
        return np.full(n, np.nan)
    if t.arrival == "poisson":
        gaps = rng.exponential(1.0 / t.rate_per_s, n)
    else:
        shape = 1.0 / (t.arrival_cv ** 2)
        gaps = rng.gamma(shape, 1.0 / (t.rate_per_s * shape), n)
    return np.cumsum(gaps) - gaps[0]   # the first request arrives at t = 0


def make_requests(t: TrafficSpec, s: ServeSpec, num_requests: int | None = None) -> Requests:
    """The requests of a run (`num_requests` overrides traffic.num_requests)."""
    if t.arrival == "trace":   # every row unless a count is asked (its first 2,000 until s24srvwalk, without a word)
        return read_trace(t.trace_csv, t.prefix_hit_frac, num_requests or t.num_requests or None)
    n = num_requests or t.num_requests or DEFAULT_REQUESTS
    rng = np.random.default_rng(t.seed)
    arrival = _arrivals(rng, t, n)
    isl = _lengths(rng, t.input_dist, s.input_len, t.input_cv, n)
    osl = _lengths(rng, t.output_dist, s.output_len, t.output_cv, n)
    return with_prefixes(arrival, isl, osl, t)


def trace_lengths_at(traffic: TrafficSpec, trace: Requests, num_requests: int) -> Requests:
    """`num_requests` requests with a trace's lengths (its rows in order, cycled) and `traffic`'s open arrivals
    (poisson or gamma at traffic.rate_per_s, seeded by traffic.seed, as make_requests draws them): the serving
    question's load for a trace, whose rate is the question's own (until s24srvwalk it also replaced the trace's
    lengths by serve.input_len / output_len)."""
    rng = np.random.default_rng(traffic.seed)
    arrival = _arrivals(rng, traffic, num_requests)
    k = np.arange(num_requests) % len(trace)
    return with_prefixes(arrival, trace.input_len[k], trace.output_len[k], traffic, trace.cached_len[k])


def with_prefixes(arrival, isl, osl, t: TrafficSpec, cached=None) -> Requests:
    """Requests with the prefix-cache hits of `t`: a hit rate on every prompt (at least one token
    is always computed: the last prompt token makes the first output token), and shared prefixes."""
    isl = np.asarray(isl, dtype=np.int64)
    if cached is None:
        cached = np.floor(isl * t.prefix_hit_frac).astype(np.int64)
    cached = np.minimum(np.asarray(cached, dtype=np.int64), isl - 1)
    n = len(isl)
    group = (np.arange(n) % t.prefix_groups) if t.shared_prefix_tokens else np.full(n, -1)
    return Requests(np.asarray(arrival, dtype=float), isl, np.asarray(osl, dtype=np.int64), cached, group.astype(np.int64))


def from_records(arrival_s, input_len, output_len, traffic: TrafficSpec | None = None, cached_len=None) -> Requests:
    """Requests of a recorded load run (real/'s load generator): its arrival times (seconds from the
    run's start; None = a closed loop, each client's next request sent when its last finishes, with
    traffic.concurrency clients), prompt and output lengths, and optionally the cached prompt tokens."""
    n = len(input_len)
    arrival = np.full(n, np.nan) if arrival_s is None else np.asarray(arrival_s, dtype=float)
    if arrival_s is not None and (len(arrival) != n or not np.all(np.isfinite(arrival)) or np.any(np.diff(arrival) < 0)):
        raise ScenarioError("arrival_s", list(arrival[:5]), f"{n} finite, non-decreasing times (one per request)")
    if len(output_len) != n:
        raise ScenarioError("output_len", len(output_len), f"one per request ({n})")
    return with_prefixes(arrival, input_len, output_len, traffic or TrafficSpec(), cached_len)


TRACE_FIELD = "traffic.trace_csv"   # the scenario field a trace's errors name


def read_trace(path: str, hit_frac: float, limit: int | None) -> Requests:
    """A CSV trace: arrival_s, input_len, output_len[, cached_len]; rows beyond `limit` are ignored (None: every
    row, and a ScenarioError where there are more than a simulation takes, MAX_SIM_REQUESTS).
    A bad file or row is a ScenarioError naming traffic.trace_csv and the row."""
    field = TRACE_FIELD
    if not Path(path).is_file():
        raise ScenarioError(field, path, "a readable CSV file with columns " + ", ".join(TRACE_COLUMNS))
    try:
        rows = _trace_rows(path, limit)
    except UnicodeDecodeError:   # binary or another encoding (a traceback until s19ux)
        raise ScenarioError(field, path, "a UTF-8 CSV file with columns " + ", ".join(TRACE_COLUMNS)) from None
    except csv.Error as exc:     # a field past the csv module's size limit, a stray quote
        raise ScenarioError(field, path, f"a well-formed CSV file ({exc})") from None
    except OSError as exc:
        raise ScenarioError(field, path, f"a readable CSV file ({exc.strerror or exc})") from None
    if not rows:
        raise ScenarioError(field, path, "at least one request row")
    rows.sort(key=lambda r: r[0])
    a, i, o, c = zip(*rows)
    cached = None if all(x is None for x in c) else [x if x is not None else math.floor(ii * hit_frac) for x, ii in zip(c, i)]
    arrival = np.asarray(a) - a[0]
    return with_prefixes(arrival, i, o, TrafficSpec(prefix_hit_frac=hit_frac), cached)


def _whole(text: str) -> int:
    """A token count: '100' or '100.0' (pandas writes integer columns with a gap as floats); '100.5' raises ValueError."""
    x = float(text)
    if not x.is_integer():
        raise ValueError(text)
    return int(x)


def _trace_rows(path: str, limit: int | None) -> list[tuple]:
    """(arrival_s, input_len, output_len, cached_len or None) of each row of the trace, checked."""
    field = TRACE_FIELD
    rows = []
    # utf-8-sig and stripped names: a spreadsheet's byte-order mark and "arrival_s, input_len" were
    # "missing arrival_s" / "missing input_len" (until s22walk)
    with Path(path).open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        reader.fieldnames = [name.strip() for name in reader.fieldnames or []]
        missing = [c for c in TRACE_COLUMNS if c not in reader.fieldnames]
        if missing:
            raise ScenarioError(field, path, f"columns {', '.join(TRACE_COLUMNS)} (missing {', '.join(missing)})")
        for k, row in enumerate(reader):
            if limit is None and k >= MAX_SIM_REQUESTS:   # the whole trace asked: refused, not cut short without a word
                raise ScenarioError(field, path, f"at most {MAX_SIM_REQUESTS:,} request rows (this one has more); "
                                                 "--requests N or traffic.num_requests = N simulates its first N")
            if k >= min(limit or MAX_SIM_REQUESTS, MAX_SIM_REQUESTS):
                break
            line = reader.line_num   # the file's line (blank lines and quoted newlines counted)
            if None in row or None in row.values():   # more fields than the header, or fewer: accepted until s22walk
                raise ScenarioError(field, path, f"line {line}: as many fields as the header's {len(reader.fieldnames)} "
                                                 f"({', '.join(reader.fieldnames)})")
            try:
                a, i, o = float(row["arrival_s"]), _whole(row["input_len"]), _whole(row["output_len"])
                c = _whole(row["cached_len"]) if row.get("cached_len", "").strip() else None
            except (TypeError, ValueError, OverflowError):
                raise ScenarioError(field, path, f"line {line}: arrival_s a number; input_len, output_len and cached_len "
                                                 f"whole numbers (got {dict(row)})") from None
            if not (math.isfinite(a) and a >= 0 and 1 <= i <= MAX_SEQ_LEN and 1 <= o <= MAX_SEQ_LEN
                    and (c is None or 0 <= c <= i)):
                raise ScenarioError(field, path, f"line {line}: arrival_s >= 0, 1 <= input_len, output_len <= {MAX_SEQ_LEN:,}, "
                                                 f"0 <= cached_len <= input_len (got {dict(row)})")
            rows.append((a, i, o, c))
    return rows

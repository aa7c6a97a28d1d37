"""calibration.pipeline.solved_host_rate_s walks the op list at each rate the bisection tries without
building it again (_issued_host_s on the list with_host_terms gives once, the rate left open): the
same host clock as issue() on the list with_host_terms builds at that rate, to the last bit, and so
the same solved rate."""

import random

import calibration.pipeline as pipe
from calibration.predict import EpCountsCall, EpSendSync, EpTokensCall

TERMS = {"ep_counts_a2a": 160e-6, "ep_tokens_a2a": 190e-6, "ep_send_sync": 55e-6}


def _ops(rng: random.Random) -> list:
    """A forward's op list: launches, EP calls and host synchronisations in a random order."""
    kinds = [lambda: (rng.uniform(5e-6, 40e-6), rng.uniform(1e-6, 80e-6)),
             lambda: EpCountsCall((rng.uniform(5e-6, 40e-6), 5e-6)), lambda: EpSendSync((None, 0.0)),
             lambda: EpTokensCall((rng.uniform(5e-6, 40e-6), 20e-6)), lambda: (None, 0.0)]
    return [rng.choice(kinds)() for _ in range(rng.randint(5, 120))]


def _issue_with_max(ops, lead_s, gap_s):
    """issue() as written before it compared in place of max(): the clocks it must give to the bit."""
    host, gpu = -lead_s, 0.0
    for h, g in ops:
        if h is None:
            host = max(host, gpu)
            continue
        host += h
        gpu = max(gpu + gap_s, host) + g
    return gpu, host


def test_issue_gives_the_clocks_of_max_to_the_bit():
    rng = random.Random(11)
    for _ in range(300):
        ops, terms = _ops(rng), rng.choice([None, TERMS])
        timed = pipe._with_host(ops, rng.uniform(0.0, 60e-6), terms)
        lead, gap = rng.uniform(-1e-3, 2e-3), rng.choice([0.0, 1.5e-6])
        assert pipe.issue(timed, lead, gap) == _issue_with_max(timed, lead, gap)
        assert pipe.issue(timed, 0.0, gap) == _issue_with_max(timed, 0.0, gap)


def _reference_rate(ops, lead_s, interval_s, gap_s, terms):
    """The bisection as written before: a new op list (with_host_terms) at every rate tried."""
    launches = sum(1 for h, _ in ops if h is not None)

    def interval(rate):
        return pipe.issue(pipe._with_host(ops, rate, terms), lead_s, gap_s)[1] + lead_s
    lo, hi = 0.0, 2 * interval_s / launches
    if not interval(lo) < interval_s < interval(hi):
        return None
    for _ in range(32):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if interval(mid) < interval_s else (lo, mid)
    return 0.5 * (lo + hi)


def test_the_open_rate_walk_is_issue_at_that_rate_bit_for_bit():
    rng = random.Random(17)
    for _ in range(200):
        ops, terms = _ops(rng), rng.choice([None, TERMS])
        lead, gap, rate = rng.uniform(-1e-3, 2e-3), rng.choice([0.0, 1.5e-6]), rng.uniform(0.0, 60e-6)
        open_rate = pipe._with_host(ops, pipe._AT_RATE, terms)
        rebuilt = pipe.issue(pipe._with_host(ops, rate, terms), lead, gap)
        assert pipe._issued_host_s(open_rate, rate, lead, gap) == rebuilt[1]
        assert pipe._issued_s(open_rate, rate, lead, gap) == rebuilt      # the GPU's clock too


def test_the_solved_rate_is_the_rebuilt_bisections():
    rng = random.Random(3)
    solved = 0
    for _ in range(150):
        ops, terms = _ops(rng), rng.choice([None, TERMS])
        if not any(h is None for h, _ in ops) and not terms:
            continue   # no synchronisation: the closed form, no bisection
        lead, gap = rng.uniform(0.0, 2e-3), rng.choice([0.0, 1.5e-6])
        launches = sum(1 for h, _ in ops if h is not None)
        interval = pipe.issue(pipe._with_host(ops, rng.uniform(5e-6, 50e-6), terms), lead, gap)[1] + lead
        want = _reference_rate(ops, lead, interval, gap, terms) if launches else None
        assert pipe.solved_host_rate_s(ops, lead, interval, gap, terms) == want
        solved += want is not None
    assert solved > 50


def _reference_fb_rate(forward, backward, terms, lead_s, duration_s, gap_s):
    """fb_forward_rate_s's bisection as written before: a new op list at every rate tried."""
    launches = sum(1 for h, _ in forward if h is not None)

    def gpu_s(rate):
        return pipe.issue(pipe._with_host(forward, rate, terms) + backward, lead_s, gap_s)[0]
    lo, hi = 0.0, 2 * duration_s / launches
    if not gpu_s(lo) < duration_s < gpu_s(hi):
        return None
    for _ in range(32):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if gpu_s(mid) < duration_s else (lo, mid)
    return 0.5 * (lo + hi)


def test_the_fb_forward_rate_is_the_rebuilt_bisections():
    """fb_forward_rate_s walks its open-rate list (the forward at the rate left open, the backward as
    given) as the rebuilt bisection issued the list it built at each rate: the same rate to the bit."""
    rng = random.Random(5)
    solved = 0
    for _ in range(150):
        forward, backward, terms = _ops(rng), _ops(rng), rng.choice([None, TERMS])
        if all(h is not None for h, _ in forward) or not any(h is not None for h, _ in forward):
            continue   # no host-paced stretch: None before any bisection
        lead, gap = rng.uniform(0.0, 2e-3), rng.choice([0.0, 1.5e-6])
        duration = pipe.issue(pipe._with_host(forward, rng.uniform(5e-6, 50e-6), terms) + backward, lead, gap)[0]
        want = _reference_fb_rate(forward, backward, terms, lead, duration, gap)
        assert pipe.fb_forward_rate_s(forward, backward, terms, lead, duration, gap) == want
        solved += want is not None
    assert solved > 50


def _step_function(rng: random.Random, hi: float, jumps: bool):
    """A non-decreasing piecewise-linear function of the rate on [0, hi] with flat stretches (the walk's shape: a
    host synchronisation holds the clock flat until the GPU is reached) and, with `jumps`, steps (no walk has them:
    the clocks are continuous in the rate), rounded as floats round."""
    knots = sorted(rng.uniform(0.0, hi) for _ in range(rng.randint(0, 6)))
    slopes = [rng.choice([0.0, rng.uniform(0.0, 50.0), rng.uniform(0.0, 1e-3)]) for _ in range(len(knots) + 1)]
    jumps = [rng.choice([0.0, 0.0, rng.uniform(0.0, 1e-4)]) if jumps else 0.0 for _ in knots]

    def f(rate: float) -> float:
        y, x0 = rng_base, 0.0
        for k, s, j in zip(knots, slopes, jumps):
            if rate <= k:
                break
            y, x0 = y + s * (k - x0) + j, k
        else:
            s = slopes[-1]
        return y + s * (rate - x0)
    rng_base = rng.uniform(-1e-3, 1e-3)
    return f


def test_the_narrowed_bisection_takes_the_plain_bisections_halves():
    """bisected_rate decides each of the 32 halvings as the plain bisection does (a midpoint outside the bracket
    regula falsi narrowed is decided by the bracket's ends, f being non-decreasing), so it gives the same float, on
    functions with flat stretches, steps and a target on a plateau; on continuous ones (the walk's) at a target
    between two ends in under a third of the evaluations, and never in many more than the plain bisection's."""
    rng = random.Random(23)
    cases, walks = 0, {"plain": [], "narrowed": []}
    for k in range(800):
        hi = rng.uniform(1e-6, 1e-4)
        f = _step_function(rng, hi, jumps=k % 2 == 1)
        f_lo, f_hi = f(0.0), f(hi)
        on_plateau = k % 4 == 2
        target = f(rng.uniform(0.0, hi)) if on_plateau else rng.uniform(f_lo, f_hi)
        if not f_lo < target < f_hi:
            continue
        n = {"plain": 0, "narrowed": 0}

        def counted(key):
            def g(rate):
                n[key] += 1
                return f(rate)
            return g
        assert pipe.bisected_rate(counted("narrowed"), target, hi, f_lo, f_hi) == pipe._bisected(counted("plain"), target, hi)
        cases += 1
        assert n["plain"] == 32
        assert n["narrowed"] <= 32 + pipe.FALSI_SLACK + 4
        if k % 4 == 0:   # continuous, a target between two ends
            walks["narrowed"].append(n["narrowed"])
    assert cases > 600
    mean = sum(walks["narrowed"]) / len(walks["narrowed"])
    print(f"walks a solve (continuous): plain 32, narrowed {mean:.1f}")
    assert mean < 32 / 3


def test_a_negative_factor_is_bisected_walk_by_walk():
    """_monotone holds for the lists with_host_terms builds (factors >= 0) and not for a negative or NaN factor,
    where the walk need not grow with the rate: those take the plain bisection."""
    assert pipe._monotone([(pipe._AT_RATE, 1e-6), (None, 0.0), (pipe._AT_RATE * 1.4, 2e-6), (3e-6, 1e-6)])
    assert not pipe._monotone([(pipe._AT_RATE * -1.0, 1e-6)])
    assert not pipe._monotone([(pipe._AT_RATE * float("nan"), 1e-6)])

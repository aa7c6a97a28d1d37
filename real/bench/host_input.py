"""Section host_input (session s21host, issue 13): the host's measured speed beside the one-GPU
prefill and decode records, and beside the host calibration it is related to, in one process.

Why: a decode step (and a short prefill) of real/'s eager model lasts as long as the host takes to
dispatch its ~100-250 ops, and one host runs the same step 14-37% apart a minute later (s20new2's
cold and warm H100 runs). The twin prices those launches at the profile's host time per kernel
(Profile.eager host_s["infer"], host_dispatch.csv's fitting-split `infer` rows), measured on an
earlier host. A short, fixed host probe taken right before each record (real/serve/hostspeed.py
launch_probe: host seconds per small kernel launched from Python, PROBE_WINDOW_S of them) makes the
host's speed an input, as the serving twin takes it (twin/serving/timing.py host_scale).

In order, one process:
  1. the host calibration: the fitting split's layer cases of the host_dispatch section
     (real/bench/host_dispatch.py fit_layer_cases), phase `infer` only (the no-grad forward whose
     host time per kernel the twin's prefill and decode take), each precision, each row preceded by a
     probe (host_dispatch.csv rows, split fit; host_probe.csv rows keyed by config, phase, precision):
     the fitting rows of the probe -> host-time-per-kernel relation (calibration/host_input.py);
  2. the serve rows (model.csv prefill and decode: real/bench/whole_model.py bench_serve, cases from
     REAL_BENCH_SERVE_CASES), each preceded by a probe (host_probe.csv keyed by bench, model, batch,
     lengths, precision).
"""

from __future__ import annotations

import functools
import os

from real.bench import host_dispatch as hd
from real.bench.device import precisions_to_bench
from real.bench.whole_model import SERVE_PROBE_ENV, bench_serve, probe_row
from real.serve.hostspeed import PROBE_WINDOW_S


def bench_host_input(rec, timer, dev, deadline, quick, env):
    # quick (a CPU dry run): one repetition, no warm-up: the code path, not the figures
    measure = functools.partial(hd.measure_phase, reps=1, warmup=0) if quick else hd.measure_phase
    window = PROBE_WINDOW_S
    moe_fit, mla_fit = hd.fit_layer_cases(quick)
    probe = functools.partial(probe_row, dev=dev, window_s=window)
    if not hd.bench_layers(rec, timer, dev, deadline, measure, precisions_to_bench(env), moe_fit, mla_fit,
                           phases=("infer",), probe=probe):
        return
    before = os.environ.get(SERVE_PROBE_ENV)
    os.environ[SERVE_PROBE_ENV] = str(window)   # bench_serve probes before each of its rows
    try:
        bench_serve(rec, timer, dev, deadline, quick, env)
    finally:
        if before is None:
            os.environ.pop(SERVE_PROBE_ENV, None)
        else:
            os.environ[SERVE_PROBE_ENV] = before

"""real/campaigns/s12ep.sh and the ep section's host marks (s12ep): the ep part on two gloo ranks
(tiny shapes), every row with its host interval, split, NCCL version and GPU count; the pipeline
parts are s9ep.sh's commands (tests/real/test_real_pipeline.py runs those)."""

import csv
import time

import torch

from real.bench.ep import HostMarks
from real.bench.records import DIST_ENV_COLS, ENV_COLS, SHAPE_COLS, STAT_COLS
from real.bench.timing import Timer
from real.telemetry import Telemetry
from tests.campaigns import dry_run


def test_host_marks_time_the_timed_calls_on_the_host():
    """host_s is the median host interval of the timed repetitions only (warm-up calls left out):
    a call that sleeps 20 ms on the host measures ~20 ms, whatever its warm-up did."""
    calls = []

    def fn():
        time.sleep(0.05 if len(calls) < 2 else 0.02)   # the two warm-up calls are slower
        calls.append(1)

    timer = Timer(torch.device("cpu"), Telemetry(0), 0.0, max_reps=3, warmup=2)
    r = HostMarks().measure(timer, fn, reps=3)
    assert len(calls) == 5 and r["reps"] == 3
    assert 0.02 <= r["host_s"] < 0.045
    assert r["time_s"] >= 0.02


def test_s12ep_campaign_ep_part_cpu_dry_run(tmp_path):
    d, log = dry_run("s12ep", tmp_path, 300, S12EP_PARTS="ep")
    assert "s12ep part ep rc=0" in log, log[-2000:]
    assert "part ep2" not in log and "part pp2" not in log      # S12EP_PARTS chose the ep part only
    with open(d / "ep" / "ep.csv", newline="") as f:
        header = next(csv.reader(f))
        f.seek(0)
        rows = list(csv.DictReader(f))
    assert header == SHAPE_COLS["ep"] + STAT_COLS + ENV_COLS + DIST_ENV_COLS
    assert {r["bench"] for r in rows} == {"all_to_all", "ep_dispatch", "ep_combine", "moe_layer_ep_fwd",
                                          "moe_layer_ep_bwd"}
    assert {r["split"] for r in rows} == {"holdout"}
    assert all(float(r["host_s"]) > 0 for r in rows)
    assert {r["num_gpus"] for r in rows} == {"0"}                 # gloo ranks on a CPU: no GPU

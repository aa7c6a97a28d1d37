"""real/campaigns/s23srvh.sh on CPU (plan tiny-new, a short pause probe): every run's row carries the pause
probe's window, chains, median chain and pauses beside the host probe; the GPU plans hold the runs
calibration.prereg_serve.S23 names."""

import csv
import os
import subprocess
from pathlib import Path

from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s23srvh_campaign_cpu_dry_run_records_the_pause_probe(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "S21_DEVICE": "cpu", "S21_PLANS": "tiny-new", "S21_PART_S": "60",
           "S23_PAUSE_S": "0.05", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s23srvh.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=120)
    d = tmp_path / "s23srvh"
    assert "tiny-new exit 0" in (d / "log.txt").read_text()
    load = _read(d / "tiny-new" / "serve_load.csv")
    assert len(load) == 2
    for r in load:
        assert float(r["pause_window_s"]) >= 0.05 and int(r["pause_chains"]) > 0 and float(r["pause_chain_p50_s"]) > 0
        sizes = [float(x) for x in r["pause_sizes_s"].split(";") if x]
        assert len(sizes) == int(r["pause_count"]) and all(x >= 2e-3 for x in sizes)
        assert float(r["probe_before_launch_s"]) > 0 and r["torch_version"] and r["gpu_name"]


def test_s23_plans_are_the_registered_runs():
    from calibration import prereg_serve as ps
    from real.serve.plans import PLANS, S21_MODELS, s21_short
    reg = ps.S23
    for model in S21_MODELS:
        plan = PLANS[f"gpu1-s23-{s21_short(model)}"]
        got = [(r.name, r.arrival, r.input_len, r.output_len, r.rate_per_s, r.concurrency, r.load_s, r.seed,
                r.warm_shapes, r.split) for r in plan.runs]
        want = [(ps.run_id(model, r, reg.prefix), r.arrival, r.input_len, r.output_len, r.rate_per_s, r.concurrency,
                 r.load_s, r.seed, ps.WARM_TOKENS if k == 0 else 0, "holdout") for k, r in enumerate(reg.runs)]
        assert got == want


def test_pause_probe_keeps_chains_over_the_median_and_ep_takes_the_rank_that_paused_most():
    import torch

    from real.serve.cli import pause_columns
    from real.serve.hostspeed import PAUSE_MIN_S, pause_probe
    from real.serve.records import PAUSE_KEYS
    p = pause_probe(torch.device("cpu"), window_s=0.02)
    assert tuple(p) == PAUSE_KEYS and p["pause_window_s"] >= 0.02 and p["pause_chains"] >= 1
    sizes = [float(x) for x in p["pause_sizes_s"].split(";") if x]
    assert len(sizes) == p["pause_count"] and all(x >= PAUSE_MIN_S for x in sizes)
    a = dict(zip(PAUSE_KEYS, (2.0, 100, 5e-4, 1, "0.003")))
    b = dict(zip(PAUSE_KEYS, (2.0, 100, 5e-4, 3, "0.003;0.004;0.01")))
    assert pause_columns([a, b]) == b and pause_columns([{}, {}]) == {}

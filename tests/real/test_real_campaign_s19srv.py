"""real/campaigns/s19srv.sh on CPU (tiny-ep2-repeat on two gloo ranks): one request stream run twice in one EP2
engine process, every row a fit run with the host probe around it and the environment filled in; the GPU
plan's runs keep their fit configurations' seeds and splits."""

import csv
import os
import subprocess
from pathlib import Path

from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s19srv_campaign_repeats_one_stream_in_one_ep2_process_cpu_dry_run(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "S19_DEVICE": "cpu", "S19_PLAN": "tiny-ep2-repeat",
           "S19_FORCE_EP2": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s19srv.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    d = tmp_path / "s19srv"
    log = (d / "log.txt").read_text()
    assert "ep2 exit 0" in log and "s19srv end" in log
    load = _read(d / "ep2" / "serve_load.csv")
    assert [r["run_id"] for r in load] == ["tinyep2rep-poisson-r20-1", "tinyep2rep-poisson-r20-2"]
    assert {r["split"] for r in load} == {"fit"} and {r["ep_size"] for r in load} == {"2"}
    for r in load:
        assert r["timestamp_utc"] and r["torch_version"] and float(r["probe_before_launch_s"]) > 0
        assert len(r["probe_launch_ranks_s"].split(";")) == 2
    reqs = _read(d / "ep2" / "serve_requests.csv")
    by_run = {run: sorted((r["rank"], r["arrival_s"], r["input_len"]) for r in reqs if r["run_id"] == run)
              for run in (r["run_id"] for r in load)}
    assert by_run["tinyep2rep-poisson-r20-1"] and by_run["tinyep2rep-poisson-r20-1"] == by_run["tinyep2rep-poisson-r20-2"]
    its = _read(d / "ep2" / "serve_iterations.csv")
    assert {r["rank"] for r in its} == {"0", "1"} and all(r["host_s"] not in ("", "nan") for r in its)


def test_ep2_repeat_plan_runs_fit_streams_only_with_their_seeds():
    """ep2-repeat: r4-long, EP2_REPEAT_RUNS copies of fit ep2lo-poisson-r20-short (its seed, split fit), then
    c4-short; no held-out configuration; names of their own; the ep2 engine settings."""
    from real.serve.plans import EP2, EP2_LOWLOAD, EP2_REPEAT, EP2_REPEAT_RUNS
    src = {r.name: r for r in EP2_LOWLOAD.runs}
    runs = EP2_REPEAT.runs
    reps = runs[1:1 + EP2_REPEAT_RUNS]
    r20 = src["ep2lo-poisson-r20-short"]
    assert all((r.rate_per_s, r.seed, r.split, r.input_len) == (r20.rate_per_s, r20.seed, "fit", r20.input_len) for r in reps)
    for r, orig in ((runs[0], src["ep2lo-poisson-r4-long"]), (runs[-1], src["ep2lo-closed-c4-short"])):
        assert (r.arrival, r.rate_per_s, r.concurrency, r.seed, r.split) == \
            (orig.arrival, orig.rate_per_s, orig.concurrency, orig.seed, "fit")
    held_seeds = {r.seed for r in EP2_LOWLOAD.runs if r.split == "holdout"}
    assert all(r.split == "fit" and r.seed not in held_seeds for r in runs)
    names = [r.name for r in runs]
    assert len(set(names)) == len(names) and not set(names) & {r.name for r in (*EP2.runs, *EP2_LOWLOAD.runs)}
    assert (EP2_REPEAT.model, EP2_REPEAT.token_budget, EP2_REPEAT.max_running) == (EP2.model, EP2.token_budget, EP2.max_running)

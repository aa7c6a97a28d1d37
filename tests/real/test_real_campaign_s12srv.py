"""real/campaigns/s12srv.sh on CPU (tiny-repeat plan): one request stream run twice in one engine
process, each row its configuration's split (held out here), the per-iteration timing columns and
the environment filled in; the GPU plan's runs."""

import csv
import os
import subprocess
from pathlib import Path
from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s12srv_campaign_repeats_one_stream_in_one_process_cpu_dry_run(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "S12_DEVICE": "cpu", "S12_PLAN": "tiny-repeat",
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s12srv.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=300)
    d = tmp_path / "s12srv"
    log = (d / "log.txt").read_text()
    assert "gpu1 exit 0" in log and "s12srv end" in log
    load = _read(d / "gpu1" / "serve_load.csv")
    assert [r["run_id"] for r in load] == ["tinyrep-poisson-r20-1", "tinyrep-poisson-r20-2"]
    assert {r["split"] for r in load} == {"holdout"} and all(r["timestamp_utc"] and r["torch_version"] for r in load)
    reqs = _read(d / "gpu1" / "serve_requests.csv")
    by_run = {run: [(r["arrival_s"], r["input_len"]) for r in reqs if r["run_id"] == run] for run in (r["run_id"] for r in load)}
    assert by_run["tinyrep-poisson-r20-1"] and by_run["tinyrep-poisson-r20-1"] == by_run["tinyrep-poisson-r20-2"]   # one stream
    its = _read(d / "gpu1" / "serve_iterations.csv")
    assert its and all(r["host_s"] not in ("", "nan") for r in its)


def test_repeat_plan_runs_one_held_out_stream_with_its_split_and_seed():
    """gpu1-repeat: REPEAT_RUNS copies of held-out g1lo-poisson-r30-short (same seed, split holdout),
    then fit r70 with its own seed and split; names of their own; the gpu1 engine settings."""
    from real.serve.plans import GPU1, GPU1_LOWLOAD, GPU1_REPEAT, REPEAT_RUNS
    src = {r.name: r for r in GPU1_LOWLOAD.runs}
    reps, last = GPU1_REPEAT.runs[:REPEAT_RUNS], GPU1_REPEAT.runs[REPEAT_RUNS]
    r30, r70 = src["g1lo-poisson-r30-short"], src["g1lo-poisson-r70-short"]
    assert all((r.rate_per_s, r.seed, r.split, r.input_len) == (r30.rate_per_s, r30.seed, "holdout", r30.input_len) for r in reps)
    assert (last.rate_per_s, last.seed, last.split) == (r70.rate_per_s, r70.seed, r70.split)
    names = [r.name for r in GPU1_REPEAT.runs]
    assert len(set(names)) == len(names) and not set(names) & {r.name for r in (*GPU1.runs, *GPU1_LOWLOAD.runs)}
    assert (GPU1_REPEAT.model, GPU1_REPEAT.token_budget, GPU1_REPEAT.max_running) == (GPU1.model, GPU1.token_budget, GPU1.max_running)

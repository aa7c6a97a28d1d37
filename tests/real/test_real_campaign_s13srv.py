"""real/campaigns/s13srv.sh on CPU (tiny-host, tiny-ep2-host on two gloo ranks): every run's row carries
the host probe before and after it and the CPU model; a dosed run ran beside its co-runner; the GPU
plans keep every configuration's seed and split."""

import csv
import math
import os
import subprocess
from pathlib import Path

import pytest

from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def _read(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_s13srv_campaign_cpu_dry_run_records_probes_around_every_run(tmp_path):
    env = {**os.environ, "PYTHON": FORKED_PY, "S13_DEVICE": "cpu", "S13_PLAN1": "tiny-host",
           "S13_PLAN2": "tiny-ep2-host", "S13_FORCE_EP2": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run(["bash", str(REPO / "real/campaigns/s13srv.sh"), str(tmp_path)], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=400)
    d = tmp_path / "s13srv"
    log = (d / "log.txt").read_text()
    assert "gpu1 exit 0" in log and "ep2 exit 0" in log and "s13srv end" in log
    for part, ranks in (("gpu1", 1), ("ep2", 2)):
        load = _read(d / part / "serve_load.csv")
        assert [r["run_id"].endswith("-slow") for r in load] == [False, True, False]
        for r in load:
            assert r["pin"] == "core" and r["timestamp_utc"] and r["torch_version"] and r["cpu_model"]
            for when in ("before", "after"):
                assert float(r[f"probe_{when}_launch_s"]) > 0 and float(r[f"probe_{when}_py_s"]) > 0
                assert math.isnan(float(r[f"probe_{when}_graph_s"] or "nan"))   # no CUDA graphs on the CPU
            assert len(r["probe_launch_ranks_s"].split(";")) == ranks
        assert [r["co_runner_nice"] for r in load] == ["", "3", ""]
        its = _read(d / part / "serve_iterations.csv")
        assert its and all(r["host_s"] not in ("", "nan") for r in its)


def test_co_runner_validates_nice_and_runs_only_inside_its_block():
    from real.serve.hostspeed import CoRunner
    with pytest.raises(ValueError, match="nice"):
        CoRunner([0], 25)
    with CoRunner([], 3) as none:          # no CPUs: nothing started
        assert none.proc is None
    cpus = sorted(os.sched_getaffinity(0))[:1]
    with CoRunner(cpus, 19) as c:
        proc = c.proc
        assert proc.poll() is None          # busy beside us
    assert proc.poll() is not None          # and gone after


def test_probe_columns_take_the_slowest_rank_and_list_each():
    from real.serve.cli import probe_columns
    from real.serve.records import PROBE_KEYS
    one = lambda v: {k: v for k in PROBE_KEYS}  # noqa: E731
    cols = probe_columns([{"before": one(1.0), "after": one(3.0)}, {"before": one(2.0), "after": one(2.0)}])
    assert cols["probe_before_launch_s"] == 2.0 and cols["probe_after_py_s"] == 3.0
    assert cols["probe_launch_ranks_s"] == "2;2"
    assert probe_columns([{}]) == {} and probe_columns([]) == {}


def test_host_plans_keep_seeds_and_splits_and_dose_only_pinned_runs():
    from real.serve.plans import _EP2_ALL, _GPU1_ALL, EP2_HOST, GPU1_HOST, SLOW_NICE, RunSpec
    for plan, src, prefix in ((GPU1_HOST, _GPU1_ALL, "g1s13-"), (EP2_HOST, _EP2_ALL, "ep2s13-")):
        names = [r.name for r in plan.runs]
        assert len(set(names)) == len(names)
        by_rest = {n.split("-", 1)[1]: r for n, r in src.items()}
        for r in plan.runs:
            rest = r.name.removeprefix(prefix).removesuffix("-slow")
            orig = by_rest[rest]
            assert (r.seed, r.split, r.rate_per_s, r.concurrency, r.input_len) == \
                (orig.seed, orig.split, orig.rate_per_s, orig.concurrency, orig.input_len)
            assert r.pin == "core" and (r.co_runner_nice == SLOW_NICE) == r.name.endswith("-slow")
        fit = {r.name.removesuffix("-slow") for r in plan.runs if r.split == "fit"}
        assert all(any(r.name == f + "-slow" for r in plan.runs) for f in fit)   # every fit configuration dosed
    with pytest.raises(ValueError, match="co_runner_nice"):
        RunSpec("x", "closed", "fixed:4", "fixed:2", concurrency=1, co_runner_nice=3)   # unpinned

"""real/campaigns/s27cp.sh and real/bench/cp_schedule.py (docs/notes/s27cp_rule.md): the CPU dry run
(the sched part's two fake-process-group ranks, where PyTorch's CP cannot run and each says so, profiling
the tiny block eager), its traces' host ranges, the clean stop without two GPUs, and the bench's refusal
of a CP degree below 2. One dry run for the module: ~20 s of CPU, the three python processes that import
torch (the launcher and two ranks: a fake process group needs a process a rank), most of its wall waiting."""

import csv
from pathlib import Path

import pytest

from calibration import cp_schedule
from tests.campaigns import dry_run, without_gpus

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    # the sched part only: cp2_real is the cp_block section, whose dry run test_real_campaign_s17cp runs
    return dry_run("s27cp", tmp_path_factory.mktemp("s27cp"), 240, S27CP_CP="2", S27CP_PARTS="sched")


def test_s27cp_dry_run_runs_the_sched_part_and_records_every_rank(dry):
    d, log = dry
    assert "s27cp part sched rc=0" in log and "part cp2_real" not in log, log[-2000:]
    with (d / "sched" / "cp_schedule.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["cp"], r["rank"]) for r in rows] == [("2", "0"), ("2", "1")]
    assert all(r["status"].startswith("no_cp: ") and r["gpu_name"] and r["torch_version"] and r["timestamp_utc"]
               and float(r["time_s"]) > 0 for r in rows)
    assert not list((d / "sched").glob("sync_cp*")) and "s27cp done" in log


def test_s27cp_dry_run_traces_hold_both_phases_of_both_repetitions(dry):
    """Each rank's trace holds the host ranges calibration.cp_schedule keys its sequences by (off a GPU
    there are no kernels to place: tests/calibration/test_cp_schedule.py replays synthetic ones)."""
    d, _ = dry
    for rank in (0, 1):
        trace = cp_schedule.load_trace(d / "sched" / "traces" / f"cp_schedule_cp2_rank{rank}.json.gz")
        names = [e["name"] for e in sorted(trace["traceEvents"], key=lambda e: float(e.get("ts", 0)))
                 if e.get("cat") == "user_annotation"]
        assert [n for n in names if n in ("fwd", "bwd")] == ["fwd", "bwd", "fwd", "bwd"]


def test_s27cp_stops_cleanly_without_two_gpus(tmp_path):
    d, log = without_gpus("s27cp", tmp_path)
    assert "needs 2: nothing run" in log and not (d / "sched").exists()


def test_cp_schedule_refuses_a_cp_degree_below_two(tmp_path, capsys):
    from real.bench import cp_schedule as bench
    assert bench.main(["--out", str(tmp_path), "--cp", "1", "4"]) == 2
    assert "error: --cp [1, 4]: CP degrees must be >= 2" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())   # nothing launched

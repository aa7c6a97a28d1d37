"""real/campaigns/s29mlm.sh (docs/notes/s29mlm_rule.md): the CPU dry run (two processes started together, as the
campaign starts one a GPU: real.bench.board_spread at tiny shapes and holds) and the clean stop without two GPUs.
~8 s of CPU: two processes each import torch."""

import csv

from tests.campaigns import dry_run, without_gpus


def test_s29mlm_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s29mlm", tmp_path, 120)
    assert "s29mlm board gpu0 rc=0" in log and "s29mlm board gpu1 rc=0" in log, log[-2000:]
    for board in ("cpu0", "cpu1"):   # one file a board, labelled by the index the campaign passed
        with (d / f"board_spread_{board}.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert {(r["case"], r["phase"]) for r in rows} == {(c, p) for c in ("ref", "mlm") for p in ("burst", "held")}
        assert all(r["board"] == board and r["campaign"] == "s29mlm" and r["gpu_name"] and r["torch_version"]
                   and r["timestamp_utc"] and float(r["time_s"]) > 0 for r in rows)
        held = [int(r["window"]) for r in rows if r["case"] == "ref" and r["phase"] == "held"]
        assert held == list(range(1, len(held) + 1)) and held   # windows numbered from 1, none lost
    assert "s29mlm done" in log


def test_s29mlm_stops_cleanly_without_two_gpus(tmp_path):
    d, log = without_gpus("s29mlm", tmp_path)
    assert "needs 2: nothing run" in log and not list(d.glob("board_spread_*.csv"))

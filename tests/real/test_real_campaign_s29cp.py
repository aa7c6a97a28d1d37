"""real/campaigns/s29cp.sh and s29cp2.sh (docs/notes/s29cp_rule.md, s29cp2_rule.md): one CPU dry run for both,
s29cp2's sched405 part (the 405B TP 8 slice named, Float8 linears; two fake-process-group ranks, where PyTorch's
CP cannot run and each says so, the tiny block eager: the same bench path as s29cp's sched part plus --float8),
the clean stop of both without two GPUs, the bench's refusal of an unknown block, and the 405B slice's shape.
The dry run's three python processes import torch (~20 s of CPU, its wall mostly waiting)."""

import csv

import pytest

from real.bench import cp_block
from tests.campaigns import dry_run, without_gpus


@pytest.fixture(scope="module")
def dry(tmp_path_factory):
    # the sched part only: cp2_real is the cp_block section, whose dry run test_real_campaign_s17cp runs
    return dry_run("s29cp2", tmp_path_factory.mktemp("s29cp2"), 240, S29CP2_CP="2", S29CP2_PARTS="sched405")


def test_s29cp2_dry_run_records_every_rank_of_the_named_float8_block(dry):
    d, log = dry
    assert "s29cp2 part sched405 rc=0" in log and "part cp2_real" not in log and "part sched8b" not in log, log[-2000:]
    with (d / "sched405" / "cp_schedule.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["cp"], r["rank"]) for r in rows] == [("2", "0"), ("2", "1")]
    assert all(r["status"].startswith("no_cp: ") and r["precision"] == "fp8-tensorwise" and r["gpu_name"]
               and r["torch_version"] and float(r["time_s"]) > 0 for r in rows)
    assert sorted(p.name for p in (d / "sched405" / "traces").iterdir()) == \
        ["cp_schedule_cp2_rank0.json.gz", "cp_schedule_cp2_rank1.json.gz"]
    assert not list((d / "sched405").glob("sync_cp*")) and "s29cp2 done" in log


@pytest.mark.parametrize("campaign", ["s29cp", "s29cp2"])
def test_s29cp_campaigns_stop_cleanly_without_two_gpus(tmp_path, campaign):
    d, log = without_gpus(campaign, tmp_path)
    assert "needs 2: nothing run" in log and not list(d.glob("sched*"))


def test_cp_schedule_refuses_an_unknown_block(tmp_path, capsys):
    from real.bench import cp_schedule as bench
    assert bench.main(["--out", str(tmp_path), "--cp", "2", "--model", "llama3.1-70b-block"]) == 2
    err = capsys.readouterr().err
    assert "error: --model 'llama3.1-70b-block': not a block here" in err and "llama3.1-405b-tp8-block" in err
    assert not list(tmp_path.iterdir())


def test_the_405b_slice_is_one_gpu_of_tp8():
    sh = cp_block.block_shape(False, "llama3.1-405b-tp8-block")
    assert (sh.hidden_size, sh.num_heads, sh.num_kv_heads, sh.head_dim, sh.ffn) == (16384, 16, 1, 128, 6656)
    assert cp_block.block_shape(False) == cp_block.block_shape(False, "llama3.1-8b-block")
    assert cp_block.block_shape(False).num_heads == 32

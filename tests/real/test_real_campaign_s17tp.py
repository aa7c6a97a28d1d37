"""real/campaigns/s17tp.sh (issue 14: per-rank traces of the v2-lite TP2 MoE blocks at fitting sizes):
its CPU dry run (tiny MoE cases with and without SP, two gloo ranks) writes both ranks' traces and
the one-GPU references under the named-case file names, the environment beside them, and logs the
part's exit status; without two GPUs it runs nothing."""

import json

from tests.campaigns import dry_run, without_gpus


def test_s17tp_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s17tp", tmp_path, 300)
    assert "s17tp part tp_traces rc=0" in log, log[-2000:]
    assert "s17tp done" in log
    traces = d / "traces"
    for who in ("rank0", "rank1", "tp1"):
        names = sorted(p.name for p in traces.glob(f"trace_tp_moe_tiny_48_*_{who}.json.gz"))
        assert names == [f"trace_tp_moe_tiny_48_nosp_{who}.json.gz", f"trace_tp_moe_tiny_48_sp_{who}.json.gz"]
    env_json = json.loads((d / "env_tp_traces.json").read_text())
    assert env_json.get("torch_version") or env_json.get("torch")
    assert not (d / "part_tp_traces").exists()


def test_s17tp_stops_cleanly_without_gpus(tmp_path):
    d, log = without_gpus("s17tp", tmp_path)
    assert "needs 2: nothing run" in log and not list((d / "traces").glob("*"))

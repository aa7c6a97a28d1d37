"""real/campaigns/s31pub.sh (docs/notes/s31pub_rule.md): the CPU dry run of its three parts (real.fsdp_memory with
Table 1's options: per-op SAC, eager / each block compiled under aot_eager / compiled with tensorwise Float8 linears,
FSDP2 over one gloo rank), and the clean stop without a GPU. Checks the rows the judge reads."""

import csv

from tests.campaigns import dry_run, without_gpus


def test_s31pub_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s31pub", tmp_path, 300)
    for part in ("step_eager", "step_compile", "step_fp8"):
        assert f"s31pub part {part} rc=0" in log, log[-2000:]
    assert "s31pub done" in log
    for part, compiled, float8 in (("step_eager", "False", "False"), ("step_compile", "True", "False"),
                                   ("step_fp8", "True", "True")):
        with (d / part / "fsdp_memory_r0.csv").open(newline="") as f:
            steps = list(csv.DictReader(f))
        assert [(s["step"], s["status"]) for s in steps] == [("1", "ok"), ("2", "ok"), ("3", "ok")]
        assert {(s["ac"], s["compiled"], s["float8"], s["local_batch"], s["world_size"]) for s in steps} == {
            ("op", compiled, float8, "2", "1")}
        assert all(float(s["loss"]) > 0 and float(s["step_time_s"]) > 0 for s in steps)


def test_s31pub_stops_cleanly_without_a_gpu(tmp_path):
    d, log = without_gpus("s31pub", tmp_path)
    assert "needs 1: nothing run" in log and not (d / "step_eager").exists()

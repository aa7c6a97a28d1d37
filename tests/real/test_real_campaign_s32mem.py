"""real/campaigns/s32mem.sh (docs/notes/s32mem_rule.md): the CPU dry run of three of its parts (real.fsdp_memory's
per-op SAC and no-recomputation steps, and a capped part that finds its base part's record; FSDP2 over one gloo rank),
and the clean stop without a GPU. Checks the per-phase columns the judge reads. ~12 s of CPU."""

import csv

from tests.campaigns import dry_run, without_gpus


def test_s32mem_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s32mem", tmp_path, 240, S32MEM_PARTS=" op_e none_e cap102_e ")
    for part in ("op_e", "none_e", "cap102_e"):
        assert f"s32mem part {part} rc=0" in log, log[-2000:]
    assert "op_n" not in log and "full_e" not in log and "cap106_n" not in log   # what was not asked for
    assert "memory fraction (none on the CPU) = 1.02 x op_e's live peak" in log and "s32mem done" in log
    for part, ac in (("op_e", "op"), ("none_e", "none"), ("cap102_e", "op")):
        with (d / part / "fsdp_memory_r0.csv").open(newline="") as f:
            steps = list(csv.DictReader(f))
        assert [(s["step"], s["status"]) for s in steps] == [("1", "ok"), ("2", "ok"), ("3", "ok")]
        assert {(s["ac"], s["config"], s["alloc_conf"], s["world_size"]) for s in steps} == {
            (ac, f"s32_{part}", "expandable_segments:True", "1")}
        for s in steps:   # every phase's peaks are written (0 on the CPU: no caching allocator)
            assert all(s[f"{ph}_peak_{k}_bytes"] == "0" for ph in ("fwd", "bwd", "opt") for k in ("allocated", "reserved"))


def test_s32mem_stops_cleanly_without_a_gpu(tmp_path):
    d, log = without_gpus("s32mem", tmp_path)
    assert "needs 1: nothing run" in log and not (d / "op_e").exists()

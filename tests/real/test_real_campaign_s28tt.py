"""real/campaigns/s28tt.sh (docs/notes/s28tt_rule.md): the CPU dry run of two parts (real.sac_attention_memory on
a tiny block, the bytes each block keeps counted by live storages) and the clean stop without a GPU. The dry run
checks the mechanism the campaign measures: with the attention op named in the save list (part flash: the CPU
kernel stands for flash's op) a block keeps its attention output (BF16) and log-sum-exp (FP32) beyond what it
keeps when the op is not named (part default: as torchtitan 9dec370's list does not name cuDNN's op).
~10 s of CPU (two parts, torch imported once each through the frozen interpreter)."""

import csv

from tests.campaigns import dry_run, without_gpus


def test_s28tt_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s28tt", tmp_path, 120, S28TT_PARTS=" default flash ")
    assert "s28tt part default rc=0" in log and "s28tt part flash rc=0" in log, log[-2000:]
    assert "part cudnn" not in log and "part flash_compile" not in log   # the parts not asked for
    with (d / "sac_attention_memory.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["mode"], r["block"]) for r in rows] == [(m, str(b)) for m in ("default", "flash") for b in range(4)]
    assert all(r["status"] == "ok" and r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] for r in rows)
    kept = {m: {float(r["block_kept_bytes_per_token"]) for r in rows if r["mode"] == m} for m in ("default", "flash")}
    dim, heads = int(rows[0]["dim"]), int(rows[0]["n_heads"])
    assert len(kept["default"]) == len(kept["flash"]) == 1   # every block keeps the same
    # the tiny block (dim 64, 4 heads of 16, 2 KV heads, FFN 160), B a token: wq 128, wv 64, w1 320, w2 128, output 128
    assert kept["default"] == {768.0}
    assert kept["flash"] == {768.0 + 2 * dim + 4 * heads}   # + attention output (BF16) and log-sum-exp (FP32)
    assert "s28tt done" in log


def test_s28tt_stops_cleanly_without_a_gpu(tmp_path):
    d, log = without_gpus("s28tt", tmp_path)
    assert "needs 1: nothing run" in log and not (d / "sac_attention_memory.csv").exists()

"""real/campaigns/s28mlm2.sh (docs/notes/s28mlm2_rule.md): the CPU dry run (tiny calls, dropout 0 and 0.1 back
to back, the sbhd layout, both passes), the clean stop without a GPU, and the full call list is the rule's."""

import csv

from real.bench import dense_dropout
from tests.campaigns import dry_run, without_gpus


def test_s28mlm2_campaign_cpu_dry_run(tmp_path):
    d, log = dry_run("s28mlm2", tmp_path, 120)
    assert "s28mlm2 part calls rc=0" in log, log[-2000:]
    with (d / "dense_dropout.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    keys = [(r["block"], r["batch"], r["attention_dropout"], r["bench"], r["split"]) for r in rows]
    one_pass = [(b, n, p, bench, s) for b, n, s in (("attention", "1", "fit"), ("attention", "2", "holdout"),
                                                     ("attention_sbhd", "2", "holdout"))
                for p in ("0", "0.1") for bench in ("attn_fwd", "attn_fwd_bwd")]
    assert keys == one_pass * 2
    assert all(r["gpu_name"] and r["torch_version"] and r["timestamp_utc"] and r["num_gpus"] == "1" for r in rows)
    assert "s28mlm2 done" in log


def test_s28mlm2_stops_cleanly_without_a_gpu(tmp_path):
    d, log = without_gpus("s28mlm2", tmp_path)
    assert "needs 1: nothing run" in log and not (d / "dense_dropout.csv").exists()


def test_s28mlm2_calls_are_the_rule_s():
    calls = [(c.model, c.tp, c.shape.num_heads, c.batch, c.seq_len, c.split) for c in dense_dropout.call_cases(False)]
    assert calls == [("megatron-gpt-1.7b", 1, 16, b, 4096, "fit" if b == 1 else "holdout") for b in (1, 2, 4, 8)] + [
        (m, tp, h, b, 4096, "holdout") for m, tp, h in (("megatron-gpt-16b", 4, 12), ("megatron-gpt-32b", 8, 7))
        for b in (1, 2, 4)]
    s = dense_dropout.sbhd_case(False)
    assert (s.shape.num_heads, s.batch, s.seq_len) == (16, 4, 4096)

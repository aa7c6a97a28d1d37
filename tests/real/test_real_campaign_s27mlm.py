"""real/campaigns/s27mlm.sh (issue 14, Megatron's TP 8 rows: torch's fused all-gather-matmul at the GEMM
shapes TransformerEngine's ring_exchange chunks, a check of ADOPT_TE_RING_EXCESS): the CPU dry run (gloo
ranks, --quick sizes) writes every op of section async_tp_mlm with the async_tp schema, held out, and the
environment columns every row must carry; the fused symmetric-memory ops, CUDA only, as 'unavailable'."""

import csv

from real.bench.async_tp import async_tp_split, cases_mlm
from real.bench.records import DIST_ENV_COLS, ENV_COLS

from tests.campaigns import dry_run


def test_dry_run_writes_the_megatron_shapes_held_out_on_two_ranks(tmp_path):
    root, log = dry_run("s27mlm", tmp_path, timeout_s=120, scale=1)
    assert "part x2 rc=0" in log and "s27mlm done" in log
    with open(root / "x2" / "async_tp.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for col in ENV_COLS + DIST_ENV_COLS:
        assert col in rows[0]
    assert {r["shape_tag"] for r in rows} == {tag for tag, *_ in cases_mlm(2, quick=True)}
    assert {int(r["world_size"]) for r in rows} == {2}
    for r in rows:
        assert r["split"] == async_tp_split(r["shape_tag"]) == "holdout"
        if r["op"] in ("fused", "p2p_copy", "mm_beside_copy"):   # symmetric memory: CUDA only
            assert r["status"] == "unavailable"
        else:
            assert r["status"] == "ok" and float(r["time_s"]) > 0


def test_the_full_cases_are_megatrons_tp8_ring_gemms():
    # 177B (h 12,288) on TP 8: qkv 3h/8 = 4,608, fc1 h/2 = 6,144, proj dgrad h/8 = 1,536; shard 512 rows
    cases = {tag: (kind, m, k, n) for tag, kind, m, k, n in cases_mlm(2, quick=False)}
    assert cases["megatron-gpt-177b/qkv_fprop"] == ("all_gather", 1024, 12288, 4608)
    assert cases["megatron-gpt-177b/fc1_fprop"] == ("all_gather", 1024, 12288, 6144)
    assert cases["megatron-gpt-177b/proj_dgrad"] == ("all_gather", 1024, 12288, 1536)
    assert len(cases) == 9 and all(async_tp_split(t) == "holdout" for t in cases)

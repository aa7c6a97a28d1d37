"""real/bench/ep.py's `ep` section (ep.csv: the EP2 records `twin validate` holds the twin to) on two gloo
ranks with the quick shapes: every row kind on both routing skews, each with its host interval, the
held-out split and the most loaded rank's received rows."""

import csv
import os
import subprocess
from pathlib import Path

from tests.campaigns import FORKED_PY

REPO = Path(__file__).resolve().parents[2]


def test_ep_section_writes_every_row_kind_on_two_gloo_ranks(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    subprocess.run([FORKED_PY, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    "-m", "real.bench", "--only", "ep", "--quick", "--out", str(tmp_path)],
                   cwd=REPO, env=env, check=True, capture_output=True, timeout=600)
    with open(tmp_path / "ep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_bench: dict = {}
    for r in rows:
        by_bench.setdefault(r["bench"], []).append(r)
    assert set(by_bench) == {"all_to_all", "ep_dispatch", "ep_combine", "moe_layer_ep_fwd", "moe_layer_ep_bwd"}
    for bench in ("ep_dispatch", "ep_combine"):
        assert sorted(float(r["skew"]) for r in by_bench[bench]) == [0.0, 1.0]
    assert all(r["split"] == "holdout" and r["world_size"] == "2" and float(r["time_s"]) > 0
               and float(r["host_s"]) > 0 for r in rows)
    # the world routes 2 T K (token, slot) rows: the most loaded rank receives at least half and at most all
    for r in by_bench["ep_dispatch"]:
        rows_tk = int(r["tokens_per_rank"]) * int(r["top_k"])
        assert rows_tk <= int(r["max_rank_rows"]) <= 2 * rows_tk

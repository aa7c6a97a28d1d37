"""s21ep2 (docs/notes/s21ep2_rule.md): the twin's predictions of real/campaigns/s21ep2.sh's EP2 layer
rows, written before the campaign runs (diagnostics; the rule judges the recorded rows by the same
committed code, calibration/ep_fresh.py, with each row's recorded max_rank_rows).

    PYTHONPATH=. .venv/bin/python benchmarks/s21ep2_prereg.py OUT.csv

Each case's max_rank_rows is the bench's own routing replayed on the CPU: real/bench/ep.py ep_case draws
each rank's expert ids with real/bench/moe_layer.py skewed_routing from a CPU generator seeded with the
rank (one generator a rank, consumed case after case in FRESH_CASES' order), and sums the rows each
rank receives over both ranks. A different torch build could draw other ids for the skewed cases; the
judged prediction is always the recorded row's.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import pandas as pd
import torch

from calibration import ep_fresh
from real.bench.ep_fresh import FRESH_CASES
from real.bench.moe_layer import skewed_routing
from real.configs import get_spec

WORLD = 2
BENCHES = ("ep_dispatch", "ep_combine", "moe_layer_ep_fwd", "moe_layer_ep_bwd")
PRECISIONS = ("bf16", "fp8-blockwise")


def max_rank_rows(cases=FRESH_CASES, world: int = WORLD) -> list[int]:
    """The most rows any rank receives in each case, as ep_case computes it from each rank's draw."""
    spec = get_spec("v3-slice-1l")
    gens = [torch.Generator().manual_seed(r) for r in range(world)]
    out = []
    for T, E, skew, _ in cases:
        rows = torch.zeros(world, dtype=torch.int64)
        for g in gens:
            _, ids = skewed_routing(T, E, spec.top_k, skew, spec.route_scale, "cpu", g)
            rows += torch.bincount(ids.flatten() // (E // world), minlength=world)
        out.append(int(rows.max()))
    return out


def planned_rows() -> pd.DataFrame:
    spec = get_spec("v3-slice-1l")
    rows = []
    for (T, E, skew, split), mrr in zip(FRESH_CASES, max_rank_rows()):
        for bench in BENCHES:
            for prec in (PRECISIONS if bench.startswith("moe_layer") else ("bf16",)):
                rows.append(dict(bench=bench, world_size=WORLD, tokens_per_rank=T, num_experts=E, top_k=spec.top_k,
                                 hidden_size=spec.hidden_size, skew=skew, max_rank_rows=mrr, precision=prec,
                                 split=split, bytes_per_rank=T * spec.top_k * spec.hidden_size * 2.0, time_s=1.0))
    return pd.DataFrame(rows)


def main(argv: list[str]) -> int:
    pred = ep_fresh.predict_rows(planned_rows(), ep_fresh.host_inputs())
    pred = pred.drop(columns=["measured_s", *[c for c in pred.columns if c.startswith("rel_error")]])
    pred["commit"] = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    pred["written_utc"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    pred.to_csv(argv[0], index=False)
    print(pred.drop(columns=["commit", "written_utc"]).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""Whether the EP peers of a PP x EP pipeline step wait for each other across the two pipelines (s22pp4j).

real/pipeline lays four ranks out as two data-parallel pipelines of pp stages (global rank = dp_rank * pp
+ pp_rank) and splits each stage's experts over that stage's ep replicas: EP group {p, pp + p, ...}.
Every rank runs `build_schedule(...).programs[pp_rank]` (real/pipeline/engine.py), so the EP peers of a
group run the same op list in the same order, and each MoE layer's dispatch and combine (real/ep.py:
blocking .tolist() and all-to-alls) makes them meet inside the same op. The twin simulates one pipeline
(twin.sim.pipeline); it would miss a wait only if a peer arrived at its all-to-all while the other was
still in an earlier op, i.e. if the peers' ops started apart.

peer_offsets measures that from a run's per-op stream marks (pipeline_ops.csv): for each op of each
rank of the first pipeline, the same op (same rep, pipeline rank and op_index) of each peer, and the
distance between their start (and end) marks. `wait_bound_s`, the per-step sum over a rank's ops of the
start distance to its peer (median over the timed steps and ranks), bounds what any rendezvous of the
peers at op boundaries could add to that rank's step. Measurements only: no twin figure.

    python -m calibration.ep_peers    # every committed PP x EP folder's configurations
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration.p2p_waits import COMPUTE_KINDS
from calibration.records_io import csv_exists, read_csv

# the committed four-GPU PP2 x EP2 records: v2-lite-slice (the diagnostic split) and s21pp4's two
# deliveries of three other MoE slices (held out for s22pp4j's rule)
FOLDERS = ("h100x4", "h200x4") + tuple(f"h200x4/{d}/{m}" for d in ("s21pp4", "s21pp4b")
                                       for m in ("qwen3moe-mla-slice", "qwen2moe-mla-slice", "mixtral-mla-slice"))
CONFIG = ["model", "schedule", "pp", "ep", "num_microbatches"]


def peer_pairs(ops: pd.DataFrame) -> pd.DataFrame:
    """Each compute op (F, B, W, BW, FB) of a rank of pipeline 0 beside the same op of each EP peer
    (global rank pipeline_rank + d * pp, d >= 1): columns CONFIG, rep, rank, op_index, start_s,
    end_s, peer_start_s, peer_end_s. Rows with ep == 1 or pp == 1 are left out."""
    ops = ops[(ops["ep"] > 1) & (ops["pp"] > 1) & ops["kind"].isin(list(COMPUTE_KINDS))]
    if ops.empty:
        return pd.DataFrame(columns=CONFIG + ["rep", "rank", "op_index", "start_s", "end_s", "peer_start_s",
                                              "peer_end_s"])
    ops = ops.assign(pipeline=ops["rank"] // ops["pp"], stage_rank=ops["rank"] % ops["pp"])
    keys = CONFIG + ["rep", "stage_rank", "op_index"]
    first = ops[ops["pipeline"] == 0][keys + ["rank", "start_s", "end_s"]]
    peers = ops[ops["pipeline"] > 0][keys + ["start_s", "end_s"]].rename(
        columns={"start_s": "peer_start_s", "end_s": "peer_end_s"})
    return first.merge(peers, on=keys, how="inner").drop(columns="stage_rank")


def peer_offsets(ops: pd.DataFrame) -> list[dict]:
    """Per configuration of `ops` (pipeline_ops rows): how many op pairs, the median / P90 / max
    distance between the peers' op starts and the median between their ends (seconds), the median
    op length, and wait_bound_s: per timed step and rank of pipeline 0 the summed start distance to
    its peer over the rank's ops, the median over steps and ranks."""
    pairs = peer_pairs(ops)
    out = []
    for key, g in pairs.groupby(CONFIG):
        d_start = (g["start_s"] - g["peer_start_s"]).abs()
        d_end = (g["end_s"] - g["peer_end_s"]).abs()
        per_step = d_start.groupby([g["rep"], g["rank"]]).sum()
        out.append({**dict(zip(CONFIG, key)), "num_pairs": len(g),
                    "start_median_s": float(d_start.median()), "start_p90_s": float(np.percentile(d_start, 90)),
                    "start_max_s": float(d_start.max()), "end_median_s": float(d_end.median()),
                    "op_median_s": float((g["end_s"] - g["start_s"]).median()),
                    "wait_bound_s": float(per_step.median())})
    return out


def committed(root: Path | str | None = None) -> list[dict]:
    """peer_offsets of every committed folder in FOLDERS that holds pipeline_ops, each row with its folder."""
    root = rec.records_root() if root is None else root
    out = []
    for folder in FOLDERS:
        path = Path(root) / folder / "pipeline_ops.csv"
        if csv_exists(path):
            out += [{"folder": folder, **r} for r in peer_offsets(read_csv(path))]
    return out


def format_table(rows: list[dict]) -> str:
    lines = ["EP peers across the two pipelines (same op of the peer rank; ms): start |d| median / P90 / max, "
             "end |d| median, op median, summed start |d| a rank-step"]
    for r in rows:
        lines.append(f"  {r['folder']:<34} {r['model']:<19} {r['schedule']:<9} n{int(r['num_microbatches']):<3} "
                     f"{r['num_pairs']:>4} pairs  {r['start_median_s'] * 1e3:5.2f} / {r['start_p90_s'] * 1e3:5.2f} / "
                     f"{r['start_max_s'] * 1e3:5.2f}  end {r['end_median_s'] * 1e3:5.2f}  "
                     f"op {r['op_median_s'] * 1e3:5.1f}  sum {r['wait_bound_s'] * 1e3:5.2f}")
    return "\n".join(lines)


@entry.script
def main(argv: list[str] | None = None) -> int:
    entry.parser("calibration.ep_peers", __doc__).parse_args(argv)
    print(format_table(committed(rec.records_root())))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""calibration.ep_peers (s22pp4j): the EP peers of the two pipelines of a PP2 x EP2 step, op by op."""

import pandas as pd
import pytest

from calibration import ep_peers
from calibration.records_io import read_csv


def _op(rank, op_index, kind, start_s, end_s, rep=0, ep=2):
    return {"model": "m", "schedule": "zb1p", "pp": 2, "ep": ep, "num_microbatches": 4, "rep": rep, "rank": rank,
            "op_index": op_index, "kind": kind, "start_s": start_s, "end_s": end_s}


def test_peer_offsets_pairs_each_op_with_the_same_op_of_the_other_pipelines_stage():
    """pp 2, ranks 0,1 pipeline 0 and 2,3 pipeline 1: rank 0's ops meet rank 2's, rank 1's rank 3's.
    Rank 0's F starts 1 ms before rank 2's, its W 3 ms after (|d| 1 and 3 ms); rank 1's F and rank 3's
    level. Sends and receives are not compute ops; an ep 1 row pairs nothing. Per rank-step: rank 0
    sums 4 ms, rank 1 0 ms: the median 2 ms."""
    ops = pd.DataFrame([_op(0, 0, "F", 0.000, 0.010), _op(2, 0, "F", 0.001, 0.010),
                        _op(0, 1, "W", 0.013, 0.020), _op(2, 1, "W", 0.010, 0.020),
                        _op(1, 0, "F", 0.010, 0.030), _op(3, 0, "F", 0.010, 0.031),
                        _op(0, 2, "send", 0.0, 0.5), _op(2, 2, "send", 0.0, 0.1),
                        _op(0, 0, "F", 0.0, 0.1, ep=1), _op(2, 0, "F", 0.05, 0.1, ep=1)])
    (row,) = ep_peers.peer_offsets(ops)
    assert row["num_pairs"] == 3
    assert row["start_median_s"] == pytest.approx(0.001) and row["start_max_s"] == pytest.approx(0.003)
    assert row["end_median_s"] == pytest.approx(0.0) and row["wait_bound_s"] == pytest.approx(0.002)
    assert ep_peers.peer_offsets(ops[ops["ep"] == 1]) == []


def test_committed_pp2ep2_peers_run_each_op_in_lockstep():
    """Every committed four-GPU PP2 x EP2 configuration, 46 (v2-lite-slice on 4xH100, 11, and 4xH200,
    12; s21pp4's two deliveries of three slices on 4xH200, 11 and 12): the EP peers of the two
    pipelines start the same op within 0.1 ms (median over op pairs), and a rank's start distances to
    its peer sum to under 1% of the measured step (at most 3.1 ms, v2-lite zb1p n16 on 4xH100; 2.6 ms
    of 501 ms on the new slices): no rank reaches an op while its peer is in another, so a rendezvous
    of the two pipelines at op boundaries adds at most that (docs/notes/s22pp4j_rule.md)."""
    rows = ep_peers.committed()
    assert len(rows) == 46 and {r["folder"] for r in rows} == set(ep_peers.FOLDERS)
    assert max(r["start_median_s"] for r in rows) < 1e-4
    for r in rows:
        steps = read_csv(ep_peers.rec.MEASUREMENTS_DIR / r["folder"] / "pipeline_step.csv")
        step_s = float(steps[(steps["schedule"] == r["schedule"]) & (steps["ep"] == 2)
                             & (steps["num_microbatches"] == r["num_microbatches"])]["time_s"].iloc[0])
        assert r["wait_bound_s"] < 0.01 * step_s, (r, step_s)

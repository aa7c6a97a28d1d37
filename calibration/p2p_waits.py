"""Where a pipeline rank's measured idle sits: in its receives, and there waiting for the peer's
producing op or beyond it (s15p2p, docs/notes/s15p2p_rule.md).

real/pipeline/engine.py issues every send as an `isend` on its flow's own NCCL communicator (its
own stream) and never waits on it before the step's end; a receive is an `irecv(...).wait()`,
which makes the compute stream wait for the receive kernel. The engine marks both on the compute
stream (pipeline_ops.csv kinds `send` / `recv`). A send's mark starts right after the op that
produced its tensor, so the peer's `send` start is the producer's end on the GPU. A receive that
ends long after its producer's end would be the NCCL rendezvous (the send or receive kernel
waiting for its peer) or a slow transfer; one that ends a transfer after it is plain dataflow,
which the twin models (an op starts when its input's producer ends, plus p2p_s).

Rows of pipeline_ops.csv carry no act/grad label; a receive is matched to the peer's send of the
same (micro-batch, chunk) in the same step among the ranks of its own pipeline (global ranks
r // pp alike, as real/pipeline/engine.build_mesh lays them out). Where that is not exactly one
send (pp > 2: a middle stage sends both directions), the receive is left unmatched.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

# pipeline_ops.csv's op kinds (real/pipeline/engine.py); calibration.pipeline takes them from here
COMPUTE_KINDS = ("F", "B", "W", "BW", "FB")
SCHEDULE_KINDS = COMPUTE_KINDS + ("send", "recv")


def recv_waits(ops: pd.DataFrame, pp: int) -> pd.DataFrame:
    """One row per receive of one configuration's pipeline_ops rows: rep, rank, microbatch, chunk,
    wait_s (its span on the compute stream), producer_end_s (the peer's matching send mark's start;
    NaN when unmatched), before_producer_s (the part of the wait before the producer ended),
    after_producer_s (the rest: transfer plus any rendezvous), sender_rank (-1 when unmatched) and
    sender_next (the kind and chunk of the sender's next compute op after the send, e.g. "W1"; ""
    at the step's end or unmatched)."""
    rows = []
    for rep, step in ops.groupby("rep"):
        # on the step's arrays, not a DataFrame filtered per receive (~20x faster): the same rows, the
        # same comparisons and the same arithmetic in the same order, so the same figures
        kind, ranks = step["kind"].to_numpy(), step["rank"].to_numpy()
        microbatch, chunk = step["microbatch"].to_numpy(), step["chunk"].to_numpy()
        start, end = step["start_s"].to_numpy(), step["end_s"].to_numpy()
        is_send, is_compute = kind == "send", np.isin(kind, COMPUTE_KINDS)
        for i in np.flatnonzero(kind == "recv"):
            rank = int(ranks[i])
            peers = np.flatnonzero(is_send & (ranks // pp == rank // pp) & (ranks != rank)
                                   & (microbatch == microbatch[i]) & (chunk == chunk[i]))
            wait_s = float(end[i] - start[i])
            ready_s = float(start[peers[0]]) if len(peers) == 1 else np.nan
            before_s = np.nan if np.isnan(ready_s) else max(0.0, min(ready_s, end[i]) - start[i])
            sender_next = ""
            if len(peers) == 1:
                later = np.flatnonzero((ranks == ranks[peers[0]]) & (start > ready_s) & is_compute)
                if len(later):
                    nxt = later[np.argmin(start[later])]     # the first of the earliest, as idxmin
                    sender_next = f"{kind[nxt]}{int(chunk[nxt])}"
            rows.append({"rep": rep, "rank": rank, "microbatch": int(microbatch[i]), "chunk": int(chunk[i]),
                         "wait_s": wait_s, "producer_end_s": ready_s, "before_producer_s": before_s,
                         "after_producer_s": wait_s - before_s,
                         "sender_rank": int(ranks[peers[0]]) if len(peers) == 1 else -1,
                         "sender_next": sender_next})
    return pd.DataFrame(rows)


def rank_steps(ops: pd.DataFrame) -> pd.DataFrame:
    """One row per (rep, rank): the step's span over the schedule's ops (as measured_idle_by_rep_s
    takes it), the rank's compute seconds, its idle (span - compute), its receives' seconds, and the
    compute seconds of the step's slowest rank."""
    ops = ops[ops["kind"].isin(SCHEDULE_KINDS)]
    rows = []
    for rep, step in ops.groupby("rep"):
        span_s = float(step["end_s"].max() - step["start_s"].min())
        dur = step["end_s"] - step["start_s"]
        compute = dur[step["kind"].isin(COMPUTE_KINDS)].groupby(step["rank"]).sum()
        recv = dur[step["kind"] == "recv"].groupby(step["rank"]).sum()
        for rank, compute_s in compute.items():
            rows.append({"rep": rep, "rank": int(rank), "span_s": span_s, "compute_s": float(compute_s),
                         "idle_s": span_s - float(compute_s), "recv_s": float(recv.get(rank, 0.0)),
                         "slowest_compute_s": float(compute.max())})
    return pd.DataFrame(rows)

"""s24bwd3 (issue 13, docs/notes/s24bwd3_rule.md): the EP backward's host as an input of the run it predicts.

s23bwd2 found the EP backward's host (bench-small's host-bound backward) is not one level across hosts, and
s23bwd's term (c), the slower rank pacing the backward, had no measured input. Each part of an s24bwd3 campaign
is one torchrun (real.pipeline) whose fitting split holds, beside PP2 1f1b at 4 micro-batches, one EP2 step
configuration (pp 1, ep 2, dp 2, 1 micro-batch) of the same shape, run by the same two processes that then run
the held-out EP2 steps (2, 3 and 4 micro-batches). This module reads from that fitting EP2 step one figure a run:
the backward's host seconds a launch on the slower of the two ranks.

fit_bwd_rates: per rank, each fitting EP2 BW op (one micro-batch's loss.backward) whose GPU began and ended
within pipeline.HOST_CLEAN_LEAD_S of its host (level at both ends: a host-bound backward, its interval the issue
itself; a GPU-bound backward, its host some ms ahead and at times stalled behind a full launch queue, gives no
rate: s23bwd's qwen3moe-slice fitting steps lead by 8-10 ms) takes (host interval - its all-to-all nodes at
pipeline.EP_BWD_A2A_CALL_S) / (the B + W op lists' launches less the nodes), the lists those of
calibration.pipeline.stage_ops for the whole model at ep 2; a rank's rate is the median over its ops.
run_bwd_host_s: the larger of the ranks' rates (the two ranks pace each other through the backward's
all-to-alls: the slower host sets the backward, s23bwd). None where no rank has a rate.
run_live: a run part's held-out EP2 steps priced `committed` (as s20epnew's / s23bwd2's rows: the committed
`<gpu>x2` folder's rates and EP terms, the run's routing) with the current switches, and `run`: the same with
the run's input added under pipeline.EP_BWD_RUN_KEY (it acts only where ADOPT_EP_BWD_RUN_HOST is on).

    python -m calibration.ep_bwd_run RUN_FOLDER GPU    (RUN_FOLDER: <gpu>x2/s24bwd3_<stamp>, its part folders)
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import calibration.pipeline as pipe
from calibration import entry
from calibration import prereg
from calibration.ep_postsync import error_line
from calibration.predict import CUB_LAUNCH_TERM, CubLaunch, EpBwdTokensCall, gpu_spec
from calibration.records_io import csv_exists, read_csv
from twin.core.specs import get_model

# Amendment A1 (docs/notes/s24bwd3_rule.md, committed after the first delivery's figures were seen, before any
# later run): the fitting step's launches counted on its routed op lists, as the held-out steps are priced (the
# first version counted balanced lists: bench-small-8l's routed lists carry 1,082 launches a backward + forward
# against 921, so its rate was solved over too few launches and its held-out backwards over-priced ~17%)
ADOPT_ROUTED_FIT_COUNTS = True

STEP_KEYS = ["bench", "model", "schedule", "pp", "ep", "dp", "num_gpus", "num_microbatches", "micro_batch_seqs",
             "seq_len", "precision", "num_layers"]


def _launches(ops: list) -> int:
    return sum(h is not None for h, _ in ops)


def _num_layers(folder: Path, model: str) -> int:
    steps = read_csv(Path(folder) / "pipeline_step.csv")
    return int(steps.loc[steps["model"] == model, "num_layers"].iloc[0])


def fit_bwd_op_rates(ops: pd.DataFrame, num_layers: int, gpu: str, profile,
                     routing: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each level (host-bound) fitting EP2 BW op of pipeline_ops (or pipeline_host) rows as (rank, rep, rate_s):
    (host interval - nodes * EP_BWD_A2A_CALL_S) / (launches - nodes) (fit_bwd_rates' per-op figure; s26eprate
    pairs each with the host probe right before its step)."""
    bw = ops[(ops["split"] == "fit") & (ops["pp"] == 1) & (ops["ep"] == 2) & (ops["kind"] == "BW")]
    level = ((bw["start_s"] - bw["host_start_s"]) <= pipe.HOST_CLEAN_LEAD_S) & (
        (bw["end_s"] - bw["host_end_s"]) <= pipe.HOST_CLEAN_LEAD_S)
    bw = bw[level]
    out = []
    for (model, B, S, label, n), g in bw.groupby(["model", "micro_batch_seqs", "seq_len", "precision",
                                                  "num_microbatches"]):
        spec = pipe._spec_of({"model": model, "num_layers": num_layers})
        ep_rows = {}
        if ADOPT_ROUTED_FIT_COUNTS and routing is not None:
            fit_row = pd.Series({"model": model, "pp": 1, "ep": 2, "num_microbatches": n, "micro_batch_seqs": B,
                                 "seq_len": S, "precision": label, "schedule": "1f1b", "num_layers": num_layers})
            ep_rows = pipe.ep_layer_rows(routing, fit_row, get_model(str(model)).top_k)
        so = pipe.stage_ops(spec, range(spec.num_layers), True, True, int(B), int(S), str(label), gpu_spec(gpu),
                            profile, 2, ep_rows=ep_rows)
        nodes = sum(isinstance(o, EpBwdTokensCall) for o in so.b)
        launches = _launches(so.b) + _launches(so.w)
        # s25ep H (ADOPT_CUB_LAUNCH_HOST): the cub radix launches at their measured host seconds, not the rate
        cub_s = pipe.cub_terms(gpu).get(CUB_LAUNCH_TERM)
        cub = sum(isinstance(o, CubLaunch) for o in so.b + so.w) if cub_s is not None else 0
        host_s = g["host_end_s"] - g["host_start_s"]
        rate = (host_s - nodes * pipe.EP_BWD_A2A_CALL_S - cub * (cub_s or 0.0)) / (launches - nodes - cub)
        rep = g["rep"] if "rep" in g else pd.Series(-1, index=g.index)
        out.append(pd.DataFrame({"rank": g["rank"].astype(int), "rep": rep.astype(int), "rate_s": rate}))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame(columns=["rank", "rep", "rate_s"])


def fit_bwd_rates(ops: pd.DataFrame, num_layers: int, gpu: str, profile,
                  routing: pd.DataFrame | None = None) -> dict[int, float]:
    """{rank: the median over its level (host-bound) fitting EP2 BW ops of (host interval - nodes * EP_BWD_A2A_CALL_S)
    / (launches - nodes)} of pipeline_ops (or pipeline_host) rows; a rank without such an op is absent.
    `routing` (the part's pipeline_routing rows): under ADOPT_ROUTED_FIT_COUNTS (amendment A1) the launches are
    counted on the op lists the held-out steps are priced on, each MoE layer at the fitting step's most loaded
    EP rank's rows (pipeline.ep_layer_rows); balanced otherwise."""
    per_op = fit_bwd_op_rates(ops, num_layers, gpu, profile, routing)
    return {int(rank): float(np.median(g["rate_s"])) for rank, g in per_op.groupby("rank")}


def run_bwd_host_s(folder: Path, gpu: str, profile) -> float | None:
    """The run's EP backward host seconds a launch: the slower rank's (fit_bwd_rates of the part folder's
    pipeline_ops.csv), None without one."""
    folder = Path(folder)
    ops = read_csv(folder / "pipeline_ops.csv")
    models = ops["model"].unique()
    routing = read_csv(folder / "pipeline_routing.csv") if csv_exists(folder / "pipeline_routing.csv") else None
    rates = fit_bwd_rates(ops, _num_layers(folder, str(models[0])), gpu, profile, routing) if len(models) == 1 else {}
    return max(rates.values()) if rates else None


def run_live(folder: Path, gpu: str, inputs: tuple | None = None) -> pd.DataFrame:
    """A run part's held-out EP2 steps: prereg.EP_KEY, measured_s, run_bwd_host_s, predicted_s_committed /
    _run and rel_error_committed / _run (see the module docstring); `inputs`: prereg.two_gpu_inputs(gpu)."""
    folder = Path(folder)
    steps = read_csv(folder / "pipeline_step.csv")
    steps = steps[(steps["split"] == "holdout") & (steps["bench"] == "ep_step") & (steps["time_s"] > 0)]
    rows = [{"gpu": gpu, **{k: r[k] for k in STEP_KEYS}} for _, r in steps.iterrows()]
    routing = read_csv(folder / "pipeline_routing.csv") if csv_exists(folder / "pipeline_routing.csv") else None
    profile, accumulate, host, hold_s = inputs or prereg.two_gpu_inputs(gpu)
    run_s = run_bwd_host_s(folder, gpu, profile)
    run_host = {**(host or {}), **({pipe.EP_BWD_RUN_KEY: run_s} if run_s is not None else {})}
    out = steps.assign(gpu=gpu)[prereg.EP_KEY + ["micro_batch_seqs", "seq_len", "time_s"]].rename(
        columns={"time_s": "measured_s"}).assign(run_bwd_host_s=run_s if run_s is not None else np.nan)
    for label, inp in (("committed", (profile, accumulate, host, hold_s)), ("run", (profile, accumulate, run_host, hold_s))):
        pred = prereg.predict_ep(rows, routing=routing, inputs={gpu: inp})
        out[f"predicted_s_{label}"] = pred["predicted_s"].to_numpy()
        out[f"rel_error_{label}"] = out[f"predicted_s_{label}"] / out["measured_s"] - 1.0
    return out.reset_index(drop=True)


def run_table(run: Path, gpu: str, inputs: tuple | None = None) -> pd.DataFrame:
    """run_live of every part folder of a run (those with pipeline_step.csv), a `part` column added."""
    inputs = inputs or prereg.two_gpu_inputs(gpu)
    parts = [run_live(d, gpu, inputs).assign(part=d.name) for d in sorted(Path(run).iterdir())
             if d.is_dir() and any(d.glob("pipeline_step.csv*"))]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.ep_bwd_run", __doc__)
    ap.add_argument("run", type=entry.records_folder, metavar="RUN_FOLDER", help="an s24bwd3 run: <gpu>x2/s24bwd3_<stamp>")
    ap.add_argument("gpu", type=entry.gpu_name, metavar="GPU")
    args = ap.parse_args(argv)
    with entry.user_inputs("RUN_FOLDER", args.run, "an s24bwd3 run folder (part folders of real.pipeline records)"):
        return _report(args.run, args.gpu)


def _report(run: Path, gpu: str) -> int:
    inputs = prereg.two_gpu_inputs(gpu)
    pd.set_option("display.width", 200)
    for on in (False, True):
        pipe.ADOPT_EP_BWD_RUN_HOST = on
        t = run_table(run, gpu, inputs)
        print("ADOPT_EP_BWD_RUN_HOST", on)
        for label in ("committed", "run"):
            print(error_line(f"{run.name} {label}", t[f"rel_error_{label}"].to_numpy()))
            small = t[t["model"] == "bench-small"]
            print(error_line(f"  bench-small {label}", small[f"rel_error_{label}"].to_numpy()))
        print(t[["part", "num_microbatches", "measured_s", "run_bwd_host_s", "predicted_s_committed",
                 "predicted_s_run"]].to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

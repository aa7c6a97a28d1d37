"""A TP GEMM with an NCCL collective beside it, measured against what the twin charges for
TransformerEngine's userbuffers overlap (plan.tp_overlap_kind 'te_userbuffers'; issue 14, s11tpo).

real/bench/tp_beside.py (campaign real/campaigns/s11tpo.sh) times, on two GPUs, GEMMs of Megatron's
GPT 177B TP8 rank alone, the collective alone, and both from a common start with enough back-to-back
collectives on a second stream to outlast the GEMM (calibration/measurements/<gpu>x2/tp_beside.csv),
with NCCL's default channels and with 16 (TE's num_sm). Per (case, channels):
  gemm_slowdown      the GEMM's span beside the collectives over its time alone, where the
                     collectives outlasted it (the GEMM ran beside communication all along);
  twin_slowdown      what the twin takes for a GEMM beside TE's 16-SM kernels: the profile's
                     untold slowdown at 16 SMs (compute.untold_sm_slowdown; StepCosts._beside_comm_slowdown);
  comm_slowdown      the collectives' span beside the GEMM over their time alone (the twin charges
                     none: tp_overlap's docstring);
  upper_bound        rows of the first campaign (timing 'cuda_events'): the GEMM's span also holds
                     the host's issue of the collectives launched before it, so gemm_slowdown bounds
                     the slowdown from above.
All rows are held out: nothing here is fitted.

    python -m calibration.tp_beside [--gpu h100x2] [--root DIR] [--json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration.records_io import csv_exists, read_csv
from twin.costs import compute, tp_overlap
from twin.costs.profile import Profile, load_profile
from twin.core.specs import get_gpu


def load(gpu: str, root: Path | str | None = None) -> pd.DataFrame:
    """The ok rows of a GPU directory's tp_beside.csv (empty where there is none)."""
    root = rec.records_root() if root is None else root
    path = Path(root) / gpu / "tp_beside.csv"
    if not csv_exists(path):
        return pd.DataFrame()
    df = read_csv(path, dtype={"nccl_channels": str})
    return df[(df["status"] == "ok") & (df["time_s"] > 0)].reset_index(drop=True)


def compare(df: pd.DataFrame, profile: Profile, gpu_name: str) -> list[dict]:
    """Per (case, NCCL channels, timing): measured GEMM and collective slowdowns beside each other,
    and the twin's. Each campaign's rows stay apart (the first campaign's 'cuda_events', the rerun's
    'cuda_events_after_sleep'): a run is the rows from one 'mm' row of a (case, channels) to the next,
    in file order, as the bench writes them; its timing is its GEMM-beside row's."""
    twin = compute.untold_sm_slowdown(profile, "bf16", tp_overlap.TE_COMM_SMS, get_gpu(gpu_name))
    rows = []
    run = (df["op"] == "mm").astype(int).groupby([df["shape_tag"], df["nccl_channels"]]).cumsum()
    for (tag, channels, _), g in df.groupby([df["shape_tag"], df["nccl_channels"], run], sort=False):
        t = dict(zip(g["op"], g["time_s"]))
        if not {"mm", "collective", "mm_beside", "collective_beside"} <= t.keys():
            continue
        repeats = int(g.loc[g["op"] == "collective_beside", "collective_repeats"].iloc[0])
        timing = str(g.loc[g["op"] == "mm_beside", "timing"].iloc[0])
        rows.append({"shape_tag": tag, "nccl_channels": channels, "timing": timing, "kind": g["kind"].iloc[0],
                     "mm_s": t["mm"], "collective_s": t["collective"], "collective_repeats": repeats,
                     "covered": t["collective_beside"] >= t["mm_beside"],
                     "gemm_slowdown": t["mm_beside"] / t["mm"], "twin_slowdown": twin,
                     "rel_error": twin / (t["mm_beside"] / t["mm"]) - 1.0,
                     "comm_slowdown": t["collective_beside"] / (repeats * t["collective"]),
                     # the first campaign's design: the GEMM's span holds the host's issue of the
                     # collectives before it (real/bench/tp_beside.py _beside_runs)
                     "upper_bound": timing == "cuda_events"})
    return rows


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.tp_beside", description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", default="h100x2")
    ap.add_argument("--root", type=Path, help="the records root (default: --records DIR, else calibration/measurements)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--profile", default=None, help="the twin profile's GPU (default: --gpu before its 'x')")
    args = ap.parse_args(argv)
    args.root = Path(args.root) if args.root else rec.records_root()
    df = load(args.gpu, args.root)
    if df.empty:
        print(f"no tp_beside.csv rows under {args.root}/{args.gpu}", file=sys.stderr)
        return 2
    base = args.profile or args.gpu.split("x")[0]
    rows = compare(df, load_profile(base), base)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['shape_tag']:36s} ch {r['nccl_channels']:>7s}  GEMM {r['mm_s'] * 1e3:6.3f} ms  x{r['gemm_slowdown']:.3f} beside "
              f"{r['kind']} (twin x{r['twin_slowdown']:.3f}, {r['rel_error']:+.1%}{'' if r['covered'] else ', not covered'})  "
              f"collective x{r['comm_slowdown']:.3f}{'  (upper bound)' if r['upper_bound'] else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

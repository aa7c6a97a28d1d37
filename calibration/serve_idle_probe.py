"""The idle-gap probe's records summarised (session s27serve round 3, docs/notes/s27serve3_rule.md; evidence for the
low-load slowdown of small models' graph replays, never a criterion): per model, rows, how the host waited and the idle
gap, the median of one decode-graph replay's seconds (total: replay call to .tolist(); gpu: CUDA events; launch: the
host's replay() call), the first replay after the gap against the back-to-back ones after it, and NVML's SM clock.

    python -m calibration.serve_idle_probe [--gpu h200] [--name s27serve3]
reads calibration/measurements/<gpu>/<name>/idle/<model>/idle_probe.csv.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration.records_io import csv_exists, read_csv

NAME = "s27serve3"
MODELS = ("bench-small", "v3-slice-1l")


def load(root: Path | str | None = None, gpu: str = "h200", name: str = NAME) -> pd.DataFrame:
    """Every probe row of the models found (an empty frame where none is)."""
    root = rec.records_root() if root is None else root
    frames = [read_csv(p) for m in MODELS if csv_exists(p := Path(root) / gpu / name / "idle" / m / "idle_probe.csv")]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per (model, rows, wait, gap_s): medians of the first replay after the gap (first_*) and of the back-to-back
    replays after it (chain_*), in seconds; the first's ratio to the chain's; the SM clock before the gap."""
    keys = ["model", "rows", "wait", "gap_s"]
    df = df.assign(wait_over_s=df.wait_s - df.gap_s)
    first = df[df.chain == 0].groupby(keys)
    chain = df[df.chain > 0].groupby(keys)
    out = pd.DataFrame({
        "first_total_s": first.total_s.median(), "first_gpu_s": first.gpu_s.median(),
        "first_launch_s": first.launch_s.median(), "chain_total_s": chain.total_s.median(),
        "chain_gpu_s": chain.gpu_s.median(), "chain_launch_s": chain.launch_s.median(),
        "wait_over_s": first.wait_over_s.median(),
        "sm_mhz": first.sm_mhz_before.median(), "n": first.size()})
    out["first_over_chain"] = out.first_total_s / out.chain_total_s
    return out.reset_index()


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.serve_idle_probe", __doc__)
    ap.add_argument("--gpu", default="h200")
    ap.add_argument("--name", default=NAME)
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    df = load(rec.records_root(), args.gpu, args.name)
    if df.empty:
        print(f"--name: no idle probe records under {args.gpu}/{args.name}/idle/<model>/", file=sys.stderr)
        return 2
    s = summary(df)
    pd.set_option("display.width", 200)
    us = [c for c in s.columns if c.endswith("_s") and c != "gap_s"]
    s[us] = (s[us] * 1e6).round(1)
    s["gap_s"] = s.gap_s * 1e3
    s = s.rename(columns={"gap_s": "gap_ms", **{c: c.removesuffix("_s") + "_us" for c in us}})
    print("medians (microseconds; the gap in milliseconds)")
    print(s.round(3).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The host-pace probe of an interleaved run (real/campaigns/s18probe.sh), read alone (s18probe, issue 13).

    PYTHONPATH=. .venv/bin/python benchmarks/s18probe_figures.py FOLDER [FOLDER ...]

FOLDER holds pipeline_host_probe.csv (calibration/measurements/<host>/s18probe_<stamp>/). Per part
(micro-batch count), pipeline rank and probe (launch: us a small kernel launch issued behind a sleeping
stream; python: us a pass of the pure-Python loop), the median over the part's cycles of the rank's
median (a pipeline rank is several global ranks under EP), beside each half of the cycles and the range of
the cycle medians; then the launch probe cycle by cycle. Reads the probe only: no step time, no op.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from calibration.records_io import csv_exists, read_csv


def per_cycle(probe: pd.DataFrame) -> pd.DataFrame:
    """us_per_call by (part, probe, pp_rank, cycle): the median over the global ranks of that pp rank."""
    keys = ["num_microbatches", "probe", "pp_rank", "cycle"]
    return probe.groupby(keys, as_index=False)["us_per_call"].median()


def summary(probe: pd.DataFrame) -> pd.DataFrame:
    """Per part, probe and pp rank: the median of the cycle values over all cycles, each half, min, max;
    and the share of launch probes whose stream was still held after the last launch."""
    cyc = per_cycle(probe)
    rows = []
    for (n, kind, pp_rank), g in cyc.groupby(["num_microbatches", "probe", "pp_rank"]):
        g = g.sort_values("cycle")
        half = (g["cycle"].max() + 1) // 2
        mine = probe[(probe["num_microbatches"] == n) & (probe["probe"] == kind) & (probe["pp_rank"] == pp_rank)]
        blocked = pd.to_numeric(mine["stream_blocked"], errors="coerce")
        rows.append(dict(part=f"n{n}", probe=kind, pp_rank=pp_rank, cycles=len(g),
                         median_us=g["us_per_call"].median(),
                         first_half_us=g[g["cycle"] < half]["us_per_call"].median(),
                         second_half_us=g[g["cycle"] >= half]["us_per_call"].median(),
                         min_us=g["us_per_call"].min(), max_us=g["us_per_call"].max(),
                         blocked_share=blocked.mean() if kind == "launch" else float("nan")))
    return pd.DataFrame(rows)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description="the host-pace probe of s18probe record folders, per part, pp rank and cycle")
    ap.add_argument("folders", nargs="+", type=Path, help="folders holding pipeline_host_probe.csv")
    args = ap.parse_args(argv)
    missing = [str(f) for f in args.folders if not csv_exists(f / "pipeline_host_probe.csv")]
    if missing:
        ap.error(f"no pipeline_host_probe.csv in: {', '.join(missing)}")
    pd.set_option("display.width", 200)
    for folder in args.folders:
        probe = read_csv(folder / "pipeline_host_probe.csv")
        print(f"== {folder} ({probe['gpu_name'].iloc[0]}, {probe['num_gpus'].iloc[0]} GPUs)")
        print(summary(probe).round(2).to_string(index=False))
        launch = per_cycle(probe[probe["probe"] == "launch"])
        print("launch us by cycle (rows: part, pp rank):")
        print(launch.pivot_table(index=["num_microbatches", "pp_rank"], columns="cycle",
                                 values="us_per_call").round(1).to_string())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

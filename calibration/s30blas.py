"""The s30blas probe (issue 15, a diagnosis; fitting records only, judges nothing): real/serve's EP2 ep2-repeat plan
in fresh processes, one per condition (default: as is; nocache: CUBLASLT_HEURISTICS_CACHE_CAPACITY=0), reduced to
what tells the drift's source apart.

Per condition and run (in the process's order) the eager prompt-carrying iterations by first-met class
(calibration.serve_ep_residual.first_met_rows: met / new_size / new_bin), their median measured step and median
excess over the twin without the first-met stall (its GPU's unpinned EP2 table); beside it the host probe before the
run (probe_before_py_s, probe_before_launch_s) and the run's median decode-only step (the host's phase). Read: the
met iterations' excess falling over the r20-short repeats in both conditions = the process or host warming; a fall
only with the cache on (with it off every call looks up, met and new alike) = cuBLASLt's heuristics cache; a fall that
the host probe follows = the host.

    python -m calibration.s30blas [--folder h200x2/s30blas] [--json OUT.json]
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from calibration import entry
from calibration.records_io import csv_exists, read_csv
from calibration.serve_ep_residual import first_met_rows

CONDITIONS = ("default", "nocache", "lt")
PROBE_COLUMNS = ("probe_before_py_s", "probe_before_launch_s")


def condition_table(folder: Path) -> pd.DataFrame:
    """One condition's folder: per (run, class) iterations, median measured and excess seconds; per run the host
    probe before it and its median decode-only step (either rank's, lockstep)."""
    folder = Path(folder)
    load = read_csv(folder / "serve_load.csv")
    order = {r: k for k, r in enumerate(load.sort_values("timestamp_utc").run_id)}
    rows = first_met_rows(folder)
    g = rows.groupby(["run_id", "cls"])
    out = pd.DataFrame({"iterations": g.size(), "measured_median_s": g.measured_s.median(),
                        "excess_median_s": g.excess_s.median()}).reset_index()
    its = read_csv(folder / "serve_iterations.csv")
    dec = its[(its.prefill_tokens == 0) & (its.idle.astype(int) == 0)].groupby("run_id").duration_s.median()
    probe = load.set_index("run_id")[list(PROBE_COLUMNS)]
    out = out.join(probe, on="run_id").join(dec.rename("decode_median_s"), on="run_id")
    out["order"] = out.run_id.map(order)
    return out.sort_values(["order", "cls"]).reset_index(drop=True)


def summary(folder: Path) -> dict[str, pd.DataFrame]:
    """Every condition folder (CONDITIONS) under a campaign folder that holds records: its condition_table."""
    folder = Path(folder)
    return {c: condition_table(folder / c) for c in CONDITIONS if csv_exists(folder / c / "serve_load.csv")}


@entry.script
def main(argv: list[str] | None = None) -> None:
    p = entry.parser("calibration.s30blas", __doc__)
    p.add_argument("--folder", type=entry.records_folder, default="h200x2/s30blas",
                   help="the campaign's records folder (default: h200x2/s30blas under the records root)")
    p.add_argument("--json", type=Path, default=None, help="write the tables here as JSON")
    args = p.parse_args(argv)
    folder = args.folder
    pd.set_option("display.width", 200)
    tables = summary(folder)
    for cond, t in tables.items():
        print(f"== {cond}: eager prompt iterations by first-met class (ms), host probe before the run (us)")
        show = t.assign(measured_ms=t.measured_median_s * 1e3, excess_ms=t.excess_median_s * 1e3,
                        decode_ms=t.decode_median_s * 1e3, probe_py_us=t.probe_before_py_s * 1e6)
        print(show[["order", "run_id", "cls", "iterations", "measured_ms", "excess_ms", "decode_ms",
                    "probe_py_us"]].round(2).to_string(index=False))
    if args.json:
        entry.write_json(args.json, {c: json.loads(t.to_json(orient="records")) for c, t in tables.items()})


if __name__ == "__main__":
    main()

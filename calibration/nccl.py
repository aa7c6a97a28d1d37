"""NCCL collectives: an alpha-beta model per op, fitted to the size sweep of
`python -m real.bench --only nccl` (real/bench/nccl.py; calibration/measurements/<gpu>x2/nccl.csv).

Per op, time = latency_s + message_bytes x bus_factor / bus_bytes_per_s, with nccl-tests'
conventions (bus_factor 2(n-1)/n for all_reduce, (n-1)/n for all_gather, reduce_scatter and
all_to_all, 1 for send_recv and send_recv_bidir; message_bytes is nccl-tests' size), so
bus_bytes_per_s is the asymptotic bus bandwidth and latency_s the small-message floor. The fit
minimises the relative error (a 4 KiB call and a 1 GiB call weigh alike), over the rows whose
`split` is fit only (sizes 2^even); the rows held out (2^odd) give the reported error.

`fit_collectives(df)` -> {op: {"latency_s", "bus_bytes_per_s", "source"}}: the profile's
`collectives` mapping the twin reads. `holdout_errors(df, fits)` -> the held-out errors;
`sweep_summary(folder)` both per op, as `twin validate` reports them for every <gpu>x2 folder.

  python -m calibration.nccl [--gpu h100] [--update]
prints each GPU's fit and held-out errors; --update writes them into the committed profile
twin/data/profiles/<gpu>.json (its `collectives` and provenance only: update_profile_collectives;
`twin fit` takes the same terms through collectives_terms).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.optimize import nnls

from calibration.entry import JudgeParser, script
from calibration import records as rec
from calibration.records_io import csv_exists, csv_sha256, read_csv
from twin.costs.profile import PROFILES

PROFILES_DIR = Path(str(PROFILES))  # the twin's package data (twin/data/profiles), as calibration.fit's

OPS = ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv", "send_recv_bidir")
_NUMERIC = ("message_bytes", "world_size", "bus_factor", "time_s", "time_p10_s", "time_p90_s")


def load_nccl(path: Path | str) -> pd.DataFrame:
    """The sweep's rows (a nccl.csv, or a folder holding one), numeric columns parsed, rows
    without a positive time dropped."""
    path = Path(path)
    if path.is_dir():
        path = path / "nccl.csv"
    df = read_csv(path)
    for c in _NUMERIC:
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    df["split"] = df["split"].fillna("holdout").astype(str)
    return df[df["time_s"].notna() & (df["time_s"] > 0)].reset_index(drop=True)


def _bus_bytes(rows: pd.DataFrame) -> np.ndarray:
    return (rows["message_bytes"] * rows["bus_factor"]).to_numpy(float)


def fit_op(rows: pd.DataFrame) -> tuple[float, float]:
    """(latency_s, bus_bytes_per_s) minimising sum ((pred - t) / t)^2 with both terms >= 0:
    the least squares of 1 = latency / t + bus_bytes * (1 / bus_bw) / t, solved by NNLS."""
    t = rows["time_s"].to_numpy(float)
    if len(t) < 2:
        raise ValueError(f"an alpha-beta fit needs >= 2 sizes, got {len(t)}")
    A = np.stack([1.0 / t, _bus_bytes(rows) / t], axis=1)
    (latency_s, inv_bw), _ = nnls(A, np.ones(len(t)))
    return float(latency_s), float(1.0 / inv_bw) if inv_bw > 0 else float("inf")


def predict_s(entry: dict, bus_bytes: np.ndarray | float) -> np.ndarray | float:
    """An op's time for `bus_bytes` (message_bytes x bus_factor) under its fitted entry."""
    return entry["latency_s"] + np.asarray(bus_bytes, float) / entry["bus_bytes_per_s"]


def holdout_errors(df: pd.DataFrame, fits: dict) -> dict:
    """{op: {"rows", "median_abs_rel_err", "max_abs_rel_err"}} over the held-out rows."""
    out = {}
    for op, entry in fits.items():
        rows = df[(df["op"] == op) & (df["split"] == "holdout")]
        if rows.empty:
            continue
        err = predict_s(entry, _bus_bytes(rows)) / rows["time_s"].to_numpy(float) - 1.0
        out[op] = {"rows": int(len(rows)), "median_abs_rel_err": float(np.median(np.abs(err))),
                   "max_abs_rel_err": float(np.max(np.abs(err)))}
    return out


def fit_collectives(df: pd.DataFrame, source: str = "nccl.csv") -> dict:
    """{op: {"latency_s", "bus_bytes_per_s", "source"}} for every op with >= 2 fit rows; `source`
    names the records, the fit's sizes and world size and its held-out error."""
    fits = {}
    for op in OPS:
        rows = df[(df["op"] == op) & (df["split"] == "fit")]
        if len(rows) < 2:
            continue
        latency_s, bw = fit_op(rows)
        fits[op] = {"latency_s": latency_s, "bus_bytes_per_s": bw}
    errors = holdout_errors(df, fits)
    for op, entry in fits.items():
        rows = df[(df["op"] == op) & (df["split"] == "fit")]
        worlds = ",".join(str(int(w)) for w in sorted(rows["world_size"].unique()))
        gpu = ", ".join(sorted({str(g) for g in rows.get("gpu_name", pd.Series(dtype=str)).dropna()}))
        held = errors.get(op)
        held_txt = (f"held-out median |err| {held['median_abs_rel_err']:.1%}, max {held['max_abs_rel_err']:.1%} "
                    f"over {held['rows']} sizes" if held else "no held-out sizes")
        entry["source"] = (f"{source}: alpha-beta fit of {op} on {len(rows)} sizes "
                           f"({int(rows['message_bytes'].min())}-{int(rows['message_bytes'].max())} B), "
                           f"{worlds} ranks{', ' + gpu if gpu else ''}; {held_txt}")
    return fits


# the records folder of two GPUs of one host whose NCCL sweep (real/bench/nccl.py) gives a GPU's
# in-node collectives: <gpu>x2/nccl.csv
COLLECTIVES_FOLDER = "{gpu}x2"


def collectives_terms(gpu: str, root: Path | str | None = None) -> tuple[dict, dict]:
    """Profile.collectives from <gpu>x2/nccl.csv (fit_collectives: an alpha-beta fit per op on the
    sweep's fitting sizes, measured, each entry naming its source and held-out error) ->
    (collectives, {"file", "sha256", "holdout": {op: errors}}); ({}, {}) without the file (the twin
    then costs collectives from the catalog's links)."""
    root = rec.records_root() if root is None else root
    folder = COLLECTIVES_FOLDER.format(gpu=gpu)
    path = Path(root) / folder / "nccl.csv"
    if not csv_exists(path):
        return {}, {}
    df = load_nccl(path)
    fits = fit_collectives(df, source=f"calibration/measurements/{folder}/nccl.csv")
    info = {"file": f"{folder}/nccl.csv", "sha256": csv_sha256(path),
            "holdout": holdout_errors(df, fits)}
    return fits, info


def update_profile_collectives(gpu: str, root: Path | str | None = None,
                               profiles_dir: Path | str = PROFILES_DIR) -> Path | None:
    """Write `collectives_terms(gpu)` into the committed profile <profiles_dir>/<gpu>.json and its
    provenance, nothing else (the rest of the profile is left as its last `twin fit` wrote it; a
    whole refit also moves every term whose records changed since). None without the sweep or
    the profile."""
    root = rec.records_root() if root is None else root
    path = Path(profiles_dir) / f"{gpu}.json"
    fits, info = collectives_terms(gpu, root)
    if not fits or not path.is_file():
        return None
    rec.write_profile_terms(path, json.loads(path.read_text()), {"collectives": fits}, {"collectives": info})
    return path


def sweep_summary(folder: Path | str) -> dict:
    """{op: {"latency_s", "bus_bytes_per_s", "rows", "median_abs_rel_err", "max_abs_rel_err"}}:
    the alpha-beta fit of a folder's sweep on its fitting sizes and its error on the held-out ones
    (the figures a profile fitted from that folder carries); {} without nccl.csv."""
    path = Path(folder) / "nccl.csv"
    if not csv_exists(path):
        return {}
    df = load_nccl(path)
    fits = fit_collectives(df)
    held = holdout_errors(df, fits)
    return {op: {"latency_s": e["latency_s"], "bus_bytes_per_s": e["bus_bytes_per_s"], **held[op]}
            for op, e in fits.items() if op in held}


def format_summary(name: str, summary: dict) -> str:
    """One line: each op's held-out median (max) |error| of a folder's sweep."""
    ops = ", ".join(f"{op} {v['median_abs_rel_err']:.1%} ({v['max_abs_rel_err']:.1%})" for op, v in summary.items())
    return f"NCCL {name} held-out |error| median (max) over {max(v['rows'] for v in summary.values())} sizes: {ops}"


@script
def main(argv=None) -> int:
    ap = JudgeParser(prog="python -m calibration.nccl", description="NCCL collectives per GPU: the alpha-beta fit of <gpu>x2/nccl.csv "
                       "and its held-out error")
    ap.add_argument("--gpu", action="append", help="GPU (default: every one with a <gpu>x2/nccl.csv)")
    ap.add_argument("--update", action="store_true",
                    help="write the fit into the committed profile (its collectives and provenance only)")
    args = ap.parse_args(argv)
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    gpus = args.gpu or sorted(p.name[:-2] for p in root.glob("*x2") if csv_exists(p / "nccl.csv"))
    for gpu in gpus:
        folder = root / COLLECTIVES_FOLDER.format(gpu=gpu)
        summary = sweep_summary(folder)
        if not summary:
            print(f"{gpu}: no {folder.name}/nccl.csv")
            continue
        for op, v in summary.items():
            print(f"{gpu} {op:16} latency {v['latency_s'] * 1e6:6.1f} us  bus {v['bus_bytes_per_s'] / 1e9:6.1f} GB/s  "
                  f"held-out median {v['median_abs_rel_err']:6.1%}  max {v['max_abs_rel_err']:6.1%}  ({v['rows']} sizes)")
        if args.update:
            print(f"{gpu}: wrote {update_profile_collectives(gpu, root)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The evidence table of docs/notes/s18gap_rule.md section 1 (diagnostics; the fitting split only: the
4-micro-batch rows and ops): per compute op of one schedule, the host probe's span and host lead, the
profiled step's kernel seconds and calls (NCCL kernels counted where EP puts them between the compute
kernels), the host folder's bench span, the interleaved run's span, and the twin's span with the
interleaved folder predicted on its own inputs and on its host folder's (ADOPT_S18_HOST_FOLDER_INPUTS
off / on). Medians over the timed steps, ms.

    PYTHONPATH=. .venv/bin/python benchmarks/s18gap_figures.py HOST SCHEDULE    (HOST: h200x2 or h200x4)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

import calibration.pipeline as pipe
from calibration.interleaved import INTERLEAVED_FOLDERS
from calibration.records import MEASUREMENTS_DIR
from calibration.records_io import read_csv
from calibration.validate import load_fitted_profile

NUM_MICROBATCHES = 4          # the fitting split of every folder read here
OP_KEYS = ["rank", "kind", "microbatch", "chunk"]


def _of(df: pd.DataFrame, schedule: str) -> pd.DataFrame:
    return df[(df["schedule"] == schedule) & (df["num_microbatches"] == NUM_MICROBATCHES) & (df["pp"] > 1)]


def _spans(df: pd.DataFrame, name: str) -> pd.DataFrame:
    df = df.assign(span=df["end_s"] - df["start_s"], lead=df["start_s"] - df["host_start_s"])
    return df.groupby(OP_KEYS).agg(**{name: ("span", "median"), f"{name}_lead": ("lead", "median")}).reset_index()


def twin_spans(folder: Path, gpu: str, profile, schedule: str, on: bool) -> dict:
    """(GPU, program index) -> the twin's op span of the folder's n4 row of `schedule` (the n4 row alone
    is simulated), the folder predicted with the switch `on` / off."""
    steps, _ = pipe.load(folder)
    row = _of(steps, schedule).iloc[0]
    inputs_from = folder.parent if on else None
    prof, accumulate, gap = pipe.host_inputs(folder, gpu, profile, inputs_from)
    host = pipe.measured_host_s(folder, gpu, prof, accumulate, gap)
    result, _, _ = pipe.simulate_row(row, pipe.gpu_spec(gpu), prof, accumulate, host, None, {}, 0.0)
    out: dict = {}
    for rank, _, start, end in sorted(result.op_spans, key=lambda s: (s[0], s[2])):
        out[rank, sum(1 for k in out if k[0] == rank)] = end - start
    return out


def table(host: str, schedule: str) -> pd.DataFrame:
    gpu = host.split("x")[0]
    root = Path(MEASUREMENTS_DIR) / host
    side = root / INTERLEAVED_FOLDERS[host]
    profile = load_fitted_profile(gpu, None)[0]   # the committed profile, as validate reads it
    probe = _of(read_csv(root / "pipeline_host.csv"), schedule)
    kern = _of(read_csv(root / "pipeline_op_kernels.csv"), schedule)
    nccl = kern["kernel"].astype(str).str.contains("nccl", case=False)
    kern = kern[~nccl | (kern["ep"] > 1)].groupby(["rank", "op_index"]).agg(
        kernels=("time_s", "sum"), calls=("calls", "sum")).reset_index()
    index = probe.groupby(OP_KEYS)["op_index"].first().reset_index()
    bench = read_csv(root / "pipeline_ops.csv")
    m = (_spans(probe, "probe").merge(index, on=OP_KEYS).merge(kern, on=["rank", "op_index"], how="left")
         .merge(_spans(_of(bench[bench["split"] == "fit"], schedule), "bench"), on=OP_KEYS, how="left")
         .merge(_spans(_of(read_csv(side / "pipeline_ops.csv"), schedule), "interleaved"), on=OP_KEYS, how="left"))
    m = m[m["kind"].isin(list(pipe.HOST_DIRECTION) + ["FB"])].sort_values(["rank", "op_index"])
    pp = int(probe["pp"].iloc[0])
    # the probe's op index counts the compute ops and the sends / receives; the twin's spans only the
    # compute ops, in program order
    m["k"] = m.groupby("rank").cumcount()
    for on in (False, True):
        spans = twin_spans(side, gpu, profile, schedule, on)
        m[f"twin_{'on' if on else 'off'}"] = [spans.get((r % pp, k), np.nan) for r, k in zip(m["rank"], m["k"])]
    m["probe_gap_us"] = (m["probe"] - m["kernels"]) / m["calls"] * 1e6
    cols = ["probe", "probe_lead", "kernels", "bench", "interleaved", "interleaved_lead", "twin_off", "twin_on"]
    m[cols] = m[cols] * 1e3
    return m[["rank", "op_index", "kind", "microbatch", "chunk", "calls"] + cols + ["probe_gap_us"]].round(2)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in INTERLEAVED_FOLDERS:
        raise SystemExit(__doc__)
    pd.set_option("display.width", 250)
    print(table(sys.argv[1], sys.argv[2]).to_string(index=False))

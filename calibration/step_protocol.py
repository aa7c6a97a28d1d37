"""Synchronised against back-to-back decode steps on one GPU (session s22host, issue 13): the s21host2b
diagnostic's records read side by side (analysis, no fit; docs/notes/s22host_rule.md quotes the figures).

s21host2 (real/bench/host_steps.py) timed every prefill / decode step on an idle device: synchronised before
each step, alternately with a 3 ms launch probe (block `probed`) or without (`control`). Every other decode
record, and the twin's timed window (calibration.predict.timed_window_s: repetitions issued back to back, the
next starting where the GPU finishes the last), issues steps back to back. s21host2b (real/campaigns/
s21host2b.sh) added, after each decode record, 29 steps issued back to back (block `back_to_back`). Per record,
from serve_steps.csv (event seconds `step_s` and the host's own seconds of the call `host_s` of every step),
serve_kernels.csv / step_kernels.csv (the profiler's kernels of one step) and the twin's decode op list:
  <block>_step_s            the median step (events around the call)
  <block>_host_s            the median host seconds of the call (Python issuing the step's kernels)
  <block>_tail_s            the median of step_s - host_s: GPU time left after the host returned (a synchronised
                            step pays it; a back-to-back step hands it to the next step's host time)
  <block>_host_s_per_kernel the host seconds per profiled kernel each block implies (host_s / kernels)
  kernels, kernel_sum_s     the profiler's kernels of one step and their summed GPU seconds
  twin_ops, twin_gpu_s      the twin's decode op list (whole_step.decode_ops) and its summed GPU seconds
  step_host_s_per_kernel    the step-input twin's host time per kernel (the run's fitting ratio x the median
                            probe of the record's probed steps; calibration.step_host)
  step_predicted_s          the step-input twin's figure as judged for s21host2 (its pre-registered grid read at
                            each probed step's host time; back-to-back window), when the grid holds the case
Run: python -m calibration.step_protocol (the three committed s21host2b runs).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration import step_host
from calibration import whole_step
from calibration.records_io import csv_exists, read_csv
from calibration.predict import gpu_spec
from calibration.split import split
from calibration.validate import load_fitted_profile
from calibration.whole_step import decode_ops, predict_model_row
from twin.core.specs import get_model

BLOCKS = ("control", "probed", "back_to_back")
# the s21host2b runs the lead made in session 22 (archive of c4d7c42): a fresh H100, the same H100 30 s later,
# a fresh H200; subfolders of calibration/measurements/<gpu>/ that no fit and no validation reads
S21HOST2B_RUNS = (("h100", "s21host2b_2119"), ("h100", "s21host2b_2120"), ("h200", "s21host2b_2121"))
# the step-input twin's pre-registered grid of s21host2's cases (its p256 decode cases are s21host2b's)
S21HOST2_GRID = rec.MEASUREMENTS_DIR / "prereg" / "s21host2_step_grid.csv.gz"


def block_stats(steps: pd.DataFrame, row, block: str) -> dict:
    """Median step, host and tail seconds of one record's steps of `block` (NaN without such steps)."""
    s = step_host.record_steps(steps, row, block)[["step_s", "host_s"]].astype(float).dropna()
    if s.empty:
        return {f"{block}_{k}": float("nan") for k in ("step_s", "host_s", "tail_s")}
    return {f"{block}_step_s": float(s["step_s"].median()), f"{block}_host_s": float(s["host_s"].median()),
            f"{block}_tail_s": float((s["step_s"] - s["host_s"]).median())}


def profiled_kernels(kernels: pd.DataFrame, step_kernels: pd.DataFrame, row) -> tuple[float, float]:
    """(kernels, their summed GPU seconds) of the record's profiled decode step."""
    k = kernels[(kernels["bench"] == "decode") & (kernels["model"] == row["model"])
                & (kernels["batch"].astype(int) == int(row["batch"]))]
    config = f"s21host2 {row['model']} b{int(row['batch'])} p{int(row['prompt_len'])} decode"
    return (float(k["kernels"].iloc[0]) if len(k) else float("nan"),
            float(step_kernels.loc[step_kernels["config"] == config, "time_s"].sum()))


def twin_gpu(row, cache_len: int, gpu: str, profile) -> tuple[int, float]:
    """(ops, summed GPU seconds) of the twin's decode step for the record at `cache_len`."""
    ops = decode_ops(get_model(row["model"]), int(row["batch"]), cache_len, gpu_spec(gpu), profile).ops
    return len(ops), float(sum(g for h, g in ops if h is not None))


def protocol_rows(folder: Path, gpu: str, profile, grid: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per decode record of a host_steps folder with back-to-back steps: the columns of the module
    docstring."""
    model, hd, steps, kernels, step_kernels = (read_csv(folder / f) for f in (
        "model.csv", "host_dispatch.csv", "serve_steps.csv", "serve_kernels.csv", "step_kernels.csv"))
    ratio = step_host.fit_step_ratio(hd, steps, gpu)
    out = []
    for _, r in model[model["bench"] == "decode"].iterrows():
        row = {"gpu": gpu, "run": folder.name, "model": r["model"], "batch": int(r["batch"]),
               "prompt_len": int(r["prompt_len"]), "gen_len": int(r["gen_len"])}
        for b in BLOCKS:
            row.update(block_stats(steps, r, b))
        row["kernels"], row["kernel_sum_s"] = profiled_kernels(kernels, step_kernels, r)
        for b in BLOCKS:
            row[f"{b}_host_s_per_kernel"] = row[f"{b}_host_s"] / row["kernels"]
        cache_len = int(r["prompt_len"]) + int(r["gen_len"]) // 2
        row["twin_ops"], row["twin_gpu_s"] = twin_gpu(r, cache_len, gpu, profile)
        row["step_host_s_per_kernel"] = step_host.step_host_s_of_record(steps, r, ratio)
        mine = pd.DataFrame() if grid is None else grid[
            (grid["gpu"] == gpu) & (grid["bench"] == "decode") & (grid["model"] == r["model"])
            & (grid["batch"] == int(r["batch"])) & (grid["prompt_len"] == int(r["prompt_len"]))
            & (grid["gen_len"] == int(r["gen_len"]))]
        row["step_predicted_s"] = step_host.record_prediction(mine, steps, r, ratio) if len(mine) else float("nan")
        out.append(row)
    return pd.DataFrame(out)


def committed_rows(root: Path | None = None, runs=S21HOST2B_RUNS) -> pd.DataFrame:
    """protocol_rows of every committed s21host2b run (the GPU's committed profile; s21host2's grid)."""
    root = rec.records_root() if root is None else root
    grid = read_csv(S21HOST2_GRID) if csv_exists(S21HOST2_GRID) else None
    profiles, frames = {}, []
    for gpu, sub in runs:
        folder = Path(root) / gpu / sub
        if not csv_exists(folder / "serve_steps.csv"):
            continue
        if gpu not in profiles:
            profiles[gpu] = load_fitted_profile(gpu, rec.load_records(gpu, root))[0]
        frames.append(protocol_rows(folder, gpu, profiles[gpu], grid))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_summary(rows: pd.DataFrame) -> pd.DataFrame:
    """Per run, medians over its records: the synchronised step over the back-to-back one (control / b2b - 1),
    each block's tail, the tail's share of the control step, each block's host time per kernel, the step-input
    twin's host time per kernel and its error against the probed and the back-to-back medians."""
    r = rows.assign(sync_over_b2b=rows["control_step_s"] / rows["back_to_back_step_s"] - 1.0,
                    control_tail_share=rows["control_tail_s"] / rows["control_step_s"],
                    err_probed=rows["step_predicted_s"] / rows["probed_step_s"] - 1.0,
                    err_b2b=rows["step_predicted_s"] / rows["back_to_back_step_s"] - 1.0)
    cols = ["sync_over_b2b", "control_tail_s", "back_to_back_tail_s", "control_tail_share",
            "control_host_s_per_kernel", "back_to_back_host_s_per_kernel", "step_host_s_per_kernel",
            "err_probed", "err_b2b"]
    return r.groupby(["gpu", "run"])[cols].median().reset_index()


def repeat_spread(rows: pd.DataFrame, run_a: str, run_b: str) -> pd.DataFrame:
    """Per record of two runs on one host: run_b / run_a - 1 of each block's median step and host seconds (the
    host's speed from one process to the next)."""
    key = ["model", "batch"]
    cols = [f"{b}_{k}" for b in BLOCKS for k in ("step_s", "host_s")]
    a = rows[rows["run"] == run_a].set_index(key)[cols]
    b = rows[rows["run"] == run_b].set_index(key)[cols]
    return (b / a - 1.0).reset_index()


# every committed host_steps run with decode records (s21host2, its repeat, s21host2b)
HOST_STEPS_RUNS = (("h100", "s21host2"), ("h100", "s21host2_repeat"), ("h200", "s21host2"), ("h200", "s21host2_repeat"),
                   *S21HOST2B_RUNS)


def decode_records(runs=HOST_STEPS_RUNS, root: Path | None = None):
    """Each decode record of the host_steps runs (gpu, folder) that has its profiled kernel count and probed steps:
    (gpu, run folder name, the model.csv row, its profiled kernels, its probed steps, the run's fitting ratio)."""
    root = rec.records_root() if root is None else root
    for gpu, sub in runs:
        folder = Path(root) / gpu / sub
        if not csv_exists(folder / "serve_kernels.csv"):
            continue
        model, hd, steps, kernels = (read_csv(folder / f) for f in (
            "model.csv", "host_dispatch.csv", "serve_steps.csv", "serve_kernels.csv"))
        ratio = step_host.fit_step_ratio(hd, steps, gpu)
        for _, r in model[model["bench"] == "decode"].iterrows():
            k = kernels[(kernels["model"] == r["model"]) & (kernels["batch"] == r["batch"])
                        & (kernels["prompt_len"] == r["prompt_len"])]["kernels"]
            s = step_host.record_steps(steps, r)
            if len(k) and len(s):
                yield gpu, sub, r, float(k.iloc[0]), s, ratio


def host_rate_over_probe(root: Path | None = None, runs=HOST_STEPS_RUNS) -> pd.DataFrame:
    """Per run and model, the median over its decode records of (the probed steps' median of host_s / profiled kernels
    / (the run's fitting ratio x the step's probe)): how a model's own host time per kernel sits against the rate the
    probe implies (1 = as the fitting layers). Rows: run; columns: model."""
    root = rec.records_root() if root is None else root
    out = []
    for gpu, sub, r, kernels, s, ratio in decode_records(runs, root):
        rate = s["host_s"].astype(float) / kernels / (ratio * s["host_probe_launch_s"].astype(float))
        out.append({"run": f"{gpu} {sub}", "model": r["model"], "ratio": float(rate.median())})
    df = pd.DataFrame(out)
    return df.groupby(["run", "model"])["ratio"].median().unstack() if len(df) else df


def occupancy_validation(gpu: str, root: Path | None = None) -> dict:
    """docs/notes/s22hostocc_rule.md's D3: `twin validate`'s prefill / decode rows of a GPU (its committed model.csv rows,
    held out by calibration.split) predicted with ADOPT_DECODE_OCCUPANCY off and on: per bench and setting, rows, median
    and P90 |err|."""
    root = rec.records_root() if root is None else root
    df = rec.load_records(gpu, root)
    profile = load_fitted_profile(gpu, df)[0]
    rows = df[df["bench"].isin(["prefill", "decode"]) & split(df)]
    saved, out = whole_step.ADOPT_DECODE_OCCUPANCY, {}
    try:
        for setting in (False, True):
            whole_step.ADOPT_DECODE_OCCUPANCY = setting
            errs = rows.assign(err=[abs(predict_model_row(r, gpu_spec(gpu), profile) / float(r["time_s"]) - 1.0)
                                    for _, r in rows.iterrows()])
            for bench, sub in errs.groupby("bench"):
                out[f"{gpu} {bench} occupancy {'on' if setting else 'off'}"] = {
                    "rows": int(len(sub)), "median_abs_rel_error": float(sub["err"].median()),
                    "p90_abs_rel_error": float(np.percentile(sub["err"], 90))}
    finally:
        whole_step.ADOPT_DECODE_OCCUPANCY = saved
    return out


def format_rows(rows: pd.DataFrame) -> str:
    """One line per record (ms, us a kernel)."""
    lines = []
    for _, r in rows.iterrows():
        lines.append(
            f"{r['gpu']} {r['run']} {r['model']:19s} b{r['batch']:<3d} step ms ctrl {r['control_step_s'] * 1e3:.2f} "
            f"probed {r['probed_step_s'] * 1e3:.2f} b2b {r['back_to_back_step_s'] * 1e3:.2f} | tail ms ctrl "
            f"{r['control_tail_s'] * 1e3:.2f} b2b {r['back_to_back_tail_s'] * 1e3:.2f} | host us/kernel ctrl "
            f"{r['control_host_s_per_kernel'] * 1e6:.1f} b2b {r['back_to_back_host_s_per_kernel'] * 1e6:.1f} step-input "
            f"{r['step_host_s_per_kernel'] * 1e6:.1f} | kernels {r['kernels']:.0f} ({r['kernel_sum_s'] * 1e3:.2f} ms) twin "
            f"{r['twin_ops']} ({r['twin_gpu_s'] * 1e3:.2f} ms) | step-input twin {r['step_predicted_s'] * 1e3:.2f} ms "
            f"({r['step_predicted_s'] / r['probed_step_s'] - 1:+.0%} probed, "
            f"{r['step_predicted_s'] / r['back_to_back_step_s'] - 1:+.0%} b2b)")
    return "\n".join(lines)


@entry.script
def main(argv: list[str] | None = None) -> int:
    entry.parser("calibration.step_protocol", __doc__).parse_args(argv)
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    rows = committed_rows(root)
    if rows.empty:
        print("no s21host2b records")
        return 0
    print(format_rows(rows))
    print(run_summary(rows).to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print("host time per profiled kernel over the probe's rate (decode, probed steps; median per run and model):")
    print(host_rate_over_probe(root).to_string(float_format=lambda x: f"{x:.2f}"))
    print("s22hostocc D3 (held-out prefill / decode rows, decode occupancy off / on):")
    for gpu in ("h100", "h200"):
        for label, v in occupancy_validation(gpu, root).items():
            print(f"  {label}: {v['rows']} rows, median |err| {v['median_abs_rel_error']:.1%}, P90 {v['p90_abs_rel_error']:.1%}")
    print("H100 repeat (s21host2b_2120 / s21host2b_2119 - 1):")
    print(repeat_spread(rows, "s21host2b_2119", "s21host2b_2120").to_string(index=False, float_format=lambda x: f"{x:+.0%}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())

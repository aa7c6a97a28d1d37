"""s31clk: a power-capped SM clock per pipeline rank (issue 13), fitted on s30fb's clock records, screened on every
committed PP2 set, judged on a fresh 2xH200 set (docs/notes/s31clk_rule.md).

The law is calibration.rank_clock's; the switch pipeline.ADOPT_RANK_POWER_CLOCK (off). Its two dynamic-power
parameters (D_compute, D_memory: a kernel class's board power above the static part at the maximum clock, per unit of
duty) are fitted here by least squares on s30fb's 100 ms nvidia-smi samples (h200x2/s30fb_20261128_2153: dsv2- and
mixtral-mla-slice, DualPipeV pp 2 at n 4 / 6 / 10 and 6 / 10; a fitting set, split fit): per configuration and GPU, the
median board power and SM clock over the timed steps (samples while either GPU draws >= BUSY_W), against the twin's
kernel seconds of that rank (switch off) at the measured clock over the measured step. The static part is the card's
idle power (h200/power.csv), the exponent the assumed k = 3 (calibration.power_cap). Nothing judged is read by the fit.

    python -m calibration.s31clk fit          # D_compute, D_memory (rank_clock.RANK_POWER) and the fitting points
    python -m calibration.s31clk screen       # B (off) and C (on) on every committed PP2 set (a few minutes of CPU)
    python -m calibration.s31clk write        # the fresh set's predictions, B and C (refuses dirty code)
    python -m calibration.s31clk judge        # the rule's verdict on the fresh records, once filed
    python -m calibration.s31clk record       # and its record, calibration/s31clk_judgement.json
    python -m calibration.s31clk file SRC DEST   # a campaign model folder filed as records (nvidia-smi samples converted)
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import pipeline as pipe
from calibration import prereg
from calibration import rank_clock
from calibration import prereg_pp
from calibration import records as rec
from calibration import s29idle, s30mem
from calibration.power_cap import DYNAMIC_POWER_EXPONENT, MAX_SM_CLOCK_MHZ, idle_power_w
from calibration.records_io import csv_exists, pack_record, read_csv
from calibration.whole_step import gpu_spec

NAME = "s31clk"
GPU = "h200"
FIT_FOLDERS = ("h200x2/s30fb_20261128_2153/dsv2-slice", "h200x2/s30fb_20261128_2153/mixtral-mla-slice")
# the fresh set: real/campaigns/s31clk.sh's PP, in its order (a test holds them equal); slices and counts no PP record
# holds (phi35moe- and llama3-8b-slice PP2 records hold 4 and 6 micro-batches; olmoe-slice none)
FRESH_CASES = (("phi35moe-slice", 4), ("llama3-8b-slice", 4), ("olmoe-slice", 4))
FRESH_MICROBATCHES = (8, 12)
SCHEDULES = ("1f1b", "zb1p", "dualpipev", "dualpipe")
# the one-GPU part (real/campaigns/s31clk1.sh's CASES, in its order): a whole step on one GPU (layout ep1), 8 micro-batches
ONE_GPU_CASES = (("llama3-8b-slice", 4), ("olmoe-slice", 4), ("phi35moe-slice", 4), ("qwen2moe-mla-slice", 4),
                 ("v2-lite-slice", 4))
ONE_GPU_MICROBATCHES = 8
FRESH_SUBDIR = NAME   # calibration/measurements/h200x2/s31clk/<model>/
BUSY_W = 600.0          # a 100 ms sample inside the timed steps: either GPU at or above this (s30fb §2's selection)
CONFIG_KEYS = ["model", "schedule", "pp", "ep", "num_microbatches", "micro_batch_seqs", "seq_len", "precision"]


@contextlib.contextmanager
def switch(on: bool):
    """pipeline.ADOPT_RANK_POWER_CLOCK held at `on` inside, restored after."""
    was = pipe.ADOPT_RANK_POWER_CLOCK
    pipe.ADOPT_RANK_POWER_CLOCK = on
    try:
        yield
    finally:
        pipe.ADOPT_RANK_POWER_CLOCK = was


def _num_layers(folder: Path) -> int:
    return int(json.loads((folder / "env_pipeline_probe.json").read_text())["config"]["num_layers"])


def busy_samples(clocks: pd.DataFrame) -> pd.DataFrame:
    """gpu_clocks.csv's samples paired by time (GPU 0's and GPU 1's within 60 ms): one row per instant with
    power_w_0, sm_clock_mhz_0, power_w_1, sm_clock_mhz_1 and t (a timestamp)."""
    c = clocks.assign(t=pd.to_datetime(clocks["timestamp_utc"], utc=True, format="ISO8601")).sort_values("t")
    g0 = c[c["gpu_index"] == 0][["t", "power_w", "sm_clock_mhz"]].add_suffix("_0").rename(columns={"t_0": "t"})
    g1 = c[c["gpu_index"] == 1][["t", "power_w", "sm_clock_mhz"]].add_suffix("_1").rename(columns={"t_1": "t"})
    return pd.merge_asof(g0, g1, on="t", direction="nearest", tolerance=pd.Timedelta("60ms")).dropna()


def fit_points(root: Path | str | None = None, folders: tuple = FIT_FOLDERS) -> list[dict]:
    """Per fitting configuration and rank (rank r on GPU r): the median power and SM clock over the configuration's
    busy samples (those after the previous configuration's rows were written and up to its own, either GPU >= BUSY_W),
    the measured step (median over the timed steps of pipeline_host.csv), and the twin's kernel seconds of the rank
    (switch off; compute, memory) with its makespan."""
    root = Path(rec.records_root() if root is None else root)
    profile, accumulate, host, hold_s = prereg.two_gpu_inputs(GPU, root)
    out = []
    for folder in folders:
        h = read_csv(root / folder / "pipeline_host.csv")
        pairs = busy_samples(read_csv(root / folder / "gpu_clocks.csv"))
        stamps = h.groupby("num_microbatches")["timestamp_utc"].max().map(lambda s: pd.Timestamp(s))
        prev = None
        for n, stamp in stamps.sort_values().items():
            ops = h[h["num_microbatches"] == n]
            window = pairs[(pairs["t"] <= stamp + pd.Timedelta("1s")) & ((pairs["t"] > prev) if prev is not None else True)]
            busy = window[(window["power_w_0"] >= BUSY_W) | (window["power_w_1"] >= BUSY_W)]
            prev = stamp + pd.Timedelta("1s")
            cfg = ops.iloc[0]
            row = {k: cfg[k] for k in CONFIG_KEYS} | {"dp": 1, "num_layers": _num_layers(root / folder)}
            with switch(False):
                res, _, det = pipe.simulate_row(pd.Series(row), gpu_spec(GPU), profile, accumulate, host, None, None,
                                                hold_s)
            schedule = pipe.build_schedule(det["schedule"], int(row["pp"]), int(n))
            kern = rank_clock.rank_kernel_s(schedule, det["stage_kernel_s"])
            reps = ops.groupby("rep")
            step = float((reps["end_s"].max() - reps["start_s"].min()).median())
            for rank in (0, 1):
                out.append({"folder": folder, "model": str(row["model"]), "schedule": str(row["schedule"]),
                            "num_microbatches": int(n), "rank": rank, "samples": int(len(busy)),
                            "power_w": float(busy[f"power_w_{rank}"].median()),
                            "clock_mhz": float(busy[f"sm_clock_mhz_{rank}"].median()),
                            "measured_step_s": step, "twin_makespan_s": float(res.makespan_s),
                            "compute_s": kern[rank]["compute"], "memory_s": kern[rank]["memory"]})
    return out


def fit_law(points: list[dict], static_w: float, exponent: float = DYNAMIC_POWER_EXPONENT) -> dict:
    """Least squares of P - P_s = x^k (u_compute D_compute + u_memory D_memory) over the points, x = f / f_max,
    u_compute = compute_s x f_max / f / measured step, u_memory = memory_s / measured step: {static_w, compute_w,
    memory_w, rms_w, n}."""
    a, y = [], []
    for p in points:
        x = p["clock_mhz"] / MAX_SM_CLOCK_MHZ
        a.append([x ** exponent * p["compute_s"] / x / p["measured_step_s"],
                  x ** exponent * p["memory_s"] / p["measured_step_s"]])
        y.append(p["power_w"] - static_w)
    a, y = np.array(a), np.array(y)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    rms = float(np.sqrt(np.mean((a @ coef - y) ** 2)))
    return {"static_w": float(static_w), "compute_w": float(coef[0]), "memory_w": float(coef[1]), "rms_w": rms,
            "n": len(points)}


def fit(root: Path | str | None = None) -> tuple[dict, list[dict]]:
    """The law's parameters from the fitting records, and the points (each with the law's clock for its rank, solved
    at the twin's makespan as the candidate solves it)."""
    root = rec.records_root() if root is None else root
    points = fit_points(root)
    law = fit_law(points, idle_power_w(GPU, root))
    limit_w = float(gpu_spec(GPU).tdp_w)
    for p in points:
        p["law_clock_mhz"] = rank_clock.rank_clock_mhz(p["compute_s"], p["memory_s"], p["twin_makespan_s"], law,
                                                       limit_w)
    return law, points


# the committed pre-registered PP2 sets (all seen): (label, predictions file whose rows are re-priced, records subdir)
GUARD_SETS = s30mem.GUARD_SETS
ROW_KEYS = s30mem.ROW_KEYS
STEP_NOT_WORSE = 0.001   # C's median |step error| at most B's + 0.1 point (s29idle's G2, s30mem's S2)


def priced_sets(root: Path | str | None = None, sets: tuple = GUARD_SETS, candidate=None,
                two_gpu_only: bool = False) -> list[dict]:
    """Each committed PP2 set's rows (only those with pp > 1 where `two_gpu_only`) priced live with the candidate's
    switch (`candidate`, a context manager taking on/off; this round's `switch` by default) off (B) and on (C), scored
    as its pre-registration scores them (prereg_pp.section), with the rank-rows within under B lost under C and those
    gained."""
    root = rec.records_root() if root is None else root
    candidate = switch if candidate is None else candidate
    out, inputs = [], {}
    for label, path, subdir in sets:
        df = read_csv(path)
        rows = (df[df["pp"] > 1] if two_gpu_only else df)[ROW_KEYS].to_dict("records")
        secs = {}
        for who, on in (("B", False), ("C", True)):
            with candidate(on):
                preds = prereg.predict_ep(rows, root, inputs=inputs).assign(code_commit="live")
            secs[who] = prereg_pp.section(root, subdir=subdir, preds=preds)
        keys = ("gpu", "model", "schedule", "num_microbatches", "rank", "measured_idle_s")
        moved = [{k: c[k] for k in keys} | {"B_s": b["predicted_idle_s"], "C_s": c["predicted_idle_s"],
                                            "B_within": bool(b["within"]), "C_within": bool(c["within"])}
                 for b, c in zip(secs["B"]["idle"], secs["C"]["idle"]) if bool(b["within"]) != bool(c["within"])]
        out.append({"set": label, "B": s29idle._score(secs["B"]), "C": s29idle._score(secs["C"]),
                    "lost_rank_rows": [m for m in moved if m["B_within"]],
                    "gained_rank_rows": [m for m in moved if not m["B_within"]]})
    return out


def row_clocks(rows: list[dict], root: Path | str | None = None) -> list[dict]:
    """Each row's ranks' clocks under the law (rank_clocks_mhz from the switch-off simulation) and the law's board
    power of each rank at its clock, beside the row's NVML reading where it has one (rank 0's GPU: the bench's energy
    over the timed cycles' wall time)."""
    root = rec.records_root() if root is None else root
    inputs: dict = {}
    out = []
    law = rank_clock.RANK_POWER[gpu_spec(GPU).name]
    for r in rows:
        gpu = str(r["gpu"])
        if gpu not in inputs:
            inputs[gpu] = prereg.two_gpu_inputs(gpu, root)
        profile, accumulate, host, hold_s = inputs[gpu]
        if gpu != GPU:
            continue
        with switch(False):
            res, _, det = pipe.simulate_row(pd.Series(r), gpu_spec(gpu), profile, accumulate, host, None, None, hold_s)
        schedule = pipe.build_schedule(det["schedule"], int(r["pp"]), int(r["num_microbatches"]))
        kern = rank_clock.rank_kernel_s(schedule, det["stage_kernel_s"])
        clocks = pipe.rank_clocks_mhz(schedule, det["stage_kernel_s"], res.makespan_s, gpu_spec(gpu))
        power = [rank_clock.power_w(f, k["compute"], k["memory"], res.makespan_s, law) for f, k in zip(clocks, kern)]
        out.append({k: r[k] for k in ("model", "schedule", "num_microbatches")}
                   | {"clock_mhz": clocks, "law_power_w": power, "measured_power_w": r.get("power_w")})
    return out


def fit_configs(root: Path | str | None = None) -> list[dict]:
    """s30fb's own configurations (the fitting set: DualPipeV n 4 / 6 / 10) priced B and C: measured step and idle
    (median over the timed steps of pipeline_host.csv) against each."""
    root = Path(rec.records_root() if root is None else root)
    profile, accumulate, host, hold_s = prereg.two_gpu_inputs(GPU, root)
    out = []
    for folder in FIT_FOLDERS:
        h = read_csv(root / folder / "pipeline_host.csv")
        for cfg, ops in h.groupby(CONFIG_KEYS):
            row = dict(zip(CONFIG_KEYS, cfg)) | {"dp": 1, "num_layers": _num_layers(root / folder)}
            reps = ops.groupby("rep")
            idle = pipe.measured_idle_s(ops)
            r = {"folder": folder, "model": row["model"], "num_microbatches": int(row["num_microbatches"]),
                 "measured_s": float((reps["end_s"].max() - reps["start_s"].min()).median()),
                 "measured_idle_s": [float(idle[k]) for k in sorted(idle)]}
            for who, on in (("B", False), ("C", True)):
                with switch(on):
                    res, pred, _ = pipe.simulate_row(pd.Series(row), gpu_spec(GPU), profile, accumulate, host, None,
                                                     None, hold_s)
                r[f"{who}_s"], r[f"{who}_idle_s"] = float(pred), [float(x) for x in res.idle_s]
            out.append(r)
    return out


def screen(root: Path | str | None = None) -> dict:
    """The candidate on everything seen: the committed PP2 sets, s30fb's fitting configurations, the control clocks."""
    root = rec.records_root() if root is None else root
    sets = priced_sets(root)
    clocks = {}
    for label, path, _ in GUARD_SETS:
        rows = read_csv(path)
        clocks[label] = row_clocks(rows.to_dict("records"), root)
    return {"sets": sets, "fit_configs": fit_configs(root), "clocks": clocks}


def format_screen(sc: dict) -> str:
    lines = []
    for s in sc["sets"]:
        b, c = s["B"], s["C"]
        lines.append(f"{s['set']}: steps median |err| B {b['median_abs_rel_error']:.2%} / C {c['median_abs_rel_error']:.2%},"
                     f" P90 {b['p90_abs_rel_error']:.2%} / {c['p90_abs_rel_error']:.2%}; idle within B {b['num_within']} / "
                     f"C {c['num_within']} of {b['num_rank_rows']} (lost {len(s['lost_rank_rows'])}, gained "
                     f"{len(s['gained_rank_rows'])}); misordered B {b['num_misordered']} / C {c['num_misordered']} of "
                     f"{b['num_resolved']}")
        for m in s["lost_rank_rows"] + s["gained_rank_rows"]:
            lines.append(f"   {'lost' if m['B_within'] else 'gained'} {m['model']} {m['schedule']} n{m['num_microbatches']} "
                         f"rank {m['rank']}: measured {m['measured_idle_s'] * 1e3:.1f} ms, B {m['B_s'] * 1e3:.1f}, "
                         f"C {m['C_s'] * 1e3:.1f}")
    for r in sc["fit_configs"]:
        lines.append(f"fit {r['model']} n{r['num_microbatches']}: step {r['measured_s'] * 1e3:.1f} / B {r['B_s'] * 1e3:.1f} / "
                     f"C {r['C_s'] * 1e3:.1f} ms; idle " + ", ".join(
                         f"r{k} {m * 1e3:.1f} / {b * 1e3:.1f} / {c * 1e3:.1f}"
                         for k, (m, b, c) in enumerate(zip(r["measured_idle_s"], r["B_idle_s"], r["C_idle_s"]))))
    for label, rows in sc["clocks"].items():
        by = {}
        for r in rows:
            by.setdefault(r["schedule"], []).append(r)
        for sched, rr in sorted(by.items()):
            c0 = np.median([r["clock_mhz"][0] for r in rr])
            c1 = np.median([r["clock_mhz"][1] for r in rr])
            p0 = np.median([r["law_power_w"][0] for r in rr])
            m0 = np.nanmedian([float(r["measured_power_w"]) if r["measured_power_w"] not in (None, "") else np.nan
                               for r in rr])
            lines.append(f"clocks {label} {sched}: {len(rr)} rows, law rank 0 / 1 median {c0:.0f} / {c1:.0f} MHz; rank 0 "
                         f"law {p0:.0f} W, measured (bench energy / wall, rank 0's GPU) {m0:.0f} W")
    return "\n".join(lines)


PREDICTIONS_FILE = prereg.PREREG_DIR / "s31clk_predictions.csv"
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s31clk_judgement.json"
ONE_GPU_SUBDIR = "s31clk1"   # calibration/measurements/h200/s31clk1/<model>/
# docs/notes/s31clk_rule.md's clock criteria (part A): a rank-row's measured clock is the median of its GPU's 100 ms
# samples over the configuration's busy instants (any sampled GPU >= JUDGE_BUSY_W) after the first SETTLE_SAMPLES of
# them (the limit's ~0.1-0.3 s transient, s30fb §2)
JUDGE_BUSY_W = 300.0
SETTLE_SAMPLES = 5
CLOCK_TOL_MHZ = 60.0          # A1 / A2: the law's clock within this of the measured
CAPPED_BELOW_MHZ = 1900.0     # A2: a rank-row counts as held by the limit below this


def fresh_rows() -> list[dict]:
    return [{"gpu": GPU, "bench": "pipeline_step", "model": m, "schedule": s, "pp": 2, "ep": 1, "dp": 1, "num_gpus": 2,
             "num_microbatches": n, "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16", "num_layers": layers}
            for m, layers in FRESH_CASES for n in FRESH_MICROBATCHES for s in SCHEDULES]


def one_gpu_rows() -> list[dict]:
    return [{"gpu": GPU, "bench": "ep_step", "model": m, "schedule": "1f1b", "pp": 1, "ep": 1, "dp": 1, "num_gpus": 1,
             "num_microbatches": ONE_GPU_MICROBATCHES, "micro_batch_seqs": 1, "seq_len": 4096, "precision": "bf16",
             "num_layers": layers} for m, layers in ONE_GPU_CASES]


def law_clocks(r: dict, inputs: tuple) -> list[float]:
    """The law's clock of each rank of a row (pp 1: the one GPU), from the twin's simulation at its rates (switch off)."""
    profile, accumulate, host, hold_s = inputs
    with switch(False):
        res, _, det = pipe.simulate_row(pd.Series(r), gpu_spec(GPU), profile, accumulate, host, None, None, hold_s)
    schedule = pipe.build_schedule(det["schedule"], int(r["pp"]), int(r["num_microbatches"]))
    return pipe.rank_clocks_mhz(schedule, det["stage_kernel_s"], res.makespan_s, gpu_spec(GPU))


def predict_all(root: Path | str | None = None) -> pd.DataFrame:
    """The fresh two-GPU rows priced B (switch off) and C (on, columns prefixed cand_), with the law's clock of each
    rank (law_clock_r<k>_mhz); then the one-GPU rows with the law's clock of their GPU (no step prediction)."""
    root = rec.records_root() if root is None else root
    inputs = {GPU: prereg.two_gpu_inputs(GPU, root)}
    rows = fresh_rows()
    with switch(False):
        base = prereg.predict_ep(rows, root, inputs=inputs)
    with switch(True):
        cand = prereg.predict_ep(rows, root, inputs=inputs)
    cols = ["predicted_s"] + [c for c in base.columns if c.startswith("predicted_idle_r")]
    two = pd.concat([base, cand[cols].add_prefix("cand_")], axis=1)
    clocks = [law_clocks(r, inputs[GPU]) for r in rows]
    for k in (0, 1):
        two[f"law_clock_r{k}_mhz"] = [c[k] for c in clocks]
    one = pd.DataFrame(one_gpu_rows())
    one["law_clock_r0_mhz"] = [law_clocks(r, inputs[GPU])[0] for r in one_gpu_rows()]
    return pd.concat([two, one], ignore_index=True)


def write(allow_dirty: bool = False) -> pd.DataFrame:
    return prereg.write_registered(PREDICTIONS_FILE, predict_all, allow_dirty)


def config_clocks(steps: pd.DataFrame, clocks: pd.DataFrame) -> list[dict]:
    """Per row of a campaign folder's pipeline_step.csv (written per configuration, in run order): each sampled GPU's
    median SM clock and power over the configuration's settled busy instants (the rule's selection: after the previous
    row's stamp, up to its own + 1 s; any GPU >= JUDGE_BUSY_W; the first SETTLE_SAMPLES such instants dropped)."""
    c = clocks.assign(t=pd.to_datetime(clocks["timestamp_utc"], utc=True, format="ISO8601"), gpu_index=clocks["gpu_index"].astype(int))
    wide = c.pivot_table(index=c["t"].dt.round("100ms"), columns="gpu_index", values=["power_w", "sm_clock_mhz"],
                         aggfunc="median").dropna()
    out, prev = [], None
    stamps = pd.to_datetime(steps["timestamp_utc"], utc=True, format="ISO8601")
    for (_, row), stamp in sorted(zip(steps.iterrows(), stamps), key=lambda x: x[1]):
        end = stamp + pd.Timedelta("1s")
        win = wide[(wide.index <= end) & ((wide.index > prev) if prev is not None else True)]
        prev = end
        busy = win[(win["power_w"] >= JUDGE_BUSY_W).any(axis=1)].iloc[SETTLE_SAMPLES:]
        gpus = sorted(int(g) for g in wide["power_w"].columns)
        out.append({"model": str(row["model"]), "schedule": str(row["schedule"]), "pp": int(row["pp"]),
                    "num_microbatches": int(row["num_microbatches"]), "samples": int(len(busy)),
                    "clock_mhz": [float(busy["sm_clock_mhz"][g].median()) if len(busy) else float("nan") for g in gpus],
                    "power_w": [float(busy["power_w"][g].median()) if len(busy) else float("nan") for g in gpus]})
    return out


def measured_clocks(root: Path | str | None = None) -> list[dict]:
    """config_clocks of every filed folder of the fresh set: h200x2/s31clk/<model>/ (ranks 0, 1 on GPUs 0, 1) and
    h200/s31clk1/<model>/ (the one sampled GPU)."""
    root = Path(rec.records_root() if root is None else root)
    out = []
    for sub in (Path(f"{GPU}x2") / FRESH_SUBDIR, Path(GPU) / ONE_GPU_SUBDIR):
        for m, _ in (FRESH_CASES if sub.name == FRESH_SUBDIR else ONE_GPU_CASES):
            folder = root / sub / m
            if not (csv_exists(folder / "pipeline_step.csv") and csv_exists(folder / "gpu_clocks.csv")):
                continue
            out += config_clocks(read_csv(folder / "pipeline_step.csv"), read_csv(folder / "gpu_clocks.csv"))
    return out


def clock_criteria(preds: pd.DataFrame, meas: list[dict]) -> dict:
    """Part A: A1 (one GPU: the law within CLOCK_TOL_MHZ on >= 4 of 5 rows, median |error| <= 40 MHz), A2 (two GPUs:
    within CLOCK_TOL_MHZ on >= 75% of rank-rows, held-by-the-limit (< CAPPED_BELOW_MHZ) agreeing on >= 80%)."""
    rows = []
    for m in meas:
        p = preds[(preds["model"] == m["model"]) & (preds["pp"] == m["pp"])
                  & (preds["num_microbatches"] == m["num_microbatches"])
                  & ((preds["schedule"] == m["schedule"]) if m["pp"] > 1 else True)]
        if p.empty:
            continue
        for k, f in enumerate(m["clock_mhz"][: int(m["pp"])]):
            law = float(p.iloc[0][f"law_clock_r{k}_mhz"])
            rows.append({**{x: m[x] for x in ("model", "schedule", "pp", "num_microbatches")}, "rank": k,
                         "measured_mhz": f, "law_mhz": law, "error_mhz": law - f,
                         "capped_agree": (law < CAPPED_BELOW_MHZ) == (f < CAPPED_BELOW_MHZ)})
    one = [r for r in rows if r["pp"] == 1]
    two = [r for r in rows if r["pp"] > 1]
    within = lambda rr: sum(abs(r["error_mhz"]) <= CLOCK_TOL_MHZ for r in rr)   # noqa: E731
    a1 = (len(one) == len(ONE_GPU_CASES) and within(one) >= 4
          and float(np.median([abs(r["error_mhz"]) for r in one])) <= 40.0) if one else None
    a2 = (len(two) > 0 and within(two) >= 0.75 * len(two)
          and sum(r["capped_agree"] for r in two) >= 0.8 * len(two)) if two else None
    return {"rows": rows, "A1": a1, "A2": a2,
            "A1_within": within(one), "A1_rows": len(one), "A2_within": within(two), "A2_rows": len(two),
            "A2_capped_agree": sum(r["capped_agree"] for r in two)}


def judge(root: Path | str | None = None, with_guards: bool = True) -> dict:
    """The rule's verdict on whatever fresh records are filed: part A (the law's clocks), part B (B and C on the
    fresh two-GPU set, scored as s29idle's: steps, rank idle within 10%, ranking), the screen's guards (recorded in
    docs/notes/s31clk.md: failed, so the switch is not adopted whatever part B says)."""
    root = rec.records_root() if root is None else root
    if not csv_exists(PREDICTIONS_FILE):
        return {"registration": NAME, "predictions": None}
    preds = read_csv(PREDICTIONS_FILE)
    a = clock_criteria(preds, measured_clocks(root))
    two = preds[preds["pp"] > 1].reset_index(drop=True)
    secs = {"B": prereg_pp.section(root, subdir=FRESH_SUBDIR, preds=two),
            "C": prereg_pp.section(root, subdir=FRESH_SUBDIR, preds=s29idle._candidate_frame(two))}
    scores = {w: s29idle._score(v) if v["rows"] else None for w, v in secs.items()}
    part_b = None
    if scores["B"] and scores["C"]:
        b, c = scores["B"], scores["C"]
        lost = [{k: x[k] for k in ("model", "schedule", "num_microbatches", "rank")}
                for x, y in zip(secs["B"]["idle"], secs["C"]["idle"]) if x["within"] and not y["within"]]
        part_b = {"C1_idle_within_plus_4_none_lost": c["num_within"] >= b["num_within"] + 4 and not lost,
                  "C2_steps": (c["median_abs_rel_error"] <= prereg.MEDIAN_TARGET
                               and c["p90_abs_rel_error"] <= prereg.P90_TARGET
                               and c["median_abs_rel_error"] <= b["median_abs_rel_error"] + STEP_NOT_WORSE),
                  "C3_ranking": c["num_misordered"] <= b["num_misordered"], "lost_rank_rows": lost}
    guards = None
    if with_guards:
        sets = priced_sets(root)
        guards = {"sets": [{"set": x["set"], "B": x["B"], "C": x["C"], "lost": len(x["lost_rank_rows"]),
                            "gained": len(x["gained_rank_rows"])} for x in sets],
                  "G1_no_rank_row_lost": all(not x["lost_rank_rows"] for x in sets),
                  "G2_steps_not_worse": all(x["C"]["median_abs_rel_error"] <= x["B"]["median_abs_rel_error"]
                                            + STEP_NOT_WORSE for x in sets)}
    return {"registration": NAME, "note": "docs/notes/s31clk_rule.md", "switch": "pipeline.ADOPT_RANK_POWER_CLOCK",
            "predictions_commit": str(preds["code_commit"].iloc[0]),
            "targets": {"clock_tol_mhz": CLOCK_TOL_MHZ, "capped_below_mhz": CAPPED_BELOW_MHZ,
                        "judge_busy_w": JUDGE_BUSY_W, "settle_samples": SETTLE_SAMPLES},
            "clocks": a, "B": scores["B"], "C": scores["C"], "part_b": part_b, "guards": guards,
            "adopt": False, "why_not_adopted": "the screen's guards on the committed PP2 sets failed before the rule "
            "(docs/notes/s31clk.md): no fresh outcome adopts the switch; part A decides the next round's term"}


SMI_COLUMNS = {"timestamp": "timestamp_utc", "index": "gpu_index", "clocks.current.sm [MHz]": "sm_clock_mhz",
               "clocks.current.memory [MHz]": "mem_clock_mhz", "power.draw [W]": "power_w",
               "power.limit [W]": "power_limit_w", "temperature.gpu": "temperature_c"}
ENV_COLUMNS = ("gpu_name", "max_sm_clock_mhz", "driver_version", "torch_version", "cuda_version", "nccl_version",
               "num_gpus")


def clocks_record(raw: pd.DataFrame, env: dict, split: str = "holdout") -> pd.DataFrame:
    """The campaigns' raw `nvidia-smi --query-gpu=timestamp,index,clocks.sm,clocks.mem,power.draw,power.limit,
    temperature.gpu --format=csv` output as a record (s30fb's gpu_clocks schema): units stripped, the host's clock taken
    as UTC (the leases run in UTC), and every row with the run's GPU name, versions and GPU count (env_pipeline_*.json)."""
    df = raw.rename(columns=lambda c: SMI_COLUMNS.get(c.strip(), c.strip()))
    df = df[[c for c in SMI_COLUMNS.values() if c in df.columns]].copy()
    for c in df.columns:
        if c != "timestamp_utc":
            df[c] = pd.to_numeric(df[c].astype(str).str.extract(r"([-0-9.]+)")[0], errors="coerce")
    t = pd.to_datetime(df["timestamp_utc"].astype(str).str.strip(), format="%Y/%m/%d %H:%M:%S.%f", errors="coerce")
    df["timestamp_utc"] = t.dt.tz_localize("UTC").map(lambda x: x.isoformat(timespec="milliseconds") if pd.notna(x) else "")
    df = df[df["timestamp_utc"] != ""].dropna(subset=["sm_clock_mhz", "power_w"])
    df["gpu_index"] = df["gpu_index"].astype(int)
    for c in ENV_COLUMNS:
        df[c] = env.get(c)
    df["split"] = split
    return df


def file_folder(src: Path, dest: Path) -> list[str]:
    """One campaign model folder filed as records: its CSVs packed (.csv.xz), gpu_clocks.csv converted (clocks_record),
    the env json copied; returns the files written."""
    dest.mkdir(parents=True, exist_ok=True)
    env_files = sorted(src.glob("env_pipeline_*.json"))
    env = json.loads(env_files[0].read_text()) if env_files else {}
    out = []
    for path in sorted(src.iterdir()):
        if path.name == "gpu_clocks.csv":
            target = dest / "gpu_clocks.csv"
            clocks_record(pd.read_csv(path, skipinitialspace=True), env).to_csv(target, index=False)
        elif path.suffix == ".csv":
            target = dest / path.name
            target.write_bytes(path.read_bytes())
        elif path.suffix == ".json" and path.name.startswith("env"):
            (dest / path.name).write_text(path.read_text())
            out.append(path.name)
            continue
        else:
            continue
        out.append(pack_record(target).name)
    return out


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.s31clk", __doc__)
    ap.add_argument("action", nargs="?", default="fit", choices=["fit", "screen", "write", "judge", "record", "file"])
    ap.add_argument("folders", nargs="*", type=Path, help="file: SRC DEST (a campaign model folder, its records folder)")
    args = ap.parse_args(argv)
    if args.action == "fit":
        law, points = fit()
        for p in points:
            print(f"{p['model']:18s} n{p['num_microbatches']:<3d} rank {p['rank']}: {p['samples']:3d} samples, "
                  f"{p['power_w']:5.0f} W at {p['clock_mhz']:5.0f} MHz (law {p['law_clock_mhz']:5.0f}); step "
                  f"{p['measured_step_s'] * 1e3:6.1f} ms (twin {p['twin_makespan_s'] * 1e3:6.1f}); kernels compute "
                  f"{p['compute_s'] * 1e3:6.1f}, memory {p['memory_s'] * 1e3:6.1f} ms")
        print({k: round(v, 1) if isinstance(v, float) else v for k, v in law.items()})
        return 0
    if args.action == "screen":
        print(format_screen(screen()))
    if args.action == "write":
        df = write()
        print(df.to_string(max_cols=30))
    if args.action == "file":
        if len(args.folders) != 2:
            ap.error("file: SRC DEST")
        print(", ".join(file_folder(*args.folders)))
    if args.action in ("judge", "record"):
        if args.action == "record" and prereg.refuses_uncommitted_record():
            return 2
        out = judge()
        print(json.dumps(out, indent=1, default=float))
        if args.action == "record":
            prereg.write_code_record(JUDGEMENT_FILE, "python -m calibration.s31clk record", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

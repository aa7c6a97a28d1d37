"""Pre-registered predictions of real/serve load runs of models no load run ever served (session s21srvnew).

Every serving load run recorded so far served DeepSeek slices (v2-lite-slice, v3-slice*). Here the twin
predicts real/serve load runs of session s20new's three MLA slices of other families' MoE shapes
(twin/data/models.toml: qwen3moe-mla-slice, qwen2moe-mla-slice, mixtral-mla-slice) on one H100 and one
H200, before they run, through the path the serving-load validation replays a one-GPU run with
(calibration.serve_load_validation.scenario_for and the request simulation, the GPU's committed one-GPU
engine table real-serve-<gpu>-ep1, SPREAD_SEEDS replays, the median): the campaign
real/campaigns/s21srvnew.sh runs plans gpu1-new-<model> (real/serve/plans.py S21_PLANS; a test holds
them equal to RUNS / ENGINE here), each model in its own engine process with GPU1's engine settings:

- a length mix no fit run had: prompts uniform 192-768 tokens, outputs uniform 32-160;
- Poisson 8/s and 24/s, a closed loop of 16 clients, 2.5 s of load each; all held out;
- before its first run the process runs an eager forward of every flat batch size up to WARM_TOKENS (the
  longest prompt beside 64 decode rows; Engine.warm_shapes): an iteration of one prompt is never of a size
  the process meets first. A larger size (two prompts in one iteration) met in an EARLIER run of the
  process is not known before the runs: the registration counts only the warmed sizes as run before
  (`warmed_sizes`), so such a size is charged as new where it recurs in a later run; `compare` reports
  beside it, as a diagnostic, the same code replaying the run as `twin validate` would (the recorded
  requests, the sizes the process's earlier runs recorded: `replay_recorded`);
- every run bracketed by the host probe (real/serve/hostspeed.py), the main thread pinned to one CPU of
  its GPU's (as the s13srv records).

What is known before a run and what is not. A Poisson run's requests (arrival times, prompt and output
lengths) follow from its seed alone (real/serve/loadgen.py: `poisson_requests` / `lengths` here repeat
its arithmetic; a test holds them equal). A closed loop's requests are the seed's id-ordered lengths,
but how many it issues depends on how fast it runs: each replay issues the concurrency at t = 0 and one
more per request finishing before load_s, as the load generator does (`closed_loop_count`; requests
issued after load_s cannot move an earlier finish, so the count is exact for the replay). The host
probe is known only once the run ran: the host-input twin (serve.host_launch_s, the table's host terms
scaled by (p / p_ref)^beta, docs/notes/s13srv_rule.md) is registered on a grid of probe values
PROBE_GRID_S, and the prediction at a run's measured probe p (the mean of its before and after
readings, record_host_launch_s) is the grid's linear interpolation in log p (outside the grid the end
point, flagged).

PRIMARY variant: the host-input twin at the run's measured probe (interpolated on the registered grid):
the twin's variant for a host it never fitted (the lent machines are such hosts). SECONDARY: the twin
without the host input (probe 0: the table's fit host), registered as `host_launch_s = 0` rows.

Targets (issue 15, as calibration.serve_load_validation.TARGETS): per run, throughput within 5%, TTFT and
TPOT P50 within 10%, P99 within 20%; reported per GPU as checks met of 45 (3 models x 3 runs x 5
figures) and the median / P90 |error|.

    python -m calibration.prereg_serve write     # the predictions file (refuses a dirty twin/ or calibration/)
    python -m calibration.prereg_serve compare   # beside calibration/measurements/<gpu>/s21srvnew/<model>/

Session s22ttft (docs/notes/s22ttft_rule.md) registers the same models and mix at new rates (S22) under the committed
twin and under serve_load_validation.ADOPT_WARM_PASS_COVERS_BUDGET (`--registration s22ttft`).

The predictions are written with the commit of the code that made them and a UTC timestamp to
calibration/measurements/prereg/s21srvnew_predictions.csv, committed before the campaign runs, and
never rewritten. The records land in calibration/measurements/<gpu>/s21srvnew/<model>/ (a subfolder
of the GPU folder: no engine fit and no serve_load validation folder reads it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration.prereg import PREREG_DIR, write_registered
from calibration.records_io import csv_exists, read_csv
from calibration.serve_host_speed import replay
from calibration import serve_load_validation as slv
from calibration.serve_load_validation import (FIGURES, SPREAD_SEEDS, TARGETS, loadgen_figures, record_host_launch_s,
                                               scenario_for)
from twin.serving import timing
from twin.serving.simulate import simulate
from twin.serving.timing import engine_spread, sharing_grids, sharing_iterations
from twin.serving.workload import from_records

NAME = "s21srvnew"
PREDICTIONS_FILE = PREREG_DIR / f"{NAME}_predictions.csv"
RECORDS_SUBDIR = NAME   # calibration/measurements/<gpu>/s21srvnew/<model short>/serve_*.csv (each registration its name)
GPUS = ("h100", "h200")
# real/bench/device.py's gpu_name of the lent machines (only the catalog key is read from it: gpu_key)
GPU_NAMES = {"h100": "NVIDIA H100 80GB HBM3", "h200": "NVIDIA H200"}
MODELS = ("qwen3moe-mla-slice", "qwen2moe-mla-slice", "mixtral-mla-slice")


@dataclasses.dataclass(frozen=True)
class RunCase:
    """One planned run (real/serve/plans.py RunSpec's fields a prediction reads)."""

    name: str
    arrival: str
    input_len: str
    output_len: str
    rate_per_s: float = 0.0
    concurrency: int = 0
    load_s: float = 2.5
    seed: int = 0


MIX_IN, MIX_OUT = "uniform:192-768", "uniform:32-160"
RUNS = (RunCase("poisson-r8-mid", "poisson", MIX_IN, MIX_OUT, rate_per_s=8.0, seed=41),
        RunCase("poisson-r24-mid", "poisson", MIX_IN, MIX_OUT, rate_per_s=24.0, seed=42),
        RunCase("closed-c16-mid", "closed", MIX_IN, MIX_OUT, concurrency=16, seed=43))
# real/serve/plans.py GPU1's engine (the committed one-GPU tables' runs), its decode graph buckets as
# real/serve/graphs.py default_batch_buckets(64) / default_page_buckets(33 pages of 64 for 2112 tokens)
ENGINE = {"page_size": 64, "num_pages": 4096, "token_budget": 2048, "max_running": 64, "max_context": 2112,
          "graph_batch_buckets": "1 2 4 8 16 24 32 48 64", "graph_page_buckets": "1 2 4 8 16 32 33"}
WARM_TOKENS = 832   # Engine.warm_shapes before the first run: the longest prompt (768) + 64 decode rows
# host probe grid (s per small launch): the committed tables' references are 7.1-7.4 us (one GPU), the
# hosts seen so far 8-14 us as they came and up to 22 us dosed
PROBE_GRID_S = (5e-6, 6e-6, 7e-6, 8e-6, 9e-6, 10e-6, 11e-6, 12e-6, 14e-6, 16e-6, 20e-6, 25e-6)
KEY = ["gpu", "model", "run_id"]


def short(model: str) -> str:
    """'qwen3moe-mla-slice' -> 'qwen3moe' (real/serve/plans.py s21_short)."""
    return model.split("-", 1)[0]


def run_id(model: str, run: RunCase, prefix: str = "n21") -> str:
    return f"{prefix}-{short(model)}-{run.name}"


# the twin settings a registration predicts under, as (ADOPT_LAYER_SCALED_ENGINE, ADOPT_WARM_PASS_COVERS_BUDGET):
# 'current' (session 21's committed twin), 'layer_scaled' (twin.serving.timing.ADOPT_LAYER_SCALED_ENGINE on:
# docs/notes/s21srvnew2_rule.md, adopted) and 'warm_covers' (that and serve_load_validation.
# ADOPT_WARM_PASS_COVERS_BUDGET on: docs/notes/s22ttft_rule.md)
TWINS = {"current": (False, False), "layer_scaled": (True, False), "warm_covers": (True, True)}


@contextlib.contextmanager
def twin_setting(name: str):
    """The twin as registered under `name` (TWINS), restored after."""
    saved = timing.ADOPT_LAYER_SCALED_ENGINE, slv.ADOPT_WARM_PASS_COVERS_BUDGET
    timing.ADOPT_LAYER_SCALED_ENGINE, slv.ADOPT_WARM_PASS_COVERS_BUDGET = TWINS[name]
    try:
        yield
    finally:
        timing.ADOPT_LAYER_SCALED_ENGINE, slv.ADOPT_WARM_PASS_COVERS_BUDGET = saved


@dataclasses.dataclass(frozen=True)
class Registration:
    """One registration: its name (the predictions file prereg/<name>_predictions.csv and the records'
    subfolder <gpu>/<name>/), its runs, their names' prefix and the twin settings it predicts under."""

    name: str
    runs: tuple
    prefix: str
    twins: tuple = ("current",)
    rule: tuple = ()   # (base twin, candidate twin) its rule judges (rule_verdict); () none

    @property
    def predictions_file(self) -> Path:
        return PREREG_DIR / f"{self.name}_predictions.csv"


S21 = Registration(NAME, RUNS, "n21")
# s21srvnew2 (docs/notes/s21srvnew2_rule.md): the same configurations with fresh seeds (real/serve/plans.py
# S21B_PLANS), predicted by the committed twin and with the engine's launch terms scaled by the model's layers
S21B = Registration("s21srvnew2", tuple(dataclasses.replace(r, seed=r.seed + 10) for r in RUNS), "n21b",
                    ("current", "layer_scaled"), ("current", "layer_scaled"))
# s22ttft (docs/notes/s22ttft_rule.md): the same models and length mix at rates and a concurrency no run had (Poisson
# 16/s and 32/s, a closed loop of 24), fresh seeds (real/serve/plans.py S22_PLANS), predicted by the committed twin
# ('layer_scaled') and with a warmed process's sizes up to its token budget counted as run ('warm_covers')
S22_RUNS = (RunCase("poisson-r16-mid", "poisson", MIX_IN, MIX_OUT, rate_per_s=16.0, seed=61),
            RunCase("poisson-r32-mid", "poisson", MIX_IN, MIX_OUT, rate_per_s=32.0, seed=62),
            RunCase("closed-c24-mid", "closed", MIX_IN, MIX_OUT, concurrency=24, seed=63))
S22 = Registration("s22ttft", S22_RUNS, "n22", ("layer_scaled", "warm_covers"), ("layer_scaled", "warm_covers"))
# s23srvh (docs/notes/s23srvh_rule.md): the same models and length mix at rates and a concurrency no run had (Poisson
# 12/s and 28/s, a closed loop of 20), fresh seeds (real/serve/plans.py S23_PLANS), each run's load after the pause
# probe; judged by calibration.serve_host_stalls (predictions at each run's measured host inputs by the code of the
# rule's commit: no grid file, so not in REGISTRATIONS, whose records are compared with their predictions file)
S23_RUNS = (RunCase("poisson-r12-mid", "poisson", MIX_IN, MIX_OUT, rate_per_s=12.0, seed=71),
            RunCase("poisson-r28-mid", "poisson", MIX_IN, MIX_OUT, rate_per_s=28.0, seed=72),
            RunCase("closed-c20-mid", "closed", MIX_IN, MIX_OUT, concurrency=20, seed=73))
S23 = Registration("s23srvh", S23_RUNS, "n23", ("warm_covers",))
REGISTRATIONS = {r.name: r for r in (S21, S21B, S22)}


# ---- the load generator's requests (real/serve/loadgen.py, repeated without torch) ----------------------

def _sample(spec: str, rng: random.Random) -> int:
    """loadgen.LengthDist.sample of 'fixed:N' / 'uniform:LO-HI' / 'list:A,B'."""
    kind, _, rest = spec.partition(":")
    if kind == "fixed":
        return int(rest)
    if kind == "uniform":
        lo, hi = (int(v) for v in rest.split("-"))
        return rng.randint(lo, hi)
    return rng.choice(tuple(int(v) for v in rest.split(",")))


def lengths(run: RunCase, request_id: int) -> tuple[int, int]:
    """(prompt, output) tokens of request `request_id` (loadgen.make_request: its own generator seeded by
    seed * 1_000_003 + id, prompt length drawn first)."""
    rng = random.Random(run.seed * 1_000_003 + request_id)
    n_in = _sample(run.input_len, rng)
    return n_in, _sample(run.output_len, rng)


def poisson_arrivals_s(run: RunCase) -> list[float]:
    """loadgen.PoissonArrivals: exponential gaps at rate_per_s from random.Random(seed), over [0, load_s)."""
    rng = random.Random(run.seed)
    t, times = 0.0, []
    while True:
        t += rng.expovariate(run.rate_per_s)
        if t >= run.load_s:
            return times
        times.append(t)


# ---- the twin's prediction ---------------------------------------------------------------------------

def run_row(gpu: str, model: str, run: RunCase, host_launch_s: float) -> dict:
    """The serve_load row scenario_for reads, as the campaign will write it (probe before = after = the
    host input; none for 0)."""
    probe = {"probe_before_launch_s": host_launch_s, "probe_after_launch_s": host_launch_s} if host_launch_s else {}
    return {"run_id": run_id(model, run), "model": model, "gpu_name": GPU_NAMES[gpu], "num_gpus": 1, "ep_size": 1,
            "attention_parallel": "dp", "precision": "bf16", "cuda_graphs": "1", "pin": "core",
            "arrival": run.arrival, "rate_per_s": run.rate_per_s, "concurrency": run.concurrency,
            "warm_shapes": WARM_TOKENS, **{k: v for k, v in ENGINE.items() if k != "max_context"}, **probe}


def engine_table(gpu: str) -> str:
    """The committed unpinned one-GPU table (as calibration.serve_engine_fit.base_table of a pinned run)."""
    return f"real-serve-{gpu}-ep1"


def warmed_sizes() -> frozenset:
    """(rank, flat size) pairs run before every run: sizes_run_before of a run whose warm_shapes is WARM_TOKENS (under
    ADOPT_WARM_PASS_COVERS_BUDGET every size up to the token budget: serve_load_validation.warm_pass_tokens)."""
    run = {"warm_shapes": WARM_TOKENS, "token_budget": ENGINE["token_budget"]}
    return frozenset((0, n) for n in range(1, slv.warm_pass_tokens(run) + 1))


def _replay(sc, arrival, isl, osl) -> dict:
    return simulate(sc, requests=from_records(arrival, isl, osl, sc.traffic), run_batch_sizes=warmed_sizes()).per_request()


def closed_loop_count(sc, run: RunCase, start: int = 256) -> int:
    """How many requests the closed loop issues in this replay: the concurrency at t = 0, then one per
    request finishing before load_s (loadgen.ClosedLoopArrivals.on_finish). Replayed with more requests
    than that (doubling until some is issued after load_s): the ones issued later cannot move a finish
    before load_s, so the count is the replay's own."""
    n = max(start, 2 * run.concurrency)
    while True:
        isl, osl = zip(*(lengths(run, i) for i in range(n)))
        per = _replay(sc, None, list(isl), list(osl))
        issued = run.concurrency + int(np.sum(np.asarray(per["finish_s"]) < run.load_s))
        if issued < n:
            return issued
        n *= 2


def predict(gpu: str, model: str, run: RunCase, host_launch_s: float, prefix: str = "n21", extra: dict | None = None) -> dict:
    """The twin's figures of one planned run (serve_load_validation.predict_run's median over SPREAD_SEEDS
    replays; a closed loop's request count found per replay) and the closed loop's median request count.
    `extra`: more serve_load columns the run's row is given (s23srvh: the host's pauses)."""
    row = {**run_row(gpu, model, run, host_launch_s), "run_id": run_id(model, run, prefix), **(extra or {})}
    sc = scenario_for(row, engine=engine_table(gpu))
    seeds = SPREAD_SEEDS if sc.serve.iteration_spread and engine_spread(sc.serve.engine_costs) else 1
    figs, counts = [], []
    arrival = None if run.arrival == "closed" else poisson_arrivals_s(run)
    # one scenario's replays (the seeds', and a closed loop's longer and longer ones): each grid point once and
    # (s32ci2) each engine-table iteration priced once (as serve_load_validation.predict_run)
    with sharing_grids(), sharing_iterations():
        for seed in range(seeds):
            one = dataclasses.replace(sc, traffic=dataclasses.replace(sc.traffic, seed=seed))
            n = closed_loop_count(one, run) if arrival is None else len(arrival)
            isl, osl = zip(*(lengths(run, i) for i in range(n)))
            figs.append(loadgen_figures(_replay(one, arrival, list(isl), list(osl))))
            counts.append(n)
    return {**{k: float(np.median([f[k] for f in figs])) for k in FIGURES}, "num_requests": float(np.median(counts))}


def case_rows(reg: Registration = S21) -> list[dict]:
    """One row per (twin setting, gpu, model, run, host input): the no-input prediction (0) and the probe grid."""
    return [{"twin": twin, "gpu": gpu, "model": model, "run_id": run_id(model, run, reg.prefix), "host_launch_s": p}
            for twin in reg.twins for gpu in GPUS for model in MODELS for run in reg.runs
            for p in (0.0, *PROBE_GRID_S)]


def predictions(rows: list[dict], reg: Registration = S21) -> pd.DataFrame:
    runs = {run_id(m, r, reg.prefix): (m, r) for m in MODELS for r in reg.runs}
    out = []
    for row in rows:
        model, run = runs[row["run_id"]]
        with twin_setting(row.get("twin", "current")):
            out.append({**row, **predict(row["gpu"], model, run, row["host_launch_s"], reg.prefix)})
    return pd.DataFrame(out)


def write(path: Path | None = None, allow_dirty: bool = False, rows: list[dict] | None = None,
          reg: Registration = S21) -> pd.DataFrame:
    """Write the predictions file; refuses to overwrite one (a pre-registration is never redone) and to
    predict from uncommitted code."""
    path = reg.predictions_file if path is None else path
    return write_registered(path, lambda: predictions(case_rows(reg) if rows is None else rows, reg), allow_dirty)


# ---- after the run --------------------------------------------------------------------------------------

def at_probe(grid: pd.DataFrame, p: float) -> tuple[dict, bool]:
    """A run's registered figures at probe p: linear in log p between the grid's two neighbours (the
    grid's rows of one run, host_launch_s > 0); outside the grid the end point. Returns (figures, inside)."""
    g = grid[grid["host_launch_s"] > 0].sort_values("host_launch_s")
    x = np.log(g["host_launch_s"].to_numpy())
    inside = bool(x[0] <= math.log(p) <= x[-1])
    return {k: float(np.interp(math.log(p), x, g[k].to_numpy())) for k in FIGURES}, inside


def records_dir(root: Path | str, gpu: str, model: str, reg: Registration = S21) -> Path:
    return Path(root) / gpu / reg.name / short(model)


def measured(root: Path | str | None = None, reg: Registration = S21) -> pd.DataFrame:
    """The campaign's serve_load rows of every GPU folder that has them, with the run's host probe."""
    root = rec.records_root() if root is None else root
    frames = []
    for gpu in GPUS:
        for model in MODELS:
            path = records_dir(root, gpu, model, reg) / "serve_load.csv"
            if csv_exists(path):
                df = read_csv(path, dtype=str).fillna("")
                df = df.assign(gpu=gpu, probe_s=[record_host_launch_s(r) for r in df.to_dict("records")])
                frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def compare(preds: pd.DataFrame, records: pd.DataFrame) -> list[dict]:
    """Per measured run, twin setting and variant ('host_input': the grid at the run's probe; 'no_input':
    the fit host's row), every figure's measured, predicted, error and whether it meets its target."""
    if "twin" not in preds:
        preds = preds.assign(twin="current")
    out = []
    for r in records.to_dict("records"):
        for twin in preds["twin"].unique():
            mine = preds[(preds["twin"] == twin) & (preds["gpu"] == r["gpu"]) & (preds["run_id"] == r["run_id"])]
            if mine.empty:
                continue
            variants = {"no_input": (mine[mine["host_launch_s"] == 0].iloc[0].to_dict(), True)}
            if r["probe_s"] > 0:
                variants["host_input"] = at_probe(mine, r["probe_s"])
            for variant, (pred, inside) in variants.items():
                row = {"gpu": r["gpu"], "model": r["model"], "run_id": r["run_id"], "twin": twin, "variant": variant,
                       "probe_s": r["probe_s"], "probe_inside_grid": inside, "gpu_name": r.get("gpu_name", "")}
                out.append({**row, **figure_errors(r, pred)})
    return out


def figure_errors(record: dict, pred: dict) -> dict:
    """Each figure's measured value (NaN where the run recorded none), prediction, relative error and whether it
    meets issue 15's target: the figure columns of a compare row."""
    out = {}
    for k in FIGURES:
        meas = float(record[k]) if record.get(k) not in (None, "") else math.nan
        err = pred[k] / meas - 1.0 if meas and math.isfinite(meas) else math.nan
        out.update({f"{k}_measured": meas, f"{k}_predicted": float(pred[k]), f"{k}_rel_error": err,
                    f"{k}_within_target": bool(math.isfinite(err) and abs(err) <= TARGETS[k])})
    return out


def summarize(rows: list[dict]) -> dict:
    """Per GPU, twin setting and variant: checks met of all, the median and P90 |error|, and per figure the
    runs within target (the label '<gpu> <variant>' for the committed twin, '<gpu> <variant> <twin>' else)."""
    out = {}
    label = lambda r: " ".join([r["gpu"], r["variant"]] + ([r["twin"]] if r.get("twin", "current") != "current" else []))  # noqa: E731
    for key in sorted({label(r) for r in rows}):
        sub = [r for r in rows if label(r) == key]
        errs = np.array([abs(r[f"{k}_rel_error"]) for r in sub for k in FIGURES if math.isfinite(r[f"{k}_rel_error"])])
        out[key] = {
            "num_runs": len(sub), "checks": len(sub) * len(FIGURES),
            "checks_met": int(sum(r[f"{k}_within_target"] for r in sub for k in FIGURES)),
            "median_abs_rel_error": float(np.median(errs)) if errs.size else None,
            "p90_abs_rel_error": float(np.percentile(errs, 90)) if errs.size else None,
            "by_figure": {k: int(sum(r[f"{k}_within_target"] for r in sub)) for k in FIGURES}}
    return out


def layer_rule(rows: list[dict]) -> dict:
    """docs/notes/s21srvnew2_rule.md's judgement on compare()'s rows of the s21srvnew2 records (rule_verdict of
    'current' against 'layer_scaled')."""
    return rule_verdict(rows, "current", "layer_scaled")


def rule_verdict(rows: list[dict], base: str, candidate: str) -> dict:
    """A registration's rule on compare()'s rows (docs/notes/s21srvnew2_rule.md, s22ttft_rule.md): per setting the
    host-input checks met and median |error| pooled over the GPUs that ran, and per GPU the checks met; adopt
    only if the candidate meets more checks, has the lower median and meets no fewer on any GPU. Keys: the two
    settings' names, 'adopt', and 'base' / 'candidate' naming them."""
    out = {}
    for twin in (base, candidate):
        sub = [r for r in rows if r["variant"] == "host_input" and r["twin"] == twin]
        errs = [abs(r[f"{k}_rel_error"]) for r in sub for k in FIGURES if math.isfinite(r[f"{k}_rel_error"])]
        out[twin] = {"checks": len(sub) * len(FIGURES),
                     "checks_met": int(sum(r[f"{k}_within_target"] for r in sub for k in FIGURES)),
                     "median_abs_rel_error": float(np.median(errs)) if errs else math.nan,
                     "by_gpu": {g: int(sum(r[f"{k}_within_target"] for r in sub if r["gpu"] == g for k in FIGURES))
                                for g in sorted({r["gpu"] for r in sub})}}
    cur, new = out[base], out[candidate]
    out["base"], out["candidate"] = base, candidate
    out["adopt"] = bool(cur["checks"] > 0 and new["checks_met"] > cur["checks_met"]
                        and new["median_abs_rel_error"] < cur["median_abs_rel_error"]
                        and all(new["by_gpu"].get(g, 0) >= n for g, n in cur["by_gpu"].items()))
    return out


def replay_recorded(root: Path | str | None = None, reg: Registration = S21) -> list[dict]:
    """Diagnostic, not the registration: each recorded run replayed as the s13srv host-probe records are
    (calibration.serve_host_speed.replay with the host input: the recorded requests, the sizes its process's
    earlier runs recorded, the committed one-GPU table), by the code checked out now."""
    root = rec.records_root() if root is None else root
    out = []
    for gpu in GPUS:
        for model in MODELS:
            d = records_dir(root, gpu, model, reg)
            if csv_exists(d / "serve_load.csv") and csv_exists(d / "serve_iterations.csv"):
                out.extend({**r, "model": model, "variant": "replay_recorded"} for r in replay(d, True, ("holdout",)))
    return out


def validate_section(root: Path | str | None = None, path: Path | None = None, reg: Registration = S21) -> dict:
    """`twin validate`'s prereg_<name> part: the registered predictions beside the records (empty where
    either is missing)."""
    root = rec.records_root() if root is None else root
    path = reg.predictions_file if path is None else path
    if not csv_exists(path):
        return {"registration": reg.name, "predictions_commit": None, "summary": {}, "rows": []}
    preds = read_csv(path)
    recs = measured(root, reg)
    rows = compare(preds, recs) if not recs.empty else []
    diagnostic = replay_recorded(root, reg) if rows else []
    # the registration's own judgement (docs/notes/s21srvnew2_rule.md, s22ttft_rule.md) where it has a rule
    verdict = rule_verdict(rows, *reg.rule) if rows and reg.rule else None
    return {"registration": reg.name, "predictions_commit": str(preds["code_commit"].iloc[0]), "primary": "host_input",
            "summary": summarize(rows), "rows": rows, "diagnostic_summary": summarize(diagnostic),
            "diagnostic_rows": diagnostic, "layer_rule": verdict}


def in_force_twin(rows: list[dict]) -> str:
    """The registered twin setting the committed twin runs as (TWINS: its switches as set now), else the one
    registered closest before it ('layer_scaled' before 'warm_covers', 'current' before both)."""
    registered = {r.get("twin", "current") for r in rows}
    now = (timing.ADOPT_LAYER_SCALED_ENGINE, slv.ADOPT_WARM_PASS_COVERS_BUDGET)
    names = [n for n, sw in TWINS.items() if n in registered and all(a <= b for a, b in zip(sw, now))]
    return max(names, key=lambda n: sum(TWINS[n])) if names else "current"


def format_section(section: dict) -> list[str]:
    head = (f"Pre-registered serve load runs, models never served ({section.get('registration', NAME)}; predictions of "
            f"{(section['predictions_commit'] or 'none')[:7]})")
    if not section["rows"]:
        return [head + ": no records yet"]
    lines = [head + ", primary host_input:"]
    for name, s in section["summary"].items():
        lines.append(f"  prereg {name}: {s['checks_met']}/{s['checks']} checks within target, median |err| "
                     f"{s['median_abs_rel_error']:.1%}, P90 {s['p90_abs_rel_error']:.1%}")
    verdict = section.get("layer_rule")
    if verdict:
        base, cand = verdict.get("base", "current"), verdict.get("candidate", "layer_scaled")
        cur, new = verdict[base], verdict[cand]
        label = "layer_rule" if (base, cand) == ("current", "layer_scaled") else f"{cand}_rule"
        lines.append(f"  {label} (GPUs {', '.join(cur['by_gpu'])}): {base} {cur['checks_met']}/{cur['checks']} checks, "
                     f"median |err| {cur['median_abs_rel_error']:.2%}; {cand} {new['checks_met']}/{new['checks']}, "
                     f"{new['median_abs_rel_error']:.2%}: {'adopt' if verdict['adopt'] else 'not adopted'}")
    for name, s in section["diagnostic_summary"].items():
        lines.append(f"  (diagnostic, not registered) {name}: {s['checks_met']}/{s['checks']} checks, median |err| "
                     f"{s['median_abs_rel_error']:.1%}, P90 {s['p90_abs_rel_error']:.1%}")
    in_force = in_force_twin(section["rows"])
    for r in section["rows"]:
        if r["variant"] != "host_input" or r.get("twin", "current") != in_force:
            continue
        figs = ", ".join(f"{k.removesuffix('_s')} {r[f'{k}_rel_error']:+.1%}{'' if r[f'{k}_within_target'] else '!'}"
                         for k in FIGURES)
        lines.append(f"    {r['gpu']} {r['run_id']} (p {r['probe_s'] * 1e6:.1f} us): {figs}")
    return lines


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.prereg_serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("action", choices=["write", "compare"])
    ap.add_argument("--registration", choices=sorted(REGISTRATIONS), default=NAME)
    ap.add_argument("--allow-dirty", action="store_true", help="write with uncommitted predicting code (tests only)")
    args = ap.parse_args(argv)
    reg = REGISTRATIONS[args.registration]
    if args.action == "write":
        print(write(allow_dirty=args.allow_dirty, reg=reg).to_string(index=False))
        return 0
    print("\n".join(format_section(validate_section(reg=reg))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Session s24pipe: the eager serving iteration as a launch/kernel pipeline, and its judgement
(docs/notes/s24pipe_rule.md).

The candidate (`setting(True)`): twin.serving.timing.ADOPT_EAGER_PIPELINE and ADOPT_HEAD_SCALED_SCORES on, the one-GPU
tables' `eager_op_s` set to s24eager's measured host per aten operator (`op_cost`: the median over the fitting rows
of calibration/measurements/<gpu>/s24eager/fit/eager_host.csv, rounds 1-3, of host_s at the table's reference host
over the step's counted operators; each table at its own reference). The operator counts are
twin/data/serve_eager_ops.toml (real/serve/opcount.py). No other constant.

    python -m calibration.serve_pipeline fit     # the fitting records: the pipeline against duration_s and the tail
    python -m calibration.serve_pipeline         # the judgement: set E (fresh) and the guards (sets A-D, committed)
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np

from calibration import entry
from calibration import serve_judge_cli as cli
from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_score_heads as ssh
from calibration import serve_switch_compare as ssc
from calibration.serve_host_speed import before_t, tables_with
from calibration.records_io import open_csv
from calibration.serve_load_validation import FIGURES, scenario_for
from twin.core.specs import get_model
from twin.serving import timing
from twin.serving.pipeline import pipeline_end_s
from twin.serving.timing import IterationCosts, engine_costs

NAME = "s24pipe"
ONE_GPU_TABLES = seh.ONE_GPU_TABLES
# a one-GPU load row of the s21srvnew engine (GPU1's settings) whose scenario the fitting check borrows, the model
# and the host probe replaced
BASE_RUN = Path("h100") / "s21srvnew" / "mixtral" / "serve_load.csv"


def op_cost(root: Path | str | None = None) -> dict[str, float]:
    """{one-GPU table: seconds an aten operator at its reference host}: the median over s24eager's fitting rows."""
    root = rec.records_root() if root is None else root
    rows = [r for r in seh.fit_rows(seh.read_fit(root)) if r.get("ops")]
    if not rows:
        raise ValueError("no s24eager fitting rows with operator counts")
    return {t: float(np.median([seh.host_at_reference(r, engine_costs(t)) / float(r["ops"]) for r in rows]))
            for t in ONE_GPU_TABLES}


def setting(on: bool, costs: dict[str, float] | None = None):
    """The committed twin (off) or the candidate (on: both switches, `eager_op_s` in the one-GPU tables)."""
    stack = before_t(ExitStack())
    stack.enter_context(mock.patch.object(timing, "ADOPT_HEAD_SCALED_SCORES", on))
    stack.enter_context(mock.patch.object(timing, "ADOPT_EAGER_PIPELINE", on))
    if on:
        stack.enter_context(tables_with({t: {"eager_op_s": c} for t, c in (costs or op_cost()).items()}))
    return stack


# ---- the fitting check (reported beside, never a criterion) -----------------------------------------------

def _base_run(root: Path) -> dict:
    with open_csv(root / BASE_RUN) as f:
        return next(csv.DictReader(f))


def costs_for(model: str, gpu_row: dict, probe_s: float, table: str, root: Path) -> IterationCosts:
    """The twin's iteration costs of `model` in GPU1's engine on the table's GPU at the host probe `probe_s`."""
    run = {**_base_run(root), "model": model, "gpu_name": gpu_row["gpu_name"]}
    sc = scenario_for(run, spread=False, engine=table)
    return IterationCosts(get_model(model), sc.gpu, dataclasses.replace(sc.serve, host_launch_s=probe_s))


def step_prediction(costs: IterationCosts, row: dict) -> dict:
    """The pipeline's (and the committed twin's) duration, last launch and tail of one fitting step (a fresh engine:
    decode rows at context SETUP_PROMPT + 1, each prompt one chunk at span its length)."""
    p, n, d = int(row["prompts"]), int(row["tokens"]), int(row["decode_rows"])
    chunks = int(row["chunks"])
    ctx = 33.0 if d else 0.0
    pairs = float(p * n * n)
    e = costs.engine
    kern, pre, eager, b, width = costs._kernels(d, ctx, float(p * n), float(n), ctx, 0.0)
    stages = costs._pipeline_stages(b, ctx, float(p * n), float(n), chunks, kern - pre, pre,
                                    e["score_s_per_pair"] * pairs)
    end, last = pipeline_end_s(stages, e["eager_op_s"])
    return {"duration_s": end, "host_s": last, "tail_s": end - last, "kernels_s": sum(g for _, g in stages)}


def fit_check(root: Path | str | None = None, table: str = "real-serve-h100-ep1") -> list[dict]:
    """Per fit model and composition (rounds 1-3, medians): measured duration_s, host_s and tail (duration - host)
    against the pipeline's at the model's probe, with the candidate's settings."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    rows = [r for r in seh.fit_rows(seh.read_fit(root)) if r.get("ops")]
    costs = op_cost(root)
    out = []
    with setting(True, costs):
        for model in sorted({r["model"] for r in rows}):
            mine = [r for r in rows if r["model"] == model]
            c = costs_for(model, mine[0], seh.probe_s(mine[0]), table, root)
            for comp in sorted({r["composition"] for r in mine}):
                rs = [r for r in mine if r["composition"] == comp]
                med = {k: float(np.median([float(r[k]) for r in rs])) for k in ("duration_s", "host_s")}
                pred = step_prediction(c, rs[0])
                out.append({"model": model, "composition": comp, "ops": int(float(rs[0]["ops"])),
                            "measured_duration_s": med["duration_s"], "measured_host_s": med["host_s"],
                            "measured_tail_s": med["duration_s"] - med["host_s"], **{f"pipeline_{k}": v
                                                                                      for k, v in pred.items()}})
    return out


def _print_fit(root: Path) -> None:
    costs = op_cost(root)
    print("eager_op_s (s an operator at each table's reference host): "
          + ", ".join(f"{t} {v * 1e6:.2f} us" for t, v in costs.items()))
    print(f"{'model':20s} {'composition':12s} {'ops':>5s} {'dur ms':>7s} {'pred':>7s} {'host':>6s} {'pred':>6s}"
          f" {'tail':>6s} {'pred':>6s} {'kern':>6s}")
    rows = fit_check(root)
    for r in rows:
        print(f"{r['model']:20s} {r['composition']:12s} {r['ops']:5d} {r['measured_duration_s'] * 1e3:7.2f} "
              f"{r['pipeline_duration_s'] * 1e3:7.2f} {r['measured_host_s'] * 1e3:6.2f} {r['pipeline_host_s'] * 1e3:6.2f} "
              f"{r['measured_tail_s'] * 1e3:6.2f} {r['pipeline_tail_s'] * 1e3:6.2f} {r['pipeline_kernels_s'] * 1e3:6.2f}")
    for model in sorted({r["model"] for r in rows}):
        mine = [r for r in rows if r["model"] == model]
        d = [r["pipeline_duration_s"] / r["measured_duration_s"] - 1 for r in mine]
        t = [r["pipeline_tail_s"] - r["measured_tail_s"] for r in mine]
        print(f"  {model}: duration error median {np.median(d) * 100:+.1f}% ({min(d) * 100:+.1f}..{max(d) * 100:+.1f}), "
              f"tail error median {np.median(t) * 1e3:+.2f} ms ({min(t) * 1e3:+.2f}..{max(t) * 1e3:+.2f})")


# ---- the judgement --------------------------------------------------------------------------------------

FRESH_MODELS = ("bench-small", "mixtral-mla-slice")   # set E (real/serve/plans.py S24P_PLANS)


def fresh_rows(root: Path | str | None = None) -> list[dict]:
    """Set E's runs (serve_eager_host.set_rows)."""
    root = rec.records_root() if root is None else root
    return seh.set_rows(NAME, FRESH_MODELS, root)


def poisson(rows: list[dict]) -> list[dict]:
    return [r for r in rows if "-poisson-" in r["run_id"]]


def fresh_criteria(off: list[dict], on: list[dict]) -> dict:
    """E1: more checks met and a lower median |error|; E2: no fewer checks on each model; E3: the Poisson runs' TTFT
    P50 no fewer checks met. Nothing is met with fewer than 6 runs."""
    a, b = seh.checks(off), seh.checks(on)
    by_model = {m: (seh.checks([r for r in off if r["model"] == m])[0], seh.checks([r for r in on if r["model"] == m])[0])
                for m in FRESH_MODELS}
    pa, pb = seh.checks(poisson(off), ("ttft_p50_s",)), seh.checks(poisson(on), ("ttft_p50_s",))
    complete = len(off) >= 6
    crit = {"E1_more_checks_lower_median": complete and b[0] > a[0] and b[1] < a[1],
            "E2_each_model": complete and all(y >= x for x, y in by_model.values()),
            "E3_poisson_ttft_p50": complete and pb[0] >= pa[0]}
    return {"all": (a, b), "by_model": by_model, "poisson_ttft_p50": (pa, pb), "criteria": crit,
            "met": all(crit.values())}


def guard_criteria(off: list[dict], on: list[dict]) -> dict:
    """G1: on each of sets A, B, C and D no fewer checks met; over A-D pooled a median |error| no higher."""
    return seh.guard_criteria(off, on, {**seh.GUARD_SETS, "D": (seh.NAME,)})


def candidate(root: Path | str | None = None, committed_sets: bool = True) -> dict:
    """Both settings on set E, on sets A-D and (committed_sets) the committed serve_load sets; the verdict (G3's
    benchmark is timed apart: benchmarks/serve_requests.py)."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    costs = op_cost(root)
    names = ssh.REGISTRATIONS + ssh.EXTRA + (ssh.FRESH.name,)
    rows = {}
    for on in (False, True):
        with setting(on, costs):
            rows[on] = {"E": fresh_rows(root),
                        "guard": ssh.replays(on, root, names) + [{**r, "registration": seh.NAME}
                                                                 for r in seh.fresh_rows(root)],
                        "committed": ssc.all_rows(root) if committed_sets else None}
    e = fresh_criteria(rows[False]["E"], rows[True]["E"])
    g = guard_criteria(rows[False]["guard"], rows[True]["guard"])
    out = {"op_cost": costs, "E": e, "guard": g, "rows": rows}
    if committed_sets:
        s_off, s_on = ssc.summary(rows[False]["committed"]), ssc.summary(rows[True]["committed"])
        out.update(summary_off=s_off, summary_on=s_on, committed=ssh.committed_criterion(s_off, s_on))
    out["adopt"] = bool(e["met"] and g["met"] and committed_sets and all(out["committed"].values()))
    return out


def _by_figure(off: list[dict], on: list[dict]) -> str:
    return ", ".join(f"{k.removesuffix('_s')} {seh.checks(off, (k,))[0]} -> {seh.checks(on, (k,))[0]}" for k in FIGURES)


@entry.script
def main(argv: list[str] | None = None) -> int:
    args = cli.parse(argv, "calibration.serve_pipeline", __doc__, ("fit",),
                     "fit: the fitting records only (default: the judgement)", default=None, dest="part", json_help=None)
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if args.part == "fit":
        _print_fit(root)
        return 0
    out = candidate(root, committed_sets=not args.no_committed)
    print("eager_op_s: " + ", ".join(f"{t} {v * 1e6:.2f} us" for t, v in out["op_cost"].items()))
    e = out["E"]
    (a, b), (pa, pb) = e["all"], e["poisson_ttft_p50"]
    print(f"set E: checks {a[0]} -> {b[0]} of {5 * len(out['rows'][False]['E'])}, median |err| {a[1]:.2%} -> {b[1]:.2%};"
          f" by model {e['by_model']}; Poisson TTFT P50 met {pa[0]} -> {pb[0]}; "
          + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in e["criteria"].items()))
    print("  set E by figure: " + _by_figure(out["rows"][False]["E"], out["rows"][True]["E"]))
    g = out["guard"]
    for label, (x, y) in g["sets"].items():
        print(f"set {label}: checks {x[0]} -> {y[0]}, median |err| {x[1]:.2%} -> {y[1]:.2%}")
    (x, y) = g["pooled"]
    print(f"A-D pooled: checks {x[0]} -> {y[0]}, median |err| {x[1]:.2%} -> {y[1]:.2%}")
    print("  A-D by figure: " + _by_figure(out["rows"][False]["guard"], out["rows"][True]["guard"]))
    print("guards: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in g["criteria"].items()))
    seh.print_committed(out)
    for label, on in (("off", False), ("on", True)):
        for r in out["rows"][on]["E"]:
            print(seh._rows_line(f"E {label}", r))
    return 0


if __name__ == "__main__":
    sys.exit(main())


def committed_step_s(costs: IterationCosts, row: dict) -> float:
    """The committed twin's seconds of one fitting step (no first-met stall; the same shapes as step_prediction)."""
    p, n, d = int(row["prompts"]), int(row["tokens"]), int(row["decode_rows"])
    ctx = 33.0 if d else 0.0
    t, _ = costs._iteration_engine_s(d, ctx, float(p * n), float(n), ctx, int(row["chunks"]), float(p * n * n))
    return t - costs.engine["loop_s"]

"""The host's measured speed as an input of the serving twin (issue 15, session s13srv; the rule:
docs/notes/s13srv_rule.md, committed before any held-out figure under it).

real/serve's iterations are host-bound where eager, and hosts of one kind run them at different
speeds. The s13srv campaign (real/campaigns/s13srv.sh) brackets every load run with the host probe
(real/serve/hostspeed.py: `launch_s`, host seconds per small kernel launch) and runs each fit
configuration twice, as the host comes and beside a busy co-runner on the engine thread's CPU (a
controlled slower host). Its records lie in calibration/measurements/<folder>/s13srv/ (out of the
engine fits and `twin validate`: a sub-folder).

What calibration/serve_engine_fit.py does with those records (it writes the tables):
- `run_scales`: per fit run, the factor s on the committed table's host terms (SCALED_TERMS) that
  fits its busy iterations best (least squares of measured - the other terms on the host terms);
- `fit_exponent`: log s = beta log p + c_table over every table's fit runs (one beta, fitted on the
  tables whose runs span MIN_SPAN in p; an intercept per table), the table's reference probe
  p_ref = exp(-c / beta), where its committed host terms hold;
- `references`: what twin/data/serve_engines.toml carries per pooled table (host_probe_launch_s,
  host_probe_exponent; zeros unless HOST_SPEED);
and what this module does:
- `compare`: the held-out (and fit) runs of the s13srv folders replayed without the host input (A)
  and with it (B), with the candidate references, beside the committed held-out checks (which have
  no probe and so cannot move), and the adoption rule's three parts.

`python -m calibration.serve_host_speed` prints the fit and the comparison.
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

import numpy as np

from calibration import entry
from calibration import records as rec
from calibration.records_io import csv_exists, read_csv, text_records
from calibration.serve_engine_fit import (FOLDERS, HOST_SPEED, all_scales, base_table, candidate_references,
                                          fit_exponent, iterations_file, load_runs, probe_folders, prompts_run_before,
                                          references, run_scales)
from calibration.serve_load_validation import (FIGURES, TARGETS, gpu_key, predict_run, record_host_launch_s,
                                               session_engine_name, sessions, sizes_run_before, timed_run_ids)
from twin.core.specs import serve_engines
from twin.serving import timing

__all__ = ["all_scales", "base_table", "before_t", "candidate_references", "compare", "fit_exponent", "probe_folders",
           "references", "replay", "run_scales", "tables_with"]


def before_t(stack: contextlib.ExitStack | None = None) -> contextlib.ExitStack:
    """`stack` (a new one if None) with candidate T's three switches (timing.T_SWITCHES) off, restored on its exit: the
    one-GPU tables priced as committed before s26start round 2's adoption (docs/notes/s26start2_rule.md). The judgements
    of earlier sets replay what was committed at their time under it; a later patch on the stack overrides it."""
    stack = stack if stack is not None else contextlib.ExitStack()
    for name in timing.T_SWITCHES:
        stack.enter_context(_patched(timing, name, False))
    return stack


@contextlib.contextmanager
def _patched(module, name: str, value):
    old = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, old)


@contextlib.contextmanager
def tables_with(refs: dict[str, dict]):
    """The loaded engine tables with `refs` set (restored after): the twin replays under them."""
    tables = serve_engines()
    saved = {t: {k: tables[t].get(k) for k in v} for t, v in refs.items() if t in tables}
    try:
        for t, v in refs.items():
            if t in tables:
                tables[t].update(v)
        yield tables
    finally:
        for t, v in saved.items():
            for k, old in v.items():
                if old is None:
                    tables[t].pop(k, None)
                else:
                    tables[t][k] = old


def replay(folder: Path, host_input: bool, splits=("holdout",), committed: bool = False,
           run_ids: tuple[str, ...] | None = None) -> list[dict]:
    """The runs of a records folder in `splits`, replayed with the record's host probe (host_input)
    or without it (the fit host's default): an s13srv folder's with its GPU and EP's unpinned table,
    a committed folder's (`committed`) as `twin validate` does (its session's table where kept).
    `run_ids`: only those runs (a slice a test recomputes; the others' sizes still count as met before)."""
    runs = load_runs(folder)
    reqs = text_records(read_csv(Path(folder) / "serve_requests.csv", dtype=str).fillna(""))
    its = text_records(read_csv(iterations_file(folder), dtype=str).fillna(""))
    before = sizes_run_before(runs, its)
    timed = timed_run_ids(its)   # the runs recorded with --timing (ADOPT_TIMING_INSTRUMENT)
    sess = sessions(runs)

    def engine_of(run: dict) -> tuple[str, float]:
        """The run's table and the host input it is replayed with."""
        name = session_engine_name(run, sess[run["run_id"]]) if committed else base_table(run)
        return name, record_host_launch_s(run) if host_input else 0.0

    prompts_before = prompts_run_before(Path(folder), engine_of)   # {} unless a table warms its prompt path
    out = []
    with timing.sharing_grids():   # (s32ci) a folder's runs are a few scenarios: each grid point once
        for run in runs:
            if run.get("split") in splits and (run_ids is None or run["run_id"] in run_ids):
                out.append(_replayed_run(run, host_input, reqs, before, timed, engine_of(run)[0], prompts_before))
    return out


def _replayed_run(run: dict, host_input: bool, reqs: list[dict], before: dict, timed: set, engine: str,
                  prompts_before: dict) -> dict:
    """replay's row of one run, replayed on table `engine`."""
    r = run if host_input else {k: v for k, v in run.items() if not k.startswith("probe_")}
    r = {**r, "engine_timing": run["run_id"] in timed}
    pred = predict_run(r, [q for q in reqs if q["run_id"] == run["run_id"]], True, before[run["run_id"]], engine,
                       prompts_before.get(run["run_id"], 0))
    row = {"run_id": run["run_id"], "split": run["split"], "gpu": gpu_key(run["gpu_name"]), "table": engine,
           "p": record_host_launch_s(run), "dosed": bool(run.get("co_runner_nice", ""))}
    for k in FIGURES:
        meas = float(run[k]) if run.get(k) not in (None, "") else math.nan
        err = pred[k] / meas - 1.0 if meas and math.isfinite(meas) and math.isfinite(pred[k]) else math.nan
        row[f"{k}_measured"], row[f"{k}_predicted"], row[f"{k}_rel_error"] = meas, pred[k], err
        row[f"{k}_within_target"] = bool(math.isfinite(err) and abs(err) <= TARGETS[k])
    return row


def checks(rows: list[dict]) -> tuple[int, int, list[float]]:
    """(checks met, checks, |errors|) over rows' figures."""
    errs = [abs(r[f"{k}_rel_error"]) for r in rows for k in FIGURES if math.isfinite(r[f"{k}_rel_error"])]
    met = sum(r[f"{k}_within_target"] for r in rows for k in FIGURES)
    return met, len(rows) * len(FIGURES), errs


def committed_held_out(root: str | Path | None = None) -> list[dict]:
    """The committed held-out runs' rows as `twin validate` gives them (no probe: no host input)."""
    root = rec.records_root() if root is None else root
    return [r for name in FOLDERS if csv_exists(Path(root) / name / "serve_load.csv")
            for r in replay(Path(root) / name, True, ("holdout",), committed=True)]


def compare(root: str | Path | None = None, committed: list[dict] | None = None) -> dict:
    """The rule's comparison: the s13srv held-out (and fit) runs replayed without (A) and with (B)
    the host input under the candidate references, the committed held-out rows beside both."""
    root = rec.records_root() if root is None else root
    refs = candidate_references(root)
    folders = probe_folders(root)
    committed = committed_held_out(root) if committed is None else committed
    out = {"references": refs, "folders": {}}
    with tables_with(refs):
        for name, d in folders.items():
            out["folders"][name] = {v: {s: replay(d, v == "B", (s,)) for s in ("holdout", "fit")} for v in ("A", "B")}
    for v in ("A", "B"):
        held = committed + [r for f in out["folders"].values() for r in f[v]["holdout"]]
        fit = [r for f in out["folders"].values() for r in f[v]["fit"]]
        met, n, errs = checks(held)
        fmet, fn, _ = checks(fit)
        out[v] = {"held_met": met, "held_checks": n, "held_median_abs_error": float(np.median(errs)) if errs else math.nan,
                  "fit_met": fmet, "fit_checks": fn}
    a, b = out["A"], out["B"]
    out["adopt"] = bool(refs) and b["held_met"] > a["held_met"] and b["held_median_abs_error"] <= a["held_median_abs_error"] \
        and b["fit_met"] >= a["fit_met"]
    return out


@entry.script
def main(argv: list[str] | None = None) -> None:
    entry.parser("calibration.serve_host_speed", __doc__).parse_args(argv)
    scales = all_scales(rec.records_root())
    if scales.empty:
        print("no s13srv records (calibration/measurements/<folder>/s13srv/)")
        return
    print(scales.to_string(index=False))
    fit = fit_exponent(scales)
    print(f"beta {fit.get('beta', float('nan')):.3f} (tables {fit.get('tables')}), p_ref (us) "
          + ", ".join(f"{t} {p * 1e6:.2f}" for t, p in fit.get("p_ref", {}).items()))
    res = compare(rec.records_root())
    for name, f in res["folders"].items():
        for v in ("A", "B"):
            for split in ("holdout", "fit"):
                for r in f[v][split]:
                    print(f"{name:7} {v} {split:7} {r['run_id']:32} p {r['p'] * 1e6:6.2f} us  "
                          + "  ".join(f"{k.removesuffix('_s')} {r[k + '_rel_error']:+.1%}" for k in FIGURES))
    for v in ("A", "B"):
        x = res[v]
        print(f"{v}: held out {x['held_met']}/{x['held_checks']} met, median |error| {x['held_median_abs_error']:.2%}; "
              f"s13srv fit runs {x['fit_met']}/{x['fit_checks']}")
    print(f"adopt (docs/notes/s13srv_rule.md): {res['adopt']}; HOST_SPEED = {HOST_SPEED}")


if __name__ == "__main__":
    main()

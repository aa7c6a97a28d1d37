"""The s25host2 rule's figures (docs/notes/s25host2_rule.md): the step-input twin with each step's probe taken right
before it (B, the committed method) against the same twin with each step's and each fitting repetition's probe the
geometric mean of the probes before and after it (C, calibration.step_bracket.ADOPT_BRACKET_PROBE), on the fresh run
real/campaigns/s25host2.sh (records calibration/measurements/<gpu>/s25host2/), read on the grid committed before it.

Judged (K1-K3, bracket_criteria); reported beside them, not judged (reported_rows): the probe after alone (A), a
two-state classifier (S: each probe replaced by its state's median, the states split from the run's own probes), and
a planner's start-of-run figure (P: no per-step probe; every record at the ratio x the median probe of the fitting
repetitions, what a run's calibration at its start gives), and per record the scatter of ln(host / probe) over its
probed steps for the probe before, after and the bracket.
Run: python -m calibration.bracket_judge [s25host2_b]; `--json` writes both runs' B / C rows, summaries and criteria to
calibration/s25host2_judgement.json (what tests/calibration/test_s25host2_records.py reads back).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry, prereg, step_bracket, step_host
from calibration import records as rec
from calibration.records_io import csv_exists, read_csv, write_json_text
from calibration.validate import MEDIAN_TARGET, P90_TARGET

REGISTRATION = "s25host2"
# later fresh runs of the same archive (s25host2_b, ...): reported, not judged
LATER_RUNS = tuple(sorted(k for k in prereg.REGISTRATIONS if k.startswith(REGISTRATION + "_")))
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s25host2_judgement.json"
K1_MEDIAN_GAIN = 0.01     # pooled: C's median |error| at least 1.0 pt under B's
GROUP_MEDIAN_SLACK = 0.01  # K2: no bench group's median worse than B's + 1.0 pt
GROUP_P90_SLACK = 0.02     # and its P90 worse than B's + 2.0 pt
MIN_RECORDS = 10           # a run with fewer records is not judged
STATE_MIN_SHARE = 0.1      # S: each state holds at least this share of the run's probes
STATE_MIN_SEPARATION = 1.2  # S: the slow state's median at least this many times the fast one's, else one state


def twin_rows(reg_name: str = REGISTRATION, root: Path | str | None = None, bracket: bool = False,
              grid_path: Path | None = None) -> pd.DataFrame:
    """prereg.step_rows of the registration (on its committed grid, or `grid_path`) with ADOPT_BRACKET_PROBE set to
    `bracket` for the call."""
    root = rec.records_root() if root is None else root
    reg = prereg.REGISTRATIONS[reg_name]
    saved = step_bracket.ADOPT_BRACKET_PROBE
    step_bracket.ADOPT_BRACKET_PROBE = bracket
    try:
        rows, _ = prereg.step_rows(root, reg, grid_path or prereg.GRID_FILES[reg_name][0])
    finally:
        step_bracket.ADOPT_BRACKET_PROBE = saved
    return rows


def group_summary(errors: pd.DataFrame, col: str) -> dict:
    """{'<gpu> <bench>' and 'all': (n, median |e|, P90 |e|, meets issue 13's target)} of column `col`."""
    out = {}
    e = errors.dropna(subset=[col])
    for label, sub in [*(((f"{g} {b}"), s) for (g, b), s in e.groupby(["gpu", "bench"])), ("all", e)]:
        a = sub[col].abs().to_numpy()
        if a.size:
            med, p90 = float(np.median(a)), float(np.percentile(a, 90))
            out[label] = (int(a.size), med, p90, bool(med <= MEDIAN_TARGET and p90 <= P90_TARGET))
    return out


def bracket_criteria(b: dict, c: dict) -> dict:
    """K1 pooled: C median <= B median - K1_MEDIAN_GAIN and C P90 <= B P90. K2 every bench group: C median <= B's +
    GROUP_MEDIAN_SLACK and P90 <= B's + GROUP_P90_SLACK. K3: every group meeting issue 13's target under B meets it under
    C. Not judged under MIN_RECORDS records. `adopt`: K1-K3."""
    if "all" not in b or "all" not in c or b["all"][0] < MIN_RECORDS:
        return {"judged": False, "adopt": False}
    groups = sorted(k for k in b if k != "all")
    k1 = c["all"][1] <= b["all"][1] - K1_MEDIAN_GAIN and c["all"][2] <= b["all"][2]
    k2 = all(g in c and c[g][1] <= b[g][1] + GROUP_MEDIAN_SLACK and c[g][2] <= b[g][2] + GROUP_P90_SLACK for g in groups)
    k3 = all(g in c and c[g][3] for g in groups if b[g][3])
    return {"judged": True, "K1": bool(k1), "K2": bool(k2), "K3": bool(k3), "adopt": bool(k1 and k2 and k3)}


def two_states(probes: np.ndarray) -> tuple[float, float, float] | None:
    """(cut, fast median, slow median) of the split of ln(probes) into two groups with the least within-group squared
    deviation, each holding >= STATE_MIN_SHARE of them; None where the slow median is under STATE_MIN_SEPARATION x the
    fast one (one state)."""
    lx = np.sort(np.log(probes[probes > 0]))
    n, lo = lx.size, max(1, int(np.ceil(STATE_MIN_SHARE * lx.size)))
    best = None
    for i in range(lo, n - lo + 1):
        a, b = lx[:i], lx[i:]
        sse = ((a - a.mean()) ** 2).sum() + ((b - b.mean()) ** 2).sum()
        if best is None or sse < best[0]:
            best = (sse, i)
    if best is None:
        return None
    i = best[1]
    fast, slow = float(np.exp(np.median(lx[:i]))), float(np.exp(np.median(lx[i:])))
    return (float((lx[i - 1] + lx[i]) / 2), fast, slow) if slow >= STATE_MIN_SEPARATION * fast else None


def state_probe(values: pd.Series, states) -> pd.Series:
    """Each probe replaced by its state's median (unchanged where the run has one state)."""
    if states is None:
        return values
    cut, fast, slow = states
    v = values.astype(float)
    return v.where(~(v > 0), np.where(np.log(v.where(v > 0, 1.0)) > cut, slow, fast))


def _predict(grid: pd.DataFrame, gpu: str, model: pd.DataFrame, hd: pd.DataFrame, steps: pd.DataFrame, col: str,
             reg) -> list[float]:
    """Each record's step-input figure with `col` read as every step's and repetition's probe."""
    s = steps.assign(host_probe_launch_s=steps[col])
    ratio = step_host.fit_step_ratio(hd, s, gpu)
    return [prereg._grid_record_prediction(grid, gpu, s, r, ratio) for _, r in model.iterrows()]


def reported_rows(reg_name: str = REGISTRATION, root: Path | str | None = None,
                  grid_path: Path | None = None) -> pd.DataFrame:
    """Per record: the measured median, the errors of A (after alone), S (two-state), P (planner, start of run), and the
    scatter (std of ln host / probe over its probed steps) of the probe before, after and the bracket."""
    root = rec.records_root() if root is None else root
    reg = prereg.REGISTRATIONS[reg_name]
    grid = read_csv(grid_path or prereg.GRID_FILES[reg_name][0])
    out = []
    for gpu in prereg.GPUS:
        folder = Path(root) / gpu / reg.records_subdir
        if not all(csv_exists(folder / f) for f in ("model.csv", "host_dispatch.csv", "serve_steps.csv", "step_after.csv")):
            continue
        model, hd, steps, after = (read_csv(folder / f) for f in ("model.csv", "host_dispatch.csv", "serve_steps.csv",
                                                                  "step_after.csv"))
        model = model[model["bench"].isin(reg.benches)].reset_index(drop=True)
        s = step_bracket.bracketed_steps(steps, after)
        states = two_states(np.concatenate([s["host_probe_before_s"].dropna().to_numpy(float),
                                            s["host_probe_after_s"].dropna().to_numpy(float)]))
        s["after_only"] = s["host_probe_after_s"].where(s["host_probe_before_s"] > 0)
        s["state"] = step_bracket.bracket_probe(state_probe(s["host_probe_before_s"], states),
                                                state_probe(s["host_probe_after_s"], states))
        fit = s[(s["bench"] == "host_dispatch") & (s["block"] == "probed")]["host_probe_before_s"].astype(float)
        s["start"] = s["host_probe_before_s"].where(s["bench"] == "host_dispatch",
                                                   float(fit.median()) if len(fit) else np.nan)
        s["start"] = s["start"].where(s["host_probe_before_s"] > 0)
        preds = {name: _predict(grid, gpu, model, hd, s, name, reg) for name in ("after_only", "state", "start")}
        for i, r in model.iterrows():
            p = step_host.record_steps(s, r)
            row = {"gpu": gpu, "bench": r["bench"], "model": r["model"], "batch": int(r["batch"]),
                   "prompt_len": int(r["prompt_len"]), "measured_s": float(r["time_s"])}
            for name, label in (("after_only", "A"), ("state", "S"), ("start", "P")):
                row[f"{label}_rel_error"] = preds[name][i] / float(r["time_s"]) - 1.0
            for col, label in (("host_probe_before_s", "before"), ("host_probe_after_s", "after"),
                               ("host_probe_launch_s", "bracket")):
                row[f"scatter_{label}"] = float(np.std(np.log(p["host_s"].astype(float) / p[col].astype(float))))
            row["slow_share"] = np.nan if states is None else float((np.log(p["host_probe_before_s"].astype(float))
                                                                     > states[0]).mean())
            out.append(row)
    return pd.DataFrame(out)


def judged_errors(reg_name: str = REGISTRATION, root: Path | str | None = None,
                  grid_path: Path | None = None) -> pd.DataFrame:
    """Per record: B's and C's figures and errors against the probed steps' median (model.csv time_s)."""
    root = rec.records_root() if root is None else root
    b, c = twin_rows(reg_name, root, False, grid_path), twin_rows(reg_name, root, True, grid_path)
    if b.empty:
        return b
    key = ["gpu", "bench", "model", "batch", "prompt_len", "gen_len"]
    return b[key + ["time_s", "step_predicted_s", "step_rel_error"]].rename(
        columns={"step_predicted_s": "B_predicted_s", "step_rel_error": "B_rel_error"}).merge(
        c[key + ["step_predicted_s", "step_rel_error"]].rename(
            columns={"step_predicted_s": "C_predicted_s", "step_rel_error": "C_rel_error"}), on=key)


def judgement(reg_names: tuple = (REGISTRATION, *LATER_RUNS), root: Path | str | None = None) -> dict:
    """{registration: {judged (the first fresh run only), rows (judged_errors' records), B, C (group_summary), criteria
    (bracket_criteria)}} for every registration with records."""
    root = rec.records_root() if root is None else root
    out = {}
    for name in reg_names:
        errs = judged_errors(name, root)
        if errs.empty:
            continue
        b, c = group_summary(errs, "B_rel_error"), group_summary(errs, "C_rel_error")
        out[name] = {"judged": name == REGISTRATION, "rows": errs.to_dict("records"), "B": b, "C": c,
                     "criteria": bracket_criteria(b, c)}
    return out


def write_judgement(path: Path = JUDGEMENT_FILE) -> dict:
    """judgement() as JSON at `path` (floats as Python writes them: they read back exactly)."""
    j = judgement()
    write_json_text(path, json.dumps({"written_by": "python -m calibration.bracket_judge --json", **j}, indent=1,
                                     sort_keys=True) + "\n")
    return j


def _line(label: str, s: dict) -> str:
    return f"{label}: " + " | ".join(f"{g}: n {n}, {m:.1%} / {p:.1%}{' met' if ok else ''}"
                                     for g, (n, m, p, ok) in s.items())


@entry.script
def main(argv: list[str] | None = None) -> int:
    """The judged run (s25host2) by default; a later run's registration (s25host2_b) as the one argument: reported."""
    ap = entry.parser("calibration.bracket_judge", __doc__)
    runs = (REGISTRATION, *LATER_RUNS)
    ap.add_argument("registration", nargs="?", choices=runs,
                    help=f"the run to judge (default {REGISTRATION}) or a later one to report")
    ap.add_argument("--json", action="store_true", help=f"write both runs' rows, summaries and criteria to {JUDGEMENT_FILE.name}")
    args = ap.parse_args(argv)
    if args.json and args.registration:
        ap.error(f"--json writes every run's judgement and takes no run; expected one of {', '.join(runs)} or --json")
    if args.json:
        j = write_judgement()
        print(f"wrote {JUDGEMENT_FILE.name}: " + ", ".join(f"{k} {len(v['rows'])} records" for k, v in j.items()))
        return 0
    name = args.registration or REGISTRATION
    errs = judged_errors(name)
    if errs.empty:
        print(f"{name}: no records committed; nothing to judge")
        return 0
    b, c = group_summary(errs, "B_rel_error"), group_summary(errs, "C_rel_error")
    print(errs.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
    print(_line("B (probe before, committed)", b))
    print(_line("C (bracket before / after)", c))
    print(f"rule s25host2 ({'judged run' if name == REGISTRATION else 'reported, not judged'}):", bracket_criteria(b, c))
    rep = reported_rows(name)
    if not rep.empty:
        print(rep.to_string(index=False, float_format=lambda x: f"{x:.4g}"))
        for col, label in (("A_rel_error", "A (after alone)"), ("S_rel_error", "S (two states)"),
                           ("P_rel_error", "P (planner, start of run)")):
            print(_line(label, group_summary(rep, col)))
        print("median per-step scatter of ln(host / probe): " + ", ".join(
            f"{k} {rep[f'scatter_{k}'].median():.3f}" for k in ("before", "after", "bracket")))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Session s29serve (issue 15; docs/notes/s29serve_rule.md, committed before its judging records existed): the candidate
`twin.serving.engine.ADOPT_IDLE_WAKE`. An iteration that follows an idle of IDLE_WAKE_AFTER_S or more on its instance
(a run's first iteration included: the engine idled before it, between runs) is post-idle; under the switch (a) a flat
size the process met only in its warm pass between warm_shapes and the token budget pays the table's first-met terms
when first met on a post-idle iteration (counted met without a charge when first met mid-stream), and (b) a post-idle
iteration carrying prompt tokens pays the one-GPU table's idle_prompt_s.

idle_prompt_s is fitted here on fitting records alone (`fit`): per card, the first-token prompt steps of the fitting
runs that follow an idle of IDLE_WAKE_AFTER_S or more (each run's first iteration counted), measured against one seeded
replay of the twin in force where the replay's step has the same prompt tokens: the median of measured - twin.
Fitting records: H200, <h200>/serve_* fit runs (the one-GPU table's own) and <h200>/s26start2/fit/<model> (the H200
fitting load runs of s26start round 2); H100, <h100>/serve_* fit runs (the table's own). Judged on set O (s29serve,
real/campaigns/s29serve.sh) under guards on every committed held-out set.

    python -m calibration.serve_idle_wake fit [--json calibration/s29serve_fit.json]
    python -m calibration.serve_idle_wake guards [--json FILE]      # sets A-M and the committed sets (no set O)
    python -m calibration.serve_idle_wake [--json calibration/s29serve_judgement.json]   # set O, guards, verdict
"""

from __future__ import annotations

import dataclasses
import math
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np

from calibration import entry, judged_under, prereg
from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_graph_ops as sgo
from calibration import serve_judge_cli as sjc
from calibration import serve_warm_budget as swb
from calibration.records_io import csv_exists, json_exists, read_json
from calibration.serve_engine_fit import base_table
from calibration.serve_load_validation import (scenario_for, session_engine_name, sessions, sizes_run_before,
                                               timed_run_ids)
from calibration.serve_ttft_parts import _read
from twin.core.specs import serve_engines
from twin.serving import engine
from twin.serving.simulate import simulate
from twin.serving.workload import from_records

NAME = "s29serve"
FRESH_MODELS = ("bench-small", "v2-lite-slice", "v3-slice-1l", "mixtral-mla-slice")   # set O (S29O_PLANS)
FRESH_RUNS = 3 * len(FRESH_MODELS)
JUDGED = "I"
FIT_FOLDERS = {"h200": ("h200", "h200/s26start2/fit/mixtral-mla-slice", "h200/s26start2/fit/qwen2moe-mla-slice",
                        "h200/s26start2/fit/qwen3moe-mla-slice", "h200/s26start2/fit/v3-slice-2l"),
               "h100": ("h100",)}
TABLES = {"h200": "real-serve-h200-ep1", "h100": "real-serve-h100-ep1"}
GAP_GRID_S = (0.005, 0.02, 0.05, 0.1, 0.2)   # the idles the fit reports the excess after (IDLE_WAKE_AFTER_S: one)
TTFT = ("ttft_p50_s", "ttft_p99_s")


def step_rows(folder: Path, split: str | None = "fit", seed: int = 0) -> list[dict]:
    """Per run of `split` (None: every run) in a records folder: each request's first-token step (rank 0) measured
    (its duration, the idle before it: the previous iteration's end to its start, inf for the run's first) beside one
    seeded replay of the twin in force (the step that emits the request's first token; Poisson runs: request for
    request), and the run's first iteration measured beside the replay's first (`first`: True)."""
    runs, reqs, its = (_read(folder / f"serve_{k}.csv") for k in ("load", "requests", "iterations"))
    before, timed, sess = sizes_run_before(runs, its), timed_run_ids(its), sessions(runs)
    out = []
    for run in runs:
        rid = run["run_id"]
        if split is not None and run.get("split") != split:
            continue
        run = {**run, "engine_timing": rid in timed}
        rq = sorted((r for r in reqs if r["run_id"] == rid and r["rank"] == "0"), key=lambda r: float(r["arrival_s"]))
        ri = sorted((r for r in its if r["run_id"] == rid and r["rank"] == "0"), key=lambda r: int(r["iteration"]))
        if not ri or not rq:
            continue
        st = np.array([float(r["start_s"]) for r in ri])
        du = np.array([float(r["duration_s"]) for r in ri])
        gap = np.r_[np.inf, st[1:] - (st[:-1] + du[:-1])]
        at = {int(r["iteration"]): k for k, r in enumerate(ri)}
        table = session_engine_name(run, sess[rid])
        table = table if table in serve_engines() else base_table(run)
        sc = scenario_for(run, engine=table)
        arrival = None if run["arrival"] == "closed" else [float(r["arrival_s"]) for r in rq]
        one = dataclasses.replace(sc, traffic=dataclasses.replace(sc.traffic, seed=seed, trace_iterations=10 ** 7))
        res = simulate(one, requests=from_records(arrival, [int(r["input_len"]) for r in rq],
                                                  [int(r["output_len"]) for r in rq], one.traffic),
                       run_batch_sizes=before[rid])
        tr = np.array([(t[2], t[3], t[4], t[5]) for t in res.trace])   # start, duration, decode rows, prompt tokens
        base = {"folder": folder.name if folder.parent.name != "fit" else f"fit/{folder.name}", "run_id": rid,
                "arrival": run["arrival"], "table": table}
        out.append({**base, "first": True, "gap_s": math.inf, "measured_s": float(du[0]), "twin_s": float(tr[0, 1]),
                    "prompt_tokens": int(ri[0]["prefill_tokens"]), "twin_prompt_tokens": int(tr[0, 3]),
                    "decode_rows": int(ri[0]["decode_seqs"]), "twin_decode_rows": int(tr[0, 2])})
        if run["arrival"] == "closed":
            continue
        per = res.per_request()
        ends = tr[:, 0] + tr[:, 1]
        k = np.clip(np.searchsorted(ends, per["first_token_s"] - 1e-12), 0, len(ends) - 1)
        for j, r in enumerate(rq):
            m = at.get(int(r["first_token_iteration"]))
            if m is None or m == 0:
                continue
            out.append({**base, "first": False, "gap_s": float(gap[m]), "measured_s": float(du[m]),
                        "twin_s": float(tr[k[j], 1]), "prompt_tokens": int(ri[m]["prefill_tokens"]),
                        "twin_prompt_tokens": int(tr[k[j], 3]), "decode_rows": int(ri[m]["decode_seqs"]),
                        "twin_decode_rows": int(tr[k[j], 2])})
    return out


def after_idle(rows: list[dict], gap_s: float) -> list[dict]:
    """The rows the term is fitted on: steps after an idle of gap_s or more (a run's first iteration: always), where the
    replay's step has the measured step's prompt tokens (and, for a first iteration, its decode rows)."""
    return [r for r in rows if r["gap_s"] >= gap_s and r["prompt_tokens"] > 0
            and r["prompt_tokens"] == r["twin_prompt_tokens"]
            and (not r["first"] or r["decode_rows"] == r["twin_decode_rows"])]


def _excess(rows: list[dict]) -> dict:
    d = np.array([r["measured_s"] - r["twin_s"] for r in rows])
    q = np.array([r["measured_s"] / r["twin_s"] for r in rows])
    return {"steps": len(rows), "median_excess_s": float(np.median(d)) if len(d) else 0.0,
            "median_ratio": float(np.median(q)) if len(q) else math.nan}


def fit(root: Path | str | None = None) -> dict:
    """Per card: idle_prompt_s (the median excess of the fitting runs' steps after an idle of IDLE_WAKE_AFTER_S or
    more, first iterations counted) and, reported, the same at every GAP_GRID_S and for the steps mid-stream."""
    root = Path(rec.records_root() if root is None else root)
    out = {}
    for card, folders in FIT_FOLDERS.items():
        rows = [r for f in folders if csv_exists(root / f / "serve_load.csv") for r in step_rows(root / f)]
        if not rows:
            continue
        busy = [r for r in rows if not r["first"] and r["gap_s"] < 1e-4 and r["prompt_tokens"] == r["twin_prompt_tokens"]]
        grid = {f"{g:g}": {"with_first": _excess(after_idle(rows, g)),
                           "poisson_only": _excess([r for r in after_idle(rows, g) if not r["first"]])}
                for g in GAP_GRID_S}
        chosen = _excess(after_idle(rows, engine.IDLE_WAKE_AFTER_S))
        out[card] = {"table": TABLES[card], "folders": list(folders), "idle_wake_after_s": engine.IDLE_WAKE_AFTER_S,
                     "idle_prompt_s": chosen["median_excess_s"], "fit": chosen, "grid": grid,
                     "first_iterations": _excess([r for r in after_idle(rows, math.inf)]),
                     "mid_stream": _excess(busy)}
    return out


def candidate():
    """I on: the switch (the one-GPU tables carry idle_prompt_s, read only under it)."""
    return mock.patch.object(engine, "ADOPT_IDLE_WAKE", True)


def candidate_a():
    """I-a on (the rule's amendment): the switch with its part (a) alone (no idle_prompt_s)."""
    stack = ExitStack()
    stack.enter_context(mock.patch.object(engine, "ADOPT_IDLE_WAKE", True))
    stack.enter_context(mock.patch.object(engine, "IDLE_WAKE_PROMPT_TERM", False))
    return stack


def per_check_losses(off: dict, on: dict) -> list[str]:
    """Issue 15's held-out checks (the committed held-out set, per GPU folder) met in force and missed under I."""
    lost = []
    for folder, rows in off.items():
        for a, b in zip(rows, on[folder]):
            for k in seh.FIGURES:
                if a[f"{k}_within_target"] and not b[f"{k}_within_target"]:
                    lost.append(f"{folder}/{a['run_id']} {k}")
    return lost


def holdout_guards(rows: dict, res: dict, judged: str) -> tuple[dict, list[str] | None]:
    """A serving candidate's guards on issue 15's held-out sets, where its judge replayed the committed sets: G1 (no
    held-out check met in force is missed under `judged`) and G3 (the committed held-out set and the one with the input
    meet no fewer checks). (criteria, lost checks); ({}, None) without the committed sets."""
    if rows[None]["committed"] is None:
        return {}, None
    lost = per_check_losses(rows[None]["committed"]["committed_holdout"], rows[judged]["committed"]["committed_holdout"])
    so, sn = res["summary_off"], res["summary_on"]
    return {"G1_issue15_no_check_lost": not lost,
            "G3_committed_holdout_no_fewer": sn["committed_holdout"][0] >= so["committed_holdout"][0],
            "G3_with_input_holdout_no_fewer": sn["with_input_holdout"][0] >= so["with_input_holdout"][0]}, lost


def print_holdout_criteria(res: dict, letter: str) -> None:
    """A serving judge's closing lines before its verdict: issue 15's held-out checks met per GPU folder in force ->
    under the candidate (where the committed sets were replayed), the checks lost under `letter`, each criterion."""
    if res.get("summary_off"):
        for k in sorted(res["summary_off"]):
            if k.startswith("committed_holdout/"):
                print(f"issue 15 held out {k.split('/')[1]}: {res['summary_off'][k][0]}/{res['summary_off'][k][1]} -> "
                      f"{res['summary_on'][k][0]}/{res['summary_on'][k][1]}")
    print(f"held-out checks lost under {letter}: " + (", ".join(res["lost"]) or "none"))
    for k, v in res["criteria"].items():
        print(f"  {k}: {'met' if v else 'NOT met'}")


def report_ttft_judgement(out: dict, args, fresh, set_letter: str, letter: str, module: str, judged: str,
                          flags: tuple[str, ...] = (), verdict: str | None = None, candidate: str | None = None,
                          extra: dict | None = None) -> int:
    """The judge command's output (serve_idle_wake's, serve_first_met's and serve_lookup's, s33dedup): the judgement,
    the fresh set's TTFT checks, issue 15's held-out lines and criteria under `letter`, the verdict (or `verdict`); with
    --json the record (candidate `candidate` or `judged`, then `extra`'s keys). Returns exit status 0."""
    sgo.print_judgement(out, judged, "A-H")
    res = out["result"]
    if fresh:
        (ta, tb) = res["ttft"]
        print(f"set {set_letter} TTFT checks: in force {ta[0]} met, median {ta[1]:.2%} -> {judged} {tb[0]} met, median "
              f"{tb[1]:.2%}")
    print_holdout_criteria(res, letter)
    print(verdict or f"verdict: {'adopt ' + judged if out['adopt'] else 'not adopted'}")
    if args.json:
        record = {**sgo.judgement_record(out, {}, judged), "ttft": [list(x) for x in res["ttft"]] if fresh else None,
                  "lost": res["lost"], "candidate": candidate or judged, **(extra or {})}
        prereg.write_code_record(args.json, sjc.judge_command(module, args, *flags), record)
    return 0


def guard_criteria(off: list[dict], on: list[dict]) -> dict:
    """G2: each of sets A-M no fewer checks met; sets A-H pooled reported (with the median)."""
    out = swb.guard_criteria(off, on)
    crit = {f"G2_set_{k}_no_fewer": v[1][0] >= v[0][0] for k, v in out["sets"].items()}
    return {**out, "criteria": crit, "met": bool(crit) and all(crit.values())}


def criteria(out: dict) -> dict:
    """O1: more checks met and a lower median |error| over set O; O2: TTFT (P50, P99) more checks met and a lower
    median |TTFT error|; G1: no held-out check of issue 15's four folders lost; G2: each of sets A-M no fewer checks;
    G3: the committed held-out set and the held-out set with the input no fewer checks."""
    res, rows = out["result"], out["rows"]
    off, on = rows[None]["J"], rows[JUDGED]["J"]
    full = len(off) >= FRESH_RUNS and len(on) == len(off) and not out["incomplete"]
    a, b = seh.checks(off), seh.checks(on)
    ta, tb = seh.checks(off, TTFT), seh.checks(on, TTFT)
    crit = {"O1_more_checks_lower_median": bool(full and b[0] > a[0] and b[1] < a[1]),
            "O2_ttft_more_checks_lower_median": bool(full and tb[0] > ta[0] and tb[1] < ta[1])}
    held, lost = holdout_guards(rows, res, JUDGED)
    crit.update(held)
    crit.update(res["guard"]["criteria"])
    complete = bool(res["guard"]["criteria"]) and lost is not None
    return {"criteria": crit, "ttft": (ta, tb), "all": (a, b), "lost": lost or [],
            "passes": bool(off and complete and all(crit.values()))}


def judge(root: Path | str | None = None, committed_sets: bool = True, fresh=(NAME, FRESH_MODELS),
          guards: bool = True, part_a: bool = False) -> dict:
    """serve_graph_ops.judge with I (`part_a`: I-a): set O (`fresh`), sets A-M, the committed sets; the rule's criteria
    and verdict."""
    root = rec.records_root() if root is None else root
    out = sgo.judge(root, committed_sets, fresh, guards, candidate=candidate_a if part_a else candidate,
                    seen=swb.seen_rows, guard=guard_criteria, fresh_runs=FRESH_RUNS, judged=JUDGED)
    got = criteria(out)
    out["result"].update(criteria=got["criteria"], passes=got["passes"], ttft=got["ttft"], lost=got["lost"])
    out["adopt"] = JUDGED if got["passes"] else None
    return out


JUDGEMENT_FILE = Path(__file__).resolve().parent / "s29serve_judgement.json"


def section(root: Path | str | None = None, path: Path = JUDGEMENT_FILE) -> dict:
    """`twin validate`'s s29serve section: the committed judgement (set O in force and under I, the guards, the
    verdict) as its judge wrote it; {} before set O was judged."""
    if not json_exists(path):
        return {}
    j = read_json(path)
    rows = j.get("J", {})
    return {"adopt": j.get("adopt"), "criteria": j.get("criteria", {}), "ttft": j.get("ttft"), "lost": j.get("lost", []),
            "set_o": {k: list(seh.checks(v)) for k, v in rows.items()}, "runs": len(rows.get("None", [])),
            "summary": j.get("summary", {}), "seen_sets": j.get("seen_sets", {}), "note": judged_under.note(j)}


def format_section(sec: dict) -> str:
    """Its heading and one line per setting (checks and median over set O, its TTFT checks), then the guards."""
    if not sec:
        return "s29serve first iteration after idle (candidate I): set O not judged (no calibration/s29serve_judgement.json)"
    return format_set_lines(sec, "set_o", "s29serve first iteration after idle (candidate I, {verdict}): set O "
                            "(H200, {runs} runs, {checks} checks)", "O", "I", JUDGED)


def format_set_lines(sec: dict, set_key: str, heading: str, set_name: str, letter: str, judged: str) -> str:
    """A judged serving set's lines (shared by s29serve's set O and s30serve's set P): the heading, the set's checks
    and median in force -> under the candidate, its TTFT checks, issue 15's held out, the criteria, and the
    judged_under note where a switch moved since."""
    a, b = sec[set_key].get("None", [0, math.nan]), sec[set_key].get(judged, [0, math.nan])
    lines = [heading.format(verdict="ADOPTED" if sec["adopt"] else "not adopted", runs=sec["runs"], checks=5 * sec["runs"]),
             f"  set {set_name} in force {a[0]} met, median |err| {a[1]:.1%} -> {letter} {b[0]} met, {b[1]:.1%}"]
    if sec.get("ttft"):
        (ta, tb) = sec["ttft"]
        lines.append(f"  set {set_name} TTFT checks: in force {ta[0]} met, median {ta[1]:.1%} -> {letter} {tb[0]} met, "
                     f"{tb[1]:.1%}")
    held = {k.split("/", 1)[1]: v for k, v in sec["summary"].items() if k.startswith("committed_holdout/")}
    if held:
        lines.append(f"  issue 15 held out in force -> {letter}: " + ", ".join(
            f"{g} {v['in_force'][0]}/{v['in_force'][1]} -> {v[judged][0]}/{v[judged][1]}" for g, v in sorted(held.items())))
    lines.append("  criteria: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in sec["criteria"].items()))
    if sec.get("note"):   # s30stale: a switch moved since the judgement; its figures are that day's
        lines.append(f"  {sec['note']}")
    return "\n".join(lines)


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.serve_idle_wake", __doc__)
    ap.add_argument("what", nargs="?", choices=("judge", "guards", "fit"), default="judge",
                    help="fit: idle_prompt_s from the fitting records; guards: sets A-M and the committed sets under I "
                         "(no set O); judge: set O, the guards and the verdict")
    ap.add_argument("--no-committed", action="store_true", help="leave out the committed sets (no verdict then)")
    ap.add_argument("--part-a", action="store_true", help="candidate I-a (the rule's amendment): part (a) alone")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write the fit or the judgement")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if args.what == "fit":
        got = fit(root)
        for card, v in got.items():
            print(f"{card} ({v['table']}): idle_prompt_s {v['idle_prompt_s'] * 1e3:.3f} ms (ratio {v['fit']['median_ratio']:.3f}, "
                  f"{v['fit']['steps']} steps after >= {v['idle_wake_after_s'] * 1e3:g} ms idle, first iterations counted); "
                  f"mid-stream steps {v['mid_stream']['median_excess_s'] * 1e3:+.3f} ms ({v['mid_stream']['steps']}); "
                  f"first iterations alone {v['first_iterations']['median_excess_s'] * 1e3:+.3f} ms "
                  f"({v['first_iterations']['steps']})")
            for g, e in v["grid"].items():
                print(f"  idle >= {float(g) * 1e3:5g} ms: with first iterations {e['with_first']['median_excess_s'] * 1e3:+.3f} ms "
                      f"({e['with_first']['steps']}); Poisson steps alone {e['poisson_only']['median_excess_s'] * 1e3:+.3f} ms "
                      f"({e['poisson_only']['steps']})")
        entry.write_json(args.json, {"source": "python -m calibration.serve_idle_wake fit (docs/notes/"
                                     "s29serve_rule.md): fitting records only", "cards": got}, sort_keys=True, default=str)
        return 0
    if args.json and prereg.refuses_uncommitted_record():   # the file names the commit of the code that computed it
        return 2
    fresh = (NAME, FRESH_MODELS) if args.what == "judge" else None
    if fresh and not seh.set_rows(NAME, FRESH_MODELS, root):
        print(f"no set O records under {root}/<gpu>/{NAME}/<model>/", file=sys.stderr)
        return 2
    out = judge(root, committed_sets=not args.no_committed, fresh=fresh, part_a=args.part_a)
    if args.part_a:   # I-a was formed after set O's records existed: no rule judges it, whatever its criteria say
        out["criteria_as_if_judged"], out["adopt"] = out["result"]["criteria"], None
    if not args.part_a:
        return report_ttft_judgement(out, args, fresh, "O", "I", "calibration.serve_idle_wake", JUDGED)
    return report_ttft_judgement(out, args, fresh, "O", "I", "calibration.serve_idle_wake", JUDGED, ("--part-a",),
                                 "verdict: evidence only (I-a: formed after set O existed; no rule judges it)", "I-a",
                                 {"evidence_only": True, "criteria_as_if_judged": out["criteria_as_if_judged"]})


if __name__ == "__main__":
    sys.exit(main())

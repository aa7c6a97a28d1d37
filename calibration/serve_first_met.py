"""Session s30serve (issue 15; docs/notes/s30serve_rule.md, committed before its judging records existed): the candidate
P, `twin.serving.engine.ADOPT_PROBED_FIRST_MET`. A warmed engine process's flat sizes between its warm pass and its
token budget (counted met by the twin in force) pay, the first time an eager iteration runs one, what the first-met
probe (real/serve/firstmet.py) measured for that model on that card: busy_s mid-stream, idle_s after an idle of
IDLE_WAKE_AFTER_S or more; and a prompt iteration after such an idle pays post_idle_prompt_s.

The constants come from the probe's records alone (`fit`; fitting records, never a load run): per card and model, over
the probe's fresh sizes (each stepped first, then repeated, under the same gap class),
  busy_s             = max(0, median over the busy-class sizes of first - repeat duration_s),
  idle_s             = max(0, median over the idle-class sizes of first - repeat duration_s),
  post_idle_prompt_s = max(0, median met-size step after the sleep - median met-size step right after a step),
(a negative median charges nothing: a first run cannot make a step faster; it is read as noise) with the host_s /
gpu_s split and the allocator's cudaMalloc calls reported beside them. Judged on set P (s30serve) under guards on every
committed held-out set (sets A-M, set O, the committed sets, issue 15's held-out checks).

    python -m calibration.serve_first_met fit [--json calibration/s30serve_fit.json]
    python -m calibration.serve_first_met guards [--json FILE]      # sets A-M, O and the committed sets (no set P)
    python -m calibration.serve_first_met [--json calibration/s30serve_judgement.json]   # set P, guards, verdict
    python -m calibration.serve_first_met evidence [--json FILE]   # sets P and O under each part alone (no criterion)
"""

from __future__ import annotations

import csv
import math
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np

from calibration import entry, prereg
from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_graph_ops as sgo
from calibration import serve_idle_wake as siw
from calibration import serve_load_validation as slv
from calibration import serve_warm_budget as swb
from calibration.records_io import csv_exists, json_exists, open_csv, read_json
from twin.serving import engine

NAME = "s30serve"
FRESH_MODELS = ("bench-small", "v2-lite-slice", "v3-slice-1l", "mixtral-mla-slice")   # set P (S30P_PLANS)
FRESH_RUNS = 3 * len(FRESH_MODELS)
JUDGED = "P"
PROBE_DIR = f"{NAME}/probe"   # <card>/s30serve/probe/<model>/firstmet_steps.csv
CARDS = ("h200", "h100")
SEEN_O = (siw.NAME, siw.FRESH_MODELS)   # set O (s29serve): committed since, a guard here
GUARD_LABELS = {**swb.GUARD_LABELS, "O": (siw.NAME,)}
POOL_LEFT_OUT = (*swb.POOL_LEFT_OUT, "O")
TTFT = siw.TTFT
MORE_CHECKS = 3   # P1: set P's checks met under P at least this many more than in force


def _f(x) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _median(xs) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    return float(np.median(xs)) if xs else math.nan


def probe_fit(rows: list[dict]) -> dict:
    """One model's charges from its probe rows (firstmet_steps.csv): the rule's medians, and beside them the host_s /
    gpu_s excess and the cudaMalloc calls of first and repeat steps."""
    main = [r for r in rows if r["kind"] in ("first", "repeat", "met")]
    out = {"steps": len(main)}
    for cls in ("busy", "idle"):
        first = {int(r["size"]): r for r in main if r["kind"] == "first" and r["gap_class"] == cls}
        rep = {int(r["size"]): r for r in main if r["kind"] == "repeat" and r["gap_class"] == cls}
        both = sorted(set(first) & set(rep))
        diff = {k: [_f(first[n][k]) - _f(rep[n][k]) for n in both] for k in ("duration_s", "host_s", "gpu_s")}
        out[cls] = {"sizes": len(both), "first_minus_repeat_s": _median(diff["duration_s"]),
                    "host_first_minus_repeat_s": _median(diff["host_s"]), "gpu_first_minus_repeat_s": _median(diff["gpu_s"]),
                    "first_p25_p75_s": [float(np.percentile(diff["duration_s"], q)) for q in (25, 75)] if both else [],
                    "first_median_s": _median([_f(first[n]["duration_s"]) for n in both]),
                    "repeat_median_s": _median([_f(rep[n]["duration_s"]) for n in both]),
                    "first_device_allocs": int(sum(_f(first[n]["device_allocs"]) for n in both)),
                    "repeat_device_allocs": int(sum(_f(rep[n]["device_allocs"]) for n in both))}
    met = {cls: [_f(r["duration_s"]) for r in main if r["kind"] == "met" and r["gap_class"] == cls] for cls in ("busy", "idle")}
    out["met_busy_median_s"], out["met_idle_median_s"] = _median(met["busy"]), _median(met["idle"])
    pos = lambda x: max(0.0, x) if math.isfinite(x) else 0.0   # noqa: E731
    out["charges"] = {"busy_s": pos(out["busy"]["first_minus_repeat_s"]), "idle_s": pos(out["idle"]["first_minus_repeat_s"]),
                      "post_idle_prompt_s": pos(out["met_idle_median_s"] - out["met_busy_median_s"])}
    return out


def fit(root: Path | str | None = None) -> dict:
    """Per card and model with probe records: probe_fit."""
    root = Path(rec.records_root() if root is None else root)
    out = {}
    for card in CARDS:
        d = root / card / PROBE_DIR
        if not d.is_dir():
            continue
        for m in sorted(p.name for p in d.iterdir() if p.is_dir()):
            if not csv_exists(d / m / "firstmet_steps.csv"):
                continue
            with open_csv(d / m / "firstmet_steps.csv") as f:
                rows = list(csv.DictReader(f))
            if rows:
                out.setdefault(card, {})[m] = {**probe_fit(rows), "gpu_name": rows[0].get("gpu_name", "")}
    return out


def fit_record(got: dict) -> dict:
    """The fit file's content: the charges per card and model (what the twin reads) and the fit beside them."""
    return {"source": "python -m calibration.serve_first_met fit (docs/notes/s30serve_rule.md): real/serve/firstmet.py's "
                      "probe records only (fitting records)",
            "charges": {card: {m: v["charges"] for m, v in models.items()} for card, models in got.items()},
            "fit": got}


def candidate():
    """P on: the switch (serve_load_validation.warm_pass_pairs hands the replays the probe's charges)."""
    return mock.patch.object(engine, "ADOPT_PROBED_FIRST_MET", True)


PARTS = {"first_met": ("busy_s", "idle_s"), "post_idle": ("post_idle_prompt_s",)}


def candidate_part(part: str):
    """P with one part's charges alone (the others zeroed): evidence beside the judgement, no criterion."""
    keep = PARTS[part]
    orig = slv.first_met_charges

    def charges(gpu_name, model, path=None):
        c = orig(gpu_name, model, path)
        return None if c is None else {k: (v if k in keep else 0.0) for k, v in c.items()}
    stack = ExitStack()
    stack.enter_context(candidate())
    stack.enter_context(mock.patch.object(slv, "first_met_charges", charges))
    return stack


def evidence(root: Path | str | None = None) -> dict:
    """Sets P and O in force, under P and under each part alone: (checks met, median |error|) and the TTFT checks."""
    root = rec.records_root() if root is None else root
    out = {}
    for label, ctx in (("in force", ExitStack), (JUDGED, candidate),
                       *((f"{JUDGED}:{p}", lambda p=p: candidate_part(p)) for p in PARTS)):
        with ctx():
            for name, models in ((NAME, FRESH_MODELS), SEEN_O):
                rows = seh.set_rows(name, models, root)
                out.setdefault(name, {})[label] = {"all": list(seh.checks(rows)), "ttft": list(seh.checks(rows, TTFT))}
    return out


def seen_rows(root: Path | str | None = None) -> list[dict]:
    """Sets A-M (serve_warm_budget.seen_rows) and set O (s29serve), replayed under the current setting."""
    root = rec.records_root() if root is None else root
    return swb.seen_rows(root) + seh.set_rows(SEEN_O[0], SEEN_O[1], root)


def guard_criteria(off: list[dict], on: list[dict]) -> dict:
    """G2: each of sets A-M and O no fewer checks met; sets A-H pooled reported (with the median)."""
    with mock.patch.object(swb, "GUARD_LABELS", GUARD_LABELS), mock.patch.object(swb, "POOL_LEFT_OUT", POOL_LEFT_OUT):
        out = swb.guard_criteria(off, on)
    crit = {f"G2_set_{k}_no_fewer": v[1][0] >= v[0][0] for k, v in out["sets"].items()}
    return {**out, "criteria": crit, "met": bool(crit) and all(crit.values())}


def criteria(out: dict) -> dict:
    """P1: set P's checks met under P at least MORE_CHECKS more and a lower median |error|; P2: its TTFT checks (P50,
    P99) more met and a lower median |TTFT error|; G1: no held-out check of issue 15's four folders lost; G2: each of
    sets A-M and O no fewer checks; G3: the committed held-out set and the held-out set with the input no fewer."""
    res, rows = out["result"], out["rows"]
    off, on = rows[None]["J"], rows[JUDGED]["J"]
    full = len(off) >= FRESH_RUNS and len(on) == len(off) and not out["incomplete"]
    a, b = seh.checks(off), seh.checks(on)
    ta, tb = seh.checks(off, TTFT), seh.checks(on, TTFT)
    crit = {"P1_three_more_checks_lower_median": bool(full and b[0] >= a[0] + MORE_CHECKS and b[1] < a[1]),
            "P2_ttft_more_checks_lower_median": bool(full and tb[0] > ta[0] and tb[1] < ta[1])}
    held, lost = siw.holdout_guards(rows, res, JUDGED)
    crit.update(held)
    crit.update(res["guard"]["criteria"])
    complete = bool(res["guard"]["criteria"]) and lost is not None
    return {"criteria": crit, "ttft": (ta, tb), "all": (a, b), "lost": lost or [],
            "passes": bool(off and complete and all(crit.values()))}


def judge(root: Path | str | None = None, committed_sets: bool = True, fresh=(NAME, FRESH_MODELS),
          guards: bool = True) -> dict:
    """serve_graph_ops.judge with P: set P (`fresh`), sets A-M and O, the committed sets; the rule's criteria, verdict."""
    root = rec.records_root() if root is None else root
    out = sgo.judge(root, committed_sets, fresh, guards, candidate=candidate, seen=seen_rows, guard=guard_criteria,
                    fresh_runs=FRESH_RUNS, judged=JUDGED)
    got = criteria(out)
    out["result"].update(criteria=got["criteria"], passes=got["passes"], ttft=got["ttft"], lost=got["lost"])
    out["adopt"] = JUDGED if got["passes"] and fresh else None
    return out


JUDGEMENT_FILE = Path(__file__).resolve().parent / "s30serve_judgement.json"


def section(root: Path | str | None = None, path: Path = JUDGEMENT_FILE) -> dict:
    """`twin validate`'s s30serve section: the committed judgement (set P in force and under P, the guards, the
    verdict) as its judge wrote it; {} before set P was judged."""
    if not json_exists(path):
        return {}
    j = read_json(path)
    rows = j.get("J", {})
    return {"adopt": j.get("adopt"), "criteria": j.get("criteria", {}), "ttft": j.get("ttft"), "lost": j.get("lost", []),
            "set_p": {k: list(seh.checks(v)) for k, v in rows.items()}, "runs": len(rows.get("None", [])),
            "summary": j.get("summary", {}), "seen_sets": j.get("seen_sets", {})}


def format_section(sec: dict) -> str:
    """Its heading and one line per setting (checks and median over set P, its TTFT checks), then the guards."""
    if not sec:
        return "s30serve first-met probe (candidate P): set P not judged (no calibration/s30serve_judgement.json)"
    return siw.format_set_lines(sec, "set_p", "s30serve first-met probe (candidate P, {verdict}): set P ({runs} runs, "
                                "{checks} checks)", "P", "P", JUDGED)


def _print_fit(got: dict) -> None:
    for card, models in got.items():
        for m, v in models.items():
            c = v["charges"]
            print(f"{card} {m}: busy_s {c['busy_s'] * 1e3:.3f} ms (first - repeat median "
                  f"{v['busy']['first_minus_repeat_s'] * 1e3:+.3f}, host {v['busy']['host_first_minus_repeat_s'] * 1e3:+.3f}, "
                  f"{v['busy']['sizes']} sizes), idle_s {c['idle_s'] * 1e3:.3f} ms "
                  f"({v['idle']['first_minus_repeat_s'] * 1e3:+.3f}, host {v['idle']['host_first_minus_repeat_s'] * 1e3:+.3f}, "
                  f"{v['idle']['sizes']} sizes), post_idle_prompt_s {c['post_idle_prompt_s'] * 1e3:.3f} ms (met idle "
                  f"{v['met_idle_median_s'] * 1e3:.3f} vs busy {v['met_busy_median_s'] * 1e3:.3f}); cudaMalloc first "
                  f"{v['busy']['first_device_allocs'] + v['idle']['first_device_allocs']} vs repeat "
                  f"{v['busy']['repeat_device_allocs'] + v['idle']['repeat_device_allocs']}")


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.serve_first_met", __doc__)
    ap.add_argument("what", nargs="?", choices=("judge", "guards", "fit", "evidence"), default="judge",
                    help="fit: the charges from the probe records; guards: sets A-M, O and the committed sets under P "
                         "(no set P); judge: set P, the guards and the verdict; evidence: sets P and O under each part "
                         "alone (no criterion)")
    ap.add_argument("--no-committed", action="store_true", help="leave out the committed sets (no verdict then)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write the fit or the judgement")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if args.what == "fit":
        got = fit(root)
        if not got:
            print(f"no probe records under {root}/<card>/{PROBE_DIR}/<model>/", file=sys.stderr)
            return 2
        _print_fit(got)
        if args.json:
            entry.write_json(args.json, fit_record(got), sort_keys=True, default=str)
        return 0
    if args.json and prereg.refuses_uncommitted_record():   # the file names the commit of the code that computed it
        return 2
    if not json_exists(slv.FIRST_MET_FIT):
        print(f"no {slv.FIRST_MET_FIT.name}: run `python -m calibration.serve_first_met fit --json "
              f"calibration/{slv.FIRST_MET_FIT.name}` first", file=sys.stderr)
        return 2
    if args.what == "evidence":
        got = evidence(root)
        for name, v in got.items():
            for label, c in v.items():
                print(f"{name} {label}: {c['all'][0]} met, median {c['all'][1]:.2%}; TTFT {c['ttft'][0]} met, "
                      f"median {c['ttft'][1]:.2%}")
        if args.json:
            prereg.write_code_record(args.json, f"python -m calibration.serve_first_met evidence --json {args.json.as_posix()}",
                                     {"evidence_only": True, "sets": got})
        return 0
    fresh = (NAME, FRESH_MODELS) if args.what == "judge" else None
    if fresh and not seh.set_rows(NAME, FRESH_MODELS, root):
        print(f"no set P records under {root}/<gpu>/{NAME}/<model>/", file=sys.stderr)
        return 2
    out = judge(root, committed_sets=not args.no_committed, fresh=fresh)
    return siw.report_ttft_judgement(out, args, fresh, "P", "P", "calibration.serve_first_met", JUDGED)


if __name__ == "__main__":
    sys.exit(main())

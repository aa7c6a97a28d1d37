"""Session s33cold (issue 15, round 4 of the cold charge; docs/notes/s33cold_rule.md, committed before its judging records
existed): candidate S, `twin.serving.engine.ADOPT_COLD_STEPS`, the per-step form of a warmed serving process's cold
charge. Each eager step of a warmed one-GPU H200 process pays, for every flat size it runs that the process never ran in
its life (not a warm-up size, not 1..W of its warm pass, not an earlier eager size of any of its runs), one look-up
(lookup_s), plus kernel_s per GEMM kernel the model's kernel map (calibration/measurements/h200/s32kern/kmap/) gives for
that size that the process has not launched; the process's history carries across its runs. The replay path is
s32kern's ColdKernels; only the constants differ (calibration/s33cold_fit.json).

The constants come from fitting records alone (`fit`): the unprofiled engine processes run as every load run is run
(CUDA's default lazy module loading; the probe's CUDA_MODULE_LOADING=EAGER process and the profiled ones are left out):
  s32cold probe timed/bench-small and timed/v2-lite-slice (runs cold, fresh; baseline: the `again` run, every size met),
  s32kern2 timed/v2-lite-slice (set J's plan today: Poisson 22/s warmed to 704, a closed loop of 18; baseline: the
  process's own eager prompt steps that meet neither a new size nor a new kernel).
Every eager step is walked in the process's order with the map (the launched set from the warm-up sizes and 1..W); for
each eager prompt step outside the baseline run: y = duration - the baseline's least-squares fit on (1, prompt tokens,
decode rows), x1 = the map's kernels first launched, x2 = 1 where the size is new to the process. kernel_s, lookup_s =
least squares of y on (x1, x2), no intercept, pooled.

    python -m calibration.s33cold fit [--json calibration/s33cold_fit.json]
    python -m calibration.s33cold screen [--json FILE]   # seen sets N, K, Q by position, in force / S (no criterion)
    python -m calibration.s33cold guards [--json FILE]   # the seen and committed sets under S (no set R)
    python -m calibration.s33cold [judge] [--json calibration/s33cold_judgement.json]   # set R, guards, verdict
"""

from __future__ import annotations

import csv
import importlib
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np

from calibration import cold_judge as cj
from calibration import entry, prereg
from calibration import records as rec
from calibration import s32cold as s32c
from calibration import s32kern as s32k
from calibration import serve_eager_host as seh
from calibration import serve_graph_ops as sgo
from calibration import serve_idle_wake as siw
from calibration import serve_judge_cli as sjc
from calibration import serve_load_validation as slv
from calibration.records_io import csv_exists, json_exists, open_csv
from twin.serving import engine

NAME = "s33cold"
CARD = "h200"
# (records under <root>/h200/, model, baseline): "again" the run of that name; "met" the process's steps meeting
# neither a new size nor a new kernel
FIT_PROCESSES = (("s32cold/probe/timed/bench-small", "bench-small", "again"),
                 ("s32cold/probe/timed/v2-lite-slice", "v2-lite-slice", "again"),
                 ("s32kern2/timed/v2-lite-slice", "v2-lite-slice", "met"))
FIT_FILE = slv.COLD_STEP_FIT
JUDGED = "S"
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s33cold_judgement.json"


def _read(path: Path) -> list[dict]:
    with open_csv(path) as f:
        return list(csv.DictReader(f))


def _i(x) -> int:
    return int(float(x or 0))


def warmup_sizes(root: Path) -> set[int]:
    """The flat sizes the warm-up loads ran, as the s32cold probe's profiled processes traced them (every plan runs the
    same GPU1 warm-up loads and seeds; s32kern's)."""
    out: set[int] = set()
    for _, trace in s32k.PAIRS:
        p = root / CARD / s32k.PROBE / trace
        if csv_exists(p / "serve_kernels.csv"):
            out |= s32k.traced(p)[0]
    return out


def process_points(d: Path, kmap: tuple, warmup: set[int], baseline: str) -> list[dict]:
    """One fitting process: its eager prompt steps outside the baseline with excess_s, kernels (the map's first
    launched) and new_size, walked in the process's order (module doc)."""
    runs = _read(d / "serve_load.csv")
    its = _read(d / "serve_iterations.csv")
    warm = max(_i(r.get("warm_shapes")) for r in runs)
    met = set(range(1, warm + 1)) | set(warmup)
    launched = frozenset().union(*(kmap[n] for n in met if n < len(kmap)))
    pts = []
    for run in [r["run_id"] for r in runs]:
        for it in (x for x in its if x["run_id"] == run and _i(x["graph_batch"]) == 0):
            p, dec = _i(it["prefill_tokens"]), _i(it["decode_seqs"])
            n = p + dec
            new = (kmap[n] if n < len(kmap) else frozenset()) - launched
            launched |= new
            fresh = n not in met
            met.add(n)
            if p > 0:
                pts.append({"run": run, "p": p, "dec": dec, "t": float(it["duration_s"]), "kernels": len(new),
                            "new_size": int(fresh)})
    base = ([q for q in pts if q["run"].endswith(baseline)] if baseline != "met"
            else [q for q in pts if not q["kernels"] and not q["new_size"]])
    a = np.array([[1.0, q["p"], q["dec"]] for q in base])
    coef, *_ = np.linalg.lstsq(a, np.array([q["t"] for q in base]), rcond=None)
    out = []
    for q in pts:
        if baseline != "met" and q["run"].endswith(baseline):
            continue
        out.append({"run": q["run"], "kernels": q["kernels"], "new_size": q["new_size"],
                    "excess_s": q["t"] - float(coef @ [1.0, q["p"], q["dec"]])})
    return out


def fit(root: Path | str | None = None) -> dict:
    """kernel_s and lookup_s (module doc) from the fitting processes on the H200."""
    root = Path(rec.records_root() if root is None else root)
    warmup = warmup_sizes(root)
    pts, per = [], {}
    for name, model, baseline in FIT_PROCESSES:
        d = root / CARD / name
        kmap = slv.cold_kernel_map(model, root)
        if kmap is None or not csv_exists(d / "serve_iterations.csv"):
            continue
        got = process_points(d, kmap, warmup, baseline)
        pts += got
        per[name] = {"steps": len(got), "kernels": sum(g["kernels"] for g in got),
                     "new_sizes": sum(g["new_size"] for g in got),
                     "excess_sum_s": float(sum(g["excess_s"] for g in got))}
    if len(pts) < 3 or not warmup:
        return {}
    x = np.array([[g["kernels"], g["new_size"]] for g in pts], dtype=float)
    y = np.array([g["excess_s"] for g in pts])
    b, *_ = np.linalg.lstsq(x, y, rcond=None)
    r = y - x @ b
    se = np.sqrt(np.diag((r @ r / (len(y) - 2)) * np.linalg.inv(x.T @ x)))
    for v in per.values():
        v["charge_sum_s"] = float(b[0] * v["kernels"] + b[1] * v["new_sizes"])
    return {"kernel_s": {CARD: float(b[0])}, "lookup_s": {CARD: float(b[1])}, "se_s": [float(s) for s in se],
            "points": len(pts), "rms_residual_s": float(np.sqrt(np.mean(r ** 2))), "processes": per,
            "warmup_sizes": sorted(warmup),
            "source": "python -m calibration.s33cold fit (docs/notes/s33cold_rule.md): fitting records "
                      "calibration/measurements/h200/{s32cold/probe/timed/{bench-small,v2-lite-slice},"
                      "s32kern2/timed/v2-lite-slice}/, the s32kern kernel maps (h200/s32kern/kmap/)"}


# ---- the screen and the judgement (docs/notes/s33cold_rule.md) -----------------------------------------------------
FRESH = "s33cold/set"   # set R's records: <gpu>/s33cold/set/<model>/ (real/campaigns/s33cold.sh)
FRESH_MODELS = ("v2-lite-slice", "qwen2moe-mla-slice", "v3-slice-1l", "qwen3moe-mla-slice", "mixtral-mla-slice",
                "v3-slice-2l")
FRESH_RUNS = 4 * len(FRESH_MODELS)
MORE_CHECKS = 4        # R1
SET_N = (s32k.FRESH, s32k.FRESH_MODELS)
GUARD_LABELS = {**s32k.GUARD_LABELS, "N": (s32k.FRESH,)}
GUARDED = ("I", "J", "K", "L", "N", "P", "Q")   # G2: these sets no fewer checks (the others reported)
FIRST, AGAIN = "-first-", "-again-"
TTFT_P50 = s32c.TTFT_P50
POSITIONS = {"first": FIRST, "again": AGAIN}


# rule amendment 1: T is the twin in force at the judging commit; the serving switches another lane's rule may adopt
# this session (s33loop's W) are set back off for the report of S against the rule's own T (no criterion)
ADOPTED_SINCE = (("twin.serving.timing", "ADOPT_EAGER_WARMTH"),)


def _since() -> list[tuple]:
    return [(m, a) for m, a in ((importlib.import_module(n), a) for n, a in ADOPTED_SINCE) if getattr(m, a, False)]


def t_changed() -> list[str]:
    """The ADOPTED_SINCE switches on in the twin in force now (empty: T is the rule's commit's twin)."""
    return [f"{m.__name__}.{a}" for m, a in _since()]


def rule_twin():
    """The twin of the rule's commit: every ADOPTED_SINCE switch that is on set off."""
    stack = ExitStack()
    for m, a in _since():
        stack.enter_context(mock.patch.object(m, a, False))
    return stack


def candidate():
    """S on: serve_load_validation.sizes_run_before hands a warmed one-GPU H200 run's replay its ColdKernels with
    s33cold_fit.json's constants."""
    return cj.patched(engine, ADOPT_COLD_STEPS=True)


def seen_rows(root: Path | str | None = None) -> list[dict]:
    """Sets A-M, O, P, Q, K (calibration.s32kern.seen_rows) and set N (s32kern), replayed under the current setting."""
    return cj.seen_rows(root, s32k.seen_rows, SET_N)


def guard_criteria(off: list[dict], on: list[dict]) -> dict:
    """G2: sets I, J, K, L, N, P and Q each no fewer checks met under S; every set's counts reported."""
    return cj.guard_criteria(off, on, GUARD_LABELS, GUARDED)


def by_position(rows: list[dict]) -> dict:
    """(checks met, median |error|) of set R's rows: each process's first run, the streams repeated late, the rest;
    all figures and TTFT P50."""
    parts = {"first": [r for r in rows if FIRST in r["run_id"]], "again": [r for r in rows if AGAIN in r["run_id"]],
             "other": [r for r in rows if FIRST not in r["run_id"] and AGAIN not in r["run_id"]]}
    return {k: {"all": list(seh.checks(v)), "ttft_p50": list(seh.checks(v, TTFT_P50))} for k, v in parts.items()}


def repeats(rows: list[dict]) -> dict:
    """(No criterion; docs/notes/s28serve2.md's warming against rate) per stream a process ran twice, the late run's
    figure over the early one's, measured and predicted: TTFT P50 and throughput ({late run: {figure: [measured ratio,
    predicted ratio]}})."""
    by_id = {r["run_id"]: r for r in rows}
    out = {}
    for rid, late in by_id.items():
        if AGAIN not in rid:
            continue
        early_id = next((k for k in by_id if k != rid and _same_stream(k, rid)), None)
        if early_id is None:
            continue
        early = by_id[early_id]
        out[rid] = {"early": early_id, **{f: [late[f"{f}_measured"] / early[f"{f}_measured"],
                                              late[f"{f}_predicted"] / early[f"{f}_predicted"]]
                                          for f in ("ttft_p50_s", "output_tokens_per_s")}}
    return out


def _same_stream(early_id: str, late_id: str) -> bool:
    """Whether `early_id` is the run whose stream `late_id` repeats (set R's names: r33-<short>-<kind>-...-r)."""
    pre = late_id.split("-")[:2]
    if early_id.split("-")[:2] != pre or AGAIN in early_id:
        return False
    kind = late_id.split("-")[2]   # poisson / closed
    if kind == "closed":
        return FIRST in early_id and "closed" in early_id
    return early_id.split("-")[2] == "poisson" and (FIRST in early_id or "-second-" in early_id)


def criteria(out: dict) -> dict:
    """R1: set R's checks met under S at least MORE_CHECKS more and a lower median |error|; R2: its first runs' TTFT
    P50 no fewer met and a lower median |error|; G1 / G3 (issue 15's held-out sets); G2 (the guard sets)."""
    return cj.criteria(out, judged=JUDGED, fresh_runs=FRESH_RUNS, more_checks=MORE_CHECKS, guarded=GUARDED,
                       names=("R1_four_more_checks_lower_median", "R2_first_run_ttft_p50_no_fewer_lower_median"),
                       early=FIRST)


def judge(root: Path | str | None = None, committed_sets: bool = True, fresh=(FRESH, FRESH_MODELS),
          guards: bool = True) -> dict:
    """serve_graph_ops.judge with S: set R (`fresh`), sets A-Q, the committed sets; the criteria and the verdict."""
    return cj.judge(root, committed_sets, fresh, guards, candidate=candidate, seen=seen_rows, guard=guard_criteria,
                    fresh_runs=FRESH_RUNS, judged=JUDGED, criteria=criteria)


def screen(root: Path | str | None = None,
           sets=(("N", SET_N), ("K", s32k.SET_K), ("Q", s32c.SET_Q), ("R", (FRESH, FRESH_MODELS)))) -> dict:
    """Seen sets N, K, Q (and set R where its records exist) in force and under S (and C-k, s32kern's, for reference):
    all checks, by position (early Poisson, loop, late Poisson; set R's: first runs, repeated streams, the rest), by
    model, TTFT P50 by run (no criterion)."""
    return s32k.screen(root, sets, settings=(("in force", ExitStack), (JUDGED, candidate), ("C-k", s32k.candidate)),
                       position=lambda key, rows: by_position(rows) if key == "R" else s32c.by_position(rows))


def report(out: dict, args, fresh) -> int:
    """The judge's (or the guards') printed lines and, with --json, the stamped record."""
    sgo.print_judgement(out, JUDGED, "A-H")
    res = out["result"]
    if fresh:
        (ea, eb) = res["early"]
        print(f"set R first runs' TTFT P50: in force {ea[0]} met, median {ea[1]:.2%} -> {JUDGED} {eb[0]} met, "
              f"median {eb[1]:.2%}")
        for label in (None, JUDGED):
            print(f"set R by position ({label or 'in force'}): " + json.dumps(by_position(out["rows"][label]["J"])))
            for rid, v in repeats(out["rows"][label]["J"]).items():
                print(f"  {label or 'in force'} {rid} / {v['early']}: TTFT P50 measured x{v['ttft_p50_s'][0]:.3f}, "
                      f"predicted x{v['ttft_p50_s'][1]:.3f}; throughput measured x{v['output_tokens_per_s'][0]:.3f}, "
                      f"predicted x{v['output_tokens_per_s'][1]:.3f}")
    siw.print_holdout_criteria(res, JUDGED)
    print(f"T (the twin in force at this commit) includes: {', '.join(out.get('t_includes') or ['nothing adopted since the rule'])}")
    if out.get("rule_twin"):
        rt = out["rule_twin"]
        print(f"reported, no criterion: S against the rule's own T: set R {rt['all'][0][0]} -> {rt['all'][1][0]} met, "
              f"median {rt['all'][0][1]:.2%} -> {rt['all'][1][1]:.2%}; " + ", ".join(
                  f"{k} {'met' if v else 'NOT met'}" for k, v in rt["criteria"].items()))
    print(f"verdict: {'adopt ' + JUDGED if out['adopt'] else 'not adopted'}")
    if args.json:
        record = {**sgo.judgement_record(out, {}, JUDGED),
                  "early": [list(x) for x in res["early"]] if fresh else None,
                  "by_position": {str(c or "in force"): by_position(out["rows"][c]["J"]) for c in (None, JUDGED)}
                  if fresh else None,
                  "by_model": {str(c or "in force"): s32k.by_model(out["rows"][c]["J"]) for c in (None, JUDGED)}
                  if fresh else None,
                  "repeats": {str(c or "in force"): repeats(out["rows"][c]["J"]) for c in (None, JUDGED)}
                  if fresh else None,
                  "t_includes": out.get("t_includes", []), "rule_twin": out.get("rule_twin"),
                  "lost": res["lost"], "candidate": JUDGED}
        prereg.write_code_record(args.json, sjc.judge_command("calibration.s33cold", args), record)
    return 0


@entry.script
def main(argv: list[str] | None = None) -> int:
    args = sjc.parse(argv, "calibration.s33cold", __doc__, ("judge", "guards", "fit", "screen"),
                     "fit: S's constants from the fitting records; screen: seen sets N, K, Q in force / S / C-k; "
                     "guards: the seen and committed sets under S; judge: set R, guards, verdict", json_help=cj.JSON_HELP)
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if args.what == "fit":
        got = fit(root)
        if not got:
            print(f"no fitting records under {root}/{CARD}/ (calibration.s33cold.FIT_PROCESSES)", file=sys.stderr)
            return 2
        print(f"{CARD}: kernel_s {got['kernel_s'][CARD] * 1e3:.3f} ms, lookup_s {got['lookup_s'][CARD] * 1e3:.3f} ms "
              f"(se {got['se_s'][0] * 1e3:.3f} / {got['se_s'][1] * 1e3:.3f} ms; {got['points']} steps); " + "; ".join(
                  f"{k}: {v['steps']} steps, {v['kernels']} kernels, {v['new_sizes']} new sizes, excess "
                  f"{v['excess_sum_s'] * 1e3:.1f} ms, charge {v['charge_sum_s'] * 1e3:.1f} ms"
                  for k, v in got["processes"].items()))
        if args.json:
            entry.write_json(args.json, got, sort_keys=True)
        return 0
    if not json_exists(FIT_FILE):
        print(f"no {FIT_FILE.name}: run `python -m calibration.s33cold fit --json calibration/{FIT_FILE.name}`",
              file=sys.stderr)
        return 2
    if args.what == "screen":
        got = screen(root)
        s32k._print_screen(got)
        if args.json:
            entry.write_json(args.json, got, sort_keys=True)
        return 0
    if args.json and prereg.refuses_uncommitted_record():   # the file names the commit of the code that computed it
        return 2
    got = cj.judged(args, root, (FRESH, FRESH_MODELS), "set R", judge)
    if got is None:
        return entry.EXIT_INVALID
    out, fresh = got
    out["t_includes"] = t_changed()
    if out["t_includes"]:   # amendment 1: S against the rule's own T besides (no criterion)
        with rule_twin():
            alt = judge(root, committed_sets=not args.no_committed, fresh=fresh)
        out["rule_twin"] = {"criteria": alt["result"]["criteria"], "passes": alt["result"]["passes"],
                            "all": [list(x) for x in (seh.checks(alt["rows"][None]["J"]), seh.checks(alt["rows"][JUDGED]["J"]))],
                            "early": [list(x) for x in alt["result"]["early"]] if fresh else None,
                            "seen_sets": {k: [list(v[0]), list(v[1])] for k, v in alt["result"]["guard"].get("sets", {}).items()}}
    return report(out, args, fresh)


if __name__ == "__main__":
    sys.exit(main())

"""Session s32cold (issue 15; docs/notes/s32cold_rule.md, committed before its judging records existed): candidate K,
`twin.serving.engine.ADOPT_COLD_SIZES`. A warmed engine process's first prompt steps at sizes above its warm pass cost
more the fewer such sizes the process has met: the probe (real/campaigns/s32cold.sh, fitting records,
calibration/measurements/h200/s32cold/probe/) found the excess in the host's GEMM calls (cuBLASLt's look-ups of a new
row count and its nvjet kernels used for the first time, ~2.5-4 ms a kernel), not in CUDA's module loading
(CUDA_MODULE_LOADING=EAGER keeps it) nor in the caching allocator (no cudaMalloc in those steps), and gone when the
warm pass covers the sizes (w1024).

Under K a size between a run's warm pass W and its token budget that its process has not run pays, on the first eager
iteration that runs it, shapes x shape_s x fade_sizes / (fade_sizes + n): n the distinct sizes above the pass the
process ran before (its earlier runs' and this run's), shapes the model's size-dependent GEMM shapes
(calibration/s31look_shapes.json). shape_s and fade_sizes come from the probe alone (`fit`):
  per unprofiled probe process (probe/timed/<model>, probe/eager/<model>): the `again` run's prompt steps (cold's
  stream once more: every size met) fit a met step's duration (least squares on 1, prompt tokens, decode rows); every
  eager prompt step of the cold and fresh runs at a size above the pass new to the process gives (its duration - that
  fit) / shapes at its n; shape_s, fade_sizes = the least-squares fit of shape_s x fade / (fade + n) to them, pooled.

    python -m calibration.s32cold fit [--json calibration/s32cold_fit.json]
    python -m calibration.s32cold probe            # the probe's mechanism figures (no criterion)
    python -m calibration.s32cold [judge] [--json calibration/s32cold_judgement.json]   # the fresh set, guards, verdict
"""

from __future__ import annotations

import csv
import json
import sys
from contextlib import ExitStack
from pathlib import Path

import numpy as np

from calibration import cold_judge as cj
from calibration import entry, prereg
from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_graph_ops as sgo
from calibration import serve_load_validation as slv
from calibration import serve_idle_wake as siw
from calibration import serve_judge_cli as sjc
from calibration import serve_lookup as slk
from calibration.records_io import csv_exists, json_exists, open_csv
from twin.serving import engine

NAME = "s32cold"
PROBE = "s32cold/probe"
FIT_PARTS = ("timed", "eager")   # unprofiled probe processes (trace*: under the profiler; w1024: no size new)
FIT_FILE = Path(__file__).resolve().parent / "s32cold_fit.json"
CARD = "h200"
JUDGED = "K"


def _med(xs) -> float | None:
    return float(np.median(xs)) if len(xs) else None


def _read(path: Path) -> list[dict]:
    with open_csv(path) as f:
        return list(csv.DictReader(f))


def process_points(d: Path, shapes: int) -> list[dict]:
    """One probe process (its serve_load.csv and serve_iterations.csv): per eager prompt step of a size above the warm
    pass new to the process, in the process's order: run, size, n (sizes above the pass met before), excess_s (the
    step's duration over the again run's met-step fit) and per_shape_s."""
    runs = _read(d / "serve_load.csv")
    its = _read(d / "serve_iterations.csv")
    warm = max(int(float(r.get("warm_shapes") or 0)) for r in runs)
    order = [r["run_id"] for r in runs]
    again = [it for it in its if it["run_id"].endswith("again") and int(float(it["prefill_tokens"])) > 0
             and int(float(it["graph_batch"] or 0)) == 0]
    a = np.array([[1.0, float(it["prefill_tokens"]), float(it["decode_seqs"])] for it in again])
    coef, *_ = np.linalg.lstsq(a, np.array([float(it["duration_s"]) for it in again]), rcond=None)
    met, out = set(), []
    for run in order:
        for it in (x for x in its if x["run_id"] == run):
            if int(float(it["graph_batch"] or 0)) != 0:
                continue
            p, dec = int(float(it["prefill_tokens"])), int(float(it["decode_seqs"]))
            size = p + dec
            if size <= warm or size in met:
                continue
            if p > 0 and not run.endswith("again"):
                base = coef[0] + coef[1] * p + coef[2] * dec
                exc = float(it["duration_s"]) - base
                out.append({"run": run, "size": size, "n": len(met), "excess_s": exc, "per_shape_s": exc / shapes})
            met.add(size)
    return out


def fit(root: Path | str | None = None) -> dict:
    """shape_s and fade_sizes (the module doc) from the probe's unprofiled processes on the H200."""
    from scipy.optimize import curve_fit   # lazy: scipy only for the fit

    root = Path(rec.records_root() if root is None else root)
    counts = slk.shapes()
    pts, per = [], {}
    for part in FIT_PARTS:
        base = root / CARD / PROBE / part
        if not base.is_dir():
            continue
        for m in sorted(p.name for p in base.iterdir() if p.is_dir()):
            if m not in counts or not csv_exists(base / m / "serve_iterations.csv"):
                continue
            got = process_points(base / m, counts[m])
            pts += got
            per[f"{part}/{m}"] = {"steps": len(got), "shapes": counts[m],
                                  "excess_median_s": float(np.median([g["excess_s"] for g in got])),
                                  "excess_first7_median_s": float(np.median([g["excess_s"] for g in got[:7]])),
                                  "excess_last7_median_s": float(np.median([g["excess_s"] for g in got[-7:]]))}
    if not pts:
        return {}
    n = np.array([p["n"] for p in pts], dtype=float)
    y = np.array([p["per_shape_s"] for p in pts])
    (c, h), _ = curve_fit(lambda x, c, h: c * h / (h + x), n, y, p0=(1e-3, 20.0), bounds=([0.0, 0.5], [0.1, 1e4]))
    return {"shape_s": {CARD: float(c)}, "fade_sizes": {CARD: float(h)}, "points": len(pts), "processes": per,
            "shapes": counts,
            "source": "python -m calibration.s32cold fit (docs/notes/s32cold_rule.md): the s32cold probe's unprofiled "
                      "processes (calibration/measurements/h200/s32cold/probe/{timed,eager}/, fitting records)"}


# ---- the judgement (docs/notes/s32cold_rule.md) ------------------------------------------------------------------
FRESH = "s32cold2"   # set K's records: <gpu>/s32cold2/<model>/ (real/campaigns/s32cold2.sh)
FRESH_MODELS = ("mixtral-mla-slice", "qwen3moe-mla-slice", "v3-slice-1l", "v3-slice-2l")
FRESH_RUNS = 3 * len(FRESH_MODELS)
MORE_CHECKS = 3        # K1
SET_Q = ("s31look", slk.FRESH_MODELS)
GUARD_LABELS = {**slk.GUARD_LABELS, "Q": ("s31look",)}
GUARDED = ("I", "J", "L", "P", "Q")   # G2: these sets no fewer checks (the others reported)
EARLY = "poisson-early"
TTFT_P50 = cj.TTFT_P50


def candidate(exposed: bool = False):
    """K on (serve_load_validation.warm_pass_pairs hands a warmed one-GPU run's replay cold_charges); `exposed`: the
    charge paid as the table's own first-met stall (engine.COLD_HOST_EXPOSED: evidence only, after the guard screen)."""
    return cj.patched(engine, ADOPT_COLD_SIZES=True, COLD_HOST_EXPOSED=exposed)


def evidence(root: Path | str | None = None, guards: bool = True) -> dict:
    """No criterion. Set K and set Q in force, under K and under K exposed (the charge as a host stall): checks met
    and median |error| by position in the process; with `guards` the seen sets under K exposed."""
    root = rec.records_root() if root is None else root
    out: dict = {"set_k": {}, "set_q": {}, "seen_exposed": {}}
    for label, ctx in (("in force", ExitStack), (JUDGED, candidate), (f"{JUDGED} exposed", lambda: candidate(True))):
        with ctx():
            for key, (name, models) in (("set_k", (FRESH, FRESH_MODELS)), ("set_q", SET_Q)):
                rows = seh.set_rows(name, models, root)
                out[key][label] = {"all": list(seh.checks(rows)), "by_position": by_position(rows),
                                   "runs": {r["run_id"]: {k: r[f"{k}_rel_error"] for k in seh.FIGURES} for r in rows}}
    if guards:
        with candidate(True):
            on = seen_rows(root)
        g = guard_criteria(seen_rows(root), on)
        out["seen_exposed"] = {k: [list(v[0]), list(v[1])] for k, v in g["sets"].items()}
    return out


def seen_rows(root: Path | str | None = None) -> list[dict]:
    """Sets A-M, O, P (serve_lookup.seen_rows) and set Q (s31look), replayed under the current setting."""
    return cj.seen_rows(root, slk.seen_rows, SET_Q)


def guard_criteria(off: list[dict], on: list[dict]) -> dict:
    """G2: sets I, J, L, P and Q each no fewer checks met under K; every set's counts reported."""
    return cj.guard_criteria(off, on, GUARD_LABELS, GUARDED)


def criteria(out: dict) -> dict:
    """K1: set K's checks met under K at least MORE_CHECKS more and a lower median |error|; K2: its early Poisson runs'
    TTFT P50 no fewer met and a lower median |error|; G1: no held-out check of issue 15's four folders lost; G2 (guard);
    G3: the committed held-out set and the held-out set with the input no fewer."""
    return cj.criteria(out, judged=JUDGED, fresh_runs=FRESH_RUNS, more_checks=MORE_CHECKS, guarded=GUARDED,
                       names=("K1_three_more_checks_lower_median", "K2_early_ttft_p50_no_fewer_lower_median"),
                       early=EARLY)


def judge(root: Path | str | None = None, committed_sets: bool = True, fresh=(FRESH, FRESH_MODELS),
          guards: bool = True) -> dict:
    """serve_graph_ops.judge with K: set K (`fresh`), sets A-M, O, P, Q, the committed sets; the criteria, verdict."""
    return cj.judge(root, committed_sets, fresh, guards, candidate=candidate, seen=seen_rows, guard=guard_criteria,
                    fresh_runs=FRESH_RUNS, judged=JUDGED, criteria=criteria)


POSITIONS = ("poisson-early", "closed-c", "poisson-late")


def by_position(rows: list[dict]) -> dict:
    """(checks met, median |error|) of rows by their run's position in the process, all figures and TTFT P50."""
    return {pos: {"all": list(seh.checks([r for r in rows if pos in r["run_id"]])),
                  "ttft_p50": list(seh.checks([r for r in rows if pos in r["run_id"]], TTFT_P50))} for pos in POSITIONS}


def screen_q(root: Path | str | None = None) -> dict:
    """Set Q (seen) in force and under K, by position (no criterion: the rule's screen)."""
    root = rec.records_root() if root is None else root
    out = {}
    for label, ctx in (("in force", ExitStack), (JUDGED, candidate)):
        with ctx():
            rows = seh.set_rows(SET_Q[0], SET_Q[1], root)
        out[label] = {"all": list(seh.checks(rows)), "by_position": by_position(rows),
                      "ttft_p50": {r["run_id"]: r["ttft_p50_s_rel_error"] for r in rows}}
    return out


def probe_figures(root: Path | str | None = None) -> dict:
    """The probe's mechanism figures (no criterion): per part and run the prompt steps' median duration; the traced
    processes' kernels first launched, slow launches, cudaMalloc and GEMM host time of the runs' prompt steps; the
    stall trace's cudaMalloc counts."""
    root = Path(rec.records_root() if root is None else root) / CARD / PROBE
    out: dict = {"steps": {}, "trace": {}, "allocs": {}}
    for part in ("timed", "eager", "trace", "trace-eager", "w1024"):
        if not (root / part).is_dir():
            continue
        for m in sorted(p.name for p in (root / part).iterdir() if p.is_dir()):
            its = [it for it in _read(root / part / m / "serve_iterations.csv") if int(float(it["prefill_tokens"])) > 0]
            runs = sorted({it["run_id"] for it in its})
            out["steps"][f"{part}/{m}"] = {r.rsplit("-", 1)[1]: float(np.median(
                [float(it["duration_s"]) for it in its if it["run_id"] == r])) for r in runs}
            if csv_exists(root / part / m / "serve_kernels.csv"):
                ks = [k for k in _read(root / part / m / "serve_kernels.csv")
                      if k["phase"] == "run" and int(float(k["prefill_tokens"] or 0)) > 0]
                out["trace"][f"{part}/{m}"] = {r.rsplit("-", 1)[1]: {
                    c: float(np.sum([float(k[c]) for k in ks if k["run_id"] == r]))
                    for c in ("new_kernels", "slow_launches", "malloc_calls", "gemm_s", "duration_s")}
                    | {"steps": sum(k["run_id"] == r for k in ks),
                       "gemm_max_s_with_new_kernel_median": _med(
                           [float(k["gemm_max_s"]) for k in ks if k["run_id"] == r and int(k["new_kernels"]) > 0]),
                       "gemm_max_s_without_median": _med(
                           [float(k["gemm_max_s"]) for k in ks if k["run_id"] == r and int(k["new_kernels"]) == 0])}
                    for r in runs}
            if csv_exists(root / part / m / "serve_stalls.csv"):
                st = _read(root / part / m / "serve_stalls.csv")
                out["allocs"][f"{part}/{m}"] = {r.rsplit("-", 1)[1]: int(sum(
                    float(s["cuda_device_allocs"]) for s in st if s["run_id"] == r)) for r in runs}
    return out


@entry.script
def main(argv: list[str] | None = None) -> int:
    args = sjc.parse(argv, "calibration.s32cold", __doc__, ("judge", "guards", "fit", "probe", "screen", "evidence"),
                     "fit: K's constants from the probe; probe: the probe's mechanism figures; screen: set Q (seen) "
                     "under K; guards: the seen and committed sets under K (no set K); judge: set K, guards, verdict",
                     json_help=cj.JSON_HELP)
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if args.what == "fit":
        got = fit(root)
        if not got:
            print(f"no probe records under {root}/{CARD}/{PROBE}/", file=sys.stderr)
            return 2
        c, h = got["shape_s"][CARD], got["fade_sizes"][CARD]
        print(f"{CARD}: shape_s {c * 1e3:.3f} ms, fade_sizes {h:.1f} ({got['points']} steps); "
              + "; ".join(f"{k} median excess {v['excess_median_s'] * 1e3:.2f} ms" for k, v in got["processes"].items()))
        entry.write_json(args.json, got, sort_keys=True)
        return 0
    if args.what == "probe":
        got = probe_figures(root)
        print(json.dumps(got, indent=1, sort_keys=True))
        entry.write_json(args.json, got, sort_keys=True)
        return 0
    if not json_exists(slv.COLD_FIT):
        print(f"no {slv.COLD_FIT.name}: run `python -m calibration.s32cold fit --json calibration/{slv.COLD_FIT.name}`",
              file=sys.stderr)
        return 2
    if args.what == "screen":
        got = screen_q(root)
        for label, v in got.items():
            print(f"set Q {label}: {v['all'][0]} met, median {v['all'][1]:.2%}; " + "; ".join(
                f"{p} {x['all'][0]} met {x['all'][1]:.2%} (TTFT P50 {x['ttft_p50'][0]}, {x['ttft_p50'][1]:.2%})"
                for p, x in v["by_position"].items()))
        entry.write_json(args.json, got, sort_keys=True)
        return 0
    if args.json and prereg.refuses_uncommitted_record():   # the file names the commit of the code that computed it
        return 2
    if args.what == "evidence":   # --no-committed: without the seen sets (set K and set Q only)
        got = evidence(root, guards=not args.no_committed)
        for key in ("set_k", "set_q"):
            for label, v in got[key].items():
                print(f"{key} {label}: {v['all'][0]} met, median {v['all'][1]:.2%}; " + "; ".join(
                    f"{p} {x['all'][0]} met {x['all'][1]:.2%} (TTFT P50 {x['ttft_p50'][0]}, {x['ttft_p50'][1]:.2%})"
                    for p, x in v["by_position"].items()))
        for k, (a, b) in got["seen_exposed"].items():
            print(f"set {k} in force -> {JUDGED} exposed: {a[0]} -> {b[0]} met, median {a[1]:.2%} -> {b[1]:.2%}")
        if args.json:
            cmd = "python -m calibration.s32cold evidence" + (" --no-committed" if args.no_committed else "")
            prereg.write_code_record(args.json, f"{cmd} --json {args.json.as_posix()}",
                                     {"evidence_only": True, **got})
        return 0
    got = cj.judged(args, root, (FRESH, FRESH_MODELS), "set K", judge)
    if got is None:
        return entry.EXIT_INVALID
    out, fresh = got
    return report_judgement(out, args, fresh, "set K", "K", "calibration.s32cold", JUDGED)


def report_judgement(out: dict, args, fresh, set_label: str, letter: str, module: str, judged: str,
                     extra: dict | None = None) -> int:
    """The judge command's output (s32cold's and s32kern's): the judgement, the fresh set's early TTFT P50 and its
    checks by position, issue 15's held-out lines and criteria, the verdict; with --json the record (`extra`'s keys
    after by_position)."""
    sgo.print_judgement(out, judged, "A-H")
    res = out["result"]
    if fresh:
        (ea, eb) = res["early"]
        print(f"{set_label} early Poisson TTFT P50: in force {ea[0]} met, median {ea[1]:.2%} -> {judged} {eb[0]} met, "
              f"median {eb[1]:.2%}")
        for label, rows in ((None, out["rows"][None]["J"]), (judged, out["rows"][judged]["J"])):
            print(f"{set_label} by position ({label or 'in force'}): " + json.dumps(by_position(rows)))
    siw.print_holdout_criteria(res, letter)
    print(f"verdict: {'adopt ' + judged if out['adopt'] else 'not adopted'}")
    if args.json:
        record = {**sgo.judgement_record(out, {}, judged), "early": [list(x) for x in res["early"]] if fresh else None,
                  "by_position": {str(c or "in force"): by_position(out["rows"][c]["J"]) for c in (None, judged)},
                  **(extra or {}), "lost": res["lost"], "candidate": judged}
        prereg.write_code_record(args.json, sjc.judge_command(module, args), record)
    return 0

if __name__ == "__main__":
    sys.exit(main())

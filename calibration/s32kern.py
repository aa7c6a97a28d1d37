"""Session s32kern (issue 15; docs/notes/s32kern_rule.md, committed before its judging records existed): candidate C,
`twin.serving.engine.ADOPT_COLD_KERNELS`. s32cold's probe found a warmed process's first prompt steps above its warm pass
pay host time inside cuBLASLt for each GEMM kernel the process launches for the first time, plus look-ups of an exact
new row count. C counts kernels, not sizes: on an eager iteration of flat size M, the kernels the model's kernel map
(real/serve/kernelmap.py, H200, calibration/measurements/h200/s32kern/kmap/<model>/) gives for M that the process has
not launched yet pay kernel_s each, and M pays lookup_s where it is an exact size above the pass the process had not run.

The constants come from the s32cold probe's records alone (`fit`, calibration/s32kern_fit.json): per probe process pair
(unprofiled timed/bench-small with its profiled twin trace/bench-small; eager/bench-small with trace-eager/bench-small:
the same plan, stream and order), every eager prompt step of the cold and fresh runs gives
  y = its unprofiled duration - the again run's met-step fit (least squares on 1, prompt tokens, decode rows; as
      calibration.s32cold.process_points),
  x1 = the GEMM kernels (cuBLASLt: nvjet / gemm / cublas in the name) the profiled twin's step of the same run and
      prompt tokens launched first (serve_kernels.csv new_kernel_names; a step without such a twin is left out),
  x2 = 1 where its flat size is new to the process (not a warm-up size, not 1..W, not run before in the process);
and kernel_s, lookup_s = least squares of y on (x1, x2), no intercept, pooled. lookup_s is kept only if the probe pins
it (lookup_s > 2 standard errors); else 0. warmup_sizes: the flat sizes the profiled processes' warm-up loads ran
(both, pooled): every plan runs the same GPU1 warm-up loads and seeds.

    python -m calibration.s32kern fit [--json calibration/s32kern_fit.json]
    python -m calibration.s32kern screen [--variant C|C-k]   # sets K and Q (seen) in force and under C, by position
    python -m calibration.s32kern mapcheck     # the map's new kernels of the probe's traced steps against the trace's
    python -m calibration.s32kern [judge] [--json calibration/s32kern_judgement.json]   # set N, guards, verdict
"""

from __future__ import annotations

import csv
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
from calibration import serve_eager_host as seh
from calibration import serve_judge_cli as sjc
from calibration import serve_load_validation as slv
from twin.serving import engine
from calibration.records_io import csv_exists, json_exists, open_csv

NAME = "s32kern"
PROBE = "s32cold/probe"
CARD = "h200"
# (unprofiled process, its profiled twin): the same plan, stream, warm-up and order
PAIRS = (("timed/bench-small", "trace/bench-small"), ("eager/bench-small", "trace-eager/bench-small"))
FIT_FILE = Path(__file__).resolve().parent / "s32kern_fit.json"
PINNED_SE = 2.0   # lookup_s kept only above this many standard errors
AMENDED_NO_LOOKUP = True   # docs/notes/s32kern_rule.md amendment 1: the judged candidate is C-k (lookup_s = 0)


def _read(path: Path) -> list[dict]:
    with open_csv(path) as f:
        return list(csv.DictReader(f))


def _i(x) -> int:
    return int(float(x or 0))


def is_gemm_kernel(name: str) -> bool:
    n = name.lower()
    return "nvjet" in n or "gemm" in n or "cublas" in n


def traced(d: Path) -> tuple[set[int], dict[tuple[str, int], int]]:
    """A profiled probe process (serve_kernels.csv): the flat sizes its warm-up loads ran, and per (run, flat size) of
    its eager run-phase prompt steps by (run, prompt tokens) the GEMM kernels first launched (the first such step in the
    run; the prompt tokens, not the flat size, key it: the stream is the same, the decode rows beside a prompt may differ
    by timing)."""
    rows = _read(d / "serve_kernels.csv")
    warm = {_i(r["prefill_tokens"]) + _i(r["decode_seqs"]) for r in rows if r["phase"] == "warmup"}
    new: dict[tuple[str, int], int] = {}
    for r in rows:
        if r["phase"] != "run" or _i(r["prefill_tokens"]) <= 0 or _i(r["graph_batch"]) != 0:
            continue
        key = (r["run_id"], _i(r["prefill_tokens"]))
        new.setdefault(key, sum(is_gemm_kernel(n) for n in (r["new_kernel_names"] or "").split(";") if n))
    return warm, new


def pair_points(plain: Path, trace: Path) -> list[dict]:
    """The fit's points of one (unprofiled, profiled) process pair (the module doc)."""
    runs = _read(plain / "serve_load.csv")
    its = _read(plain / "serve_iterations.csv")
    warm_pass = max(_i(r.get("warm_shapes")) for r in runs)
    warm_sizes, new = traced(trace)
    again = [it for it in its if it["run_id"].endswith("again") and _i(it["prefill_tokens"]) > 0
             and _i(it["graph_batch"]) == 0]
    a = np.array([[1.0, float(it["prefill_tokens"]), float(it["decode_seqs"])] for it in again])
    coef, *_ = np.linalg.lstsq(a, np.array([float(it["duration_s"]) for it in again]), rcond=None)
    met = set(range(1, warm_pass + 1)) | warm_sizes
    out = []
    for run in [r["run_id"] for r in runs]:
        for it in (x for x in its if x["run_id"] == run):
            if _i(it["graph_batch"]) != 0:
                continue
            p, dec = _i(it["prefill_tokens"]), _i(it["decode_seqs"])
            size = p + dec
            if p > 0 and not run.endswith("again") and (run, p) in new:
                out.append({"run": run, "size": size, "kernels": new.pop((run, p)), "new_size": int(size not in met),
                            "excess_s": float(it["duration_s"]) - (coef[0] + coef[1] * p + coef[2] * dec)})
            met.add(size)
    return out


def fit(root: Path | str | None = None) -> dict:
    """kernel_s and lookup_s (the module doc) from the probe's records on the H200."""
    root = Path(rec.records_root() if root is None else root)
    pts, per, warmup = [], {}, set()
    for plain, trace in PAIRS:
        a, t = root / CARD / PROBE / plain, root / CARD / PROBE / trace
        if not (csv_exists(a / "serve_iterations.csv") and csv_exists(t / "serve_kernels.csv")):
            continue
        warmup |= traced(t)[0]
        got = pair_points(a, t)
        pts += got
        per[plain] = {"steps": len(got), "new_kernels": sum(g["kernels"] for g in got),
                      "new_sizes": sum(g["new_size"] for g in got),
                      "excess_median_s": float(np.median([g["excess_s"] for g in got]))}
    if len(pts) < 3:
        return {}
    x = np.array([[g["kernels"], g["new_size"]] for g in pts], dtype=float)
    y = np.array([g["excess_s"] for g in pts])
    b, *_ = np.linalg.lstsq(x, y, rcond=None)
    r = y - x @ b
    se = np.sqrt(np.diag((r @ r / (len(y) - 2)) * np.linalg.inv(x.T @ x)))
    pinned = bool(b[1] > PINNED_SE * se[1])
    # rule amendment 1 (C-k judged): lookup_s 0 whatever the fit; lookup_fit_s and lookup_pinned report the fit
    return {"kernel_s": {CARD: float(b[0])}, "lookup_s": {CARD: float(b[1]) if pinned and not AMENDED_NO_LOOKUP else 0.0},
            "amendment": "docs/notes/s32kern_rule.md amendment 1: the judged candidate is C-k (lookup_s 0); lookup_fit_s "
                         "is the probe's fit, reported",
            "warmup_sizes": sorted(warmup), "lookup_fit_s": float(b[1]), "se_s": [float(s) for s in se], "lookup_pinned": pinned, "points": len(pts),
            "processes": per,
            "source": "python -m calibration.s32kern fit (docs/notes/s32kern_rule.md): the s32cold probe's records "
                      "(calibration/measurements/h200/s32cold/probe/{timed,eager,trace,trace-eager}/bench-small/, "
                      "fitting records)"}


# ---- the judgement (docs/notes/s32kern_rule.md) ------------------------------------------------------------------
FRESH = "s32kern/set"   # set N's records: <gpu>/s32kern/set/<model>/ (real/campaigns/s32kern.sh)
FRESH_MODELS = ("qwen2moe-mla-slice", "mixtral-mla-slice", "v3-slice-1l", "v3-slice-2l")
FRESH_RUNS = 3 * len(FRESH_MODELS)
MORE_CHECKS = 3        # C1
SET_K = (s32c.FRESH, s32c.FRESH_MODELS)
GUARD_LABELS = {**s32c.GUARD_LABELS, "K": (s32c.FRESH,)}
GUARDED = ("I", "J", "L", "P", "Q", "K")   # G2: these sets no fewer checks (the others reported)
JUDGED = "C-k"   # rule amendment 1


def candidate(lookup: bool = False):
    """The judged candidate (rule amendment 1: C-k, s32kern_fit.json's lookup_s = 0) on (serve_load_validation
    .sizes_run_before hands a warmed one-GPU H200 run's replay its ColdKernels); with `lookup` the rule's first C
    (lookup_s = the probe's lookup_fit_s; reported, no criterion)."""
    stack = cj.patched(engine, ADOPT_COLD_KERNELS=True)
    if lookup:
        base = slv.cold_kernel_fit()
        fit = {**base, "lookup_s": {CARD: base["lookup_fit_s"]}}
        stack.enter_context(mock.patch.object(slv, "cold_kernel_fit", lambda path=None: fit))
    return stack


def seen_rows(root: Path | str | None = None) -> list[dict]:
    """Sets A-M, O, P, Q (calibration.s32cold.seen_rows) and set K (s32cold2), replayed under the current setting."""
    return cj.seen_rows(root, s32c.seen_rows, SET_K)


def guard_criteria(off: list[dict], on: list[dict]) -> dict:
    """G2: sets I, J, L, P, Q and K each no fewer checks met under C; every set's counts reported."""
    return cj.guard_criteria(off, on, GUARD_LABELS, GUARDED)


def criteria(out: dict) -> dict:
    """C1, C2 (set N), G1, G2, G3: calibration.s32cold.criteria's with C's names."""
    return cj.criteria(out, judged=JUDGED, fresh_runs=FRESH_RUNS, more_checks=MORE_CHECKS, guarded=GUARDED,
                       names=("C1_three_more_checks_lower_median", "C2_early_ttft_p50_no_fewer_lower_median"),
                       early=s32c.EARLY)


def judge(root: Path | str | None = None, committed_sets: bool = True, fresh=(FRESH, FRESH_MODELS),
          guards: bool = True) -> dict:
    """serve_graph_ops.judge with C: set N (`fresh`), sets A-M, O, P, Q, K, the committed sets; criteria, verdict."""
    return cj.judge(root, committed_sets, fresh, guards, candidate=candidate, seen=seen_rows, guard=guard_criteria,
                    fresh_runs=FRESH_RUNS, judged=JUDGED, criteria=criteria)


def by_model(rows: list[dict]) -> dict:
    return {m: list(seh.checks([r for r in rows if r["model"] == m])) for m in sorted({r["model"] for r in rows})}


def screen(root: Path | str | None = None, sets=(("N", (FRESH, FRESH_MODELS)), ("K", SET_K), ("Q", s32c.SET_Q)),
           settings=None, position=None) -> dict:
    """Sets (set N, K, Q) in force, under C-k (judged) and C with the look-up: all checks, by position, by model, TTFT
    P50 by run (no criterion). A later round passes its own `settings` ((label, context) pairs) and `position` (a set's
    key and rows: its rows by position; s32cold.by_position by default)."""
    root = rec.records_root() if root is None else root
    settings = settings or (("in force", ExitStack), (JUDGED, candidate), ("C with look-up", lambda: candidate(True)))
    position = position or (lambda key, rows: s32c.by_position(rows))
    out: dict = {}
    for label, ctx in settings:
        with ctx():
            for key, (name, models) in sets:
                rows = seh.set_rows(name, models, root)
                if rows:
                    out.setdefault(key, {})[label] = {
                        "all": list(seh.checks(rows)), "by_position": position(key, rows), "by_model": by_model(rows),
                        "ttft_p50": {r["run_id"]: r["ttft_p50_s_rel_error"] for r in rows}}
    return out


def map_check(root: Path | str | None = None) -> dict:
    """The bench-small map's count of GEMM kernels first launched at each traced cold / fresh prompt step of the probe
    against the trace's own count (no criterion: does F.linear's map name the engine's kernels?)."""
    root = Path(rec.records_root() if root is None else root)
    kmap = slv.cold_kernel_map("bench-small", root)
    fit = fit_constants()
    if kmap is None or not fit:
        return {}
    out = {}
    for _, trace in PAIRS:
        rows = _read(root / CARD / PROBE / trace / "serve_kernels.csv")
        warm = max((_i(r["prefill_tokens"]) for r in rows if r["phase"] == "warm_pass"), default=0)
        met = set(range(1, warm + 1)) | set(fit.get("warmup_sizes", ()))
        launched = frozenset().union(*(kmap[n] for n in met if n < len(kmap)))
        pairs = []
        for r in rows:
            if r["phase"] != "run" or _i(r["graph_batch"]) != 0:
                continue
            n = _i(r["prefill_tokens"]) + _i(r["decode_seqs"])
            new = (kmap[n] if n < len(kmap) else frozenset()) - launched
            launched |= new
            if _i(r["prefill_tokens"]) > 0 and not r["run_id"].endswith("again"):
                got = sum(is_gemm_kernel(k) for k in (r["new_kernel_names"] or "").split(";") if k)
                pairs.append((len(new), got))
        out[trace] = {"steps": len(pairs), "map_new": sum(a for a, _ in pairs), "traced_new": sum(b for _, b in pairs),
                      "steps_equal": sum(a == b for a, b in pairs)}
    return out


def fit_constants() -> dict:
    return slv.cold_kernel_fit()


def _print_screen(got: dict) -> None:
    for key, v in got.items():
        for label, x in v.items():
            print(f"set {key} {label}: {x['all'][0]} met, median {x['all'][1]:.2%}; " + "; ".join(
                f"{p} {y['all'][0]} met {y['all'][1]:.2%} (TTFT P50 {y['ttft_p50'][0]}, {y['ttft_p50'][1]:.2%})"
                for p, y in x["by_position"].items()) + "; by model " + ", ".join(
                f"{m} {c[0]} {c[1]:.1%}" for m, c in x["by_model"].items()))


def main(argv: list[str] | None = None) -> int:
    args = sjc.parse(argv, "calibration.s32kern", __doc__, ("judge", "guards", "fit", "screen", "mapcheck"),
                     "fit: C's constants from the probe; screen: sets N, K, Q in force / C / C-k; mapcheck: the "
                     "bench-small map against the probe's trace; guards: the seen and committed sets under C; judge: "
                     "set N, guards, verdict", json_help=cj.JSON_HELP)
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if args.what == "fit":
        got = fit(root)
        if not got:
            print(f"no probe records under {root}/{CARD}/{PROBE}/", file=sys.stderr)
            return 2
        print(f"{CARD}: kernel_s {got['kernel_s'][CARD] * 1e3:.3f} ms, lookup_s {got['lookup_s'][CARD] * 1e3:.3f} ms "
              f"(fit {got['lookup_fit_s'] * 1e3:.3f}, pinned {got['lookup_pinned']}; {got['points']} steps)")
        entry.write_json(args.json, got, sort_keys=True)
        return 0
    if not json_exists(slv.COLD_KERNEL_FIT):
        print(f"no {slv.COLD_KERNEL_FIT.name}: run `python -m calibration.s32kern fit --json "
              f"calibration/{slv.COLD_KERNEL_FIT.name}`", file=sys.stderr)
        return 2
    if args.what in ("screen", "mapcheck"):
        got = screen(root) if args.what == "screen" else map_check(root)
        if args.what == "screen":
            _print_screen(got)
        else:
            print(json.dumps(got, indent=1, sort_keys=True))
        entry.write_json(args.json, got, sort_keys=True)
        return 0
    if args.json and prereg.refuses_uncommitted_record():   # the file names the commit of the code that computed it
        return 2
    got = cj.judged(args, root, (FRESH, FRESH_MODELS), "set N", judge)
    if got is None:
        return entry.EXIT_INVALID
    out, fresh = got
    extra = {"by_model": {str(c or "in force"): by_model(out["rows"][c]["J"]) for c in (None, JUDGED)}}
    return s32c.report_judgement(out, args, fresh, "set N", "C", "calibration.s32kern", JUDGED, extra)

if __name__ == "__main__":
    sys.exit(main())

"""Session s31look (issue 15; docs/notes/s31look_rule.md, committed before its judging records existed): the candidate
L, `twin.serving.engine.ADOPT_LOOKUP_PER_SHAPE`. A warmed engine process's flat sizes between its warm pass and its
token budget (counted met by the twin in force) pay, the first time an eager iteration runs one, cuBLASLt's heuristics
look-ups: one per distinct dense GEMM shape whose row count is the size (real/serve/gemmshapes.py, per model; the
experts' grouped GEMM not counted), each at the card's fixed lookup_s. No fade, no idle / busy split, no post-idle term.

lookup_s comes from the first-met probe's fitting records (real/serve/firstmet.py, s30serve) alone (`fit`): per card,
  lookup_s = median, over every probed model's fresh sizes in the second half of the probe's order (its later 16 of
             32), of (first - repeat duration_s) / the model's shape count,
(the first half left out: a process's early new sizes also launch GEMM kernels for the first time, s16srv / s17srv's
~2.6 ms each, which stop once the configurations are loaded; the look-up never stops: s30blas). Judged on set Q
(s31look) under guards on every committed held-out set (sets A-M, O, P, the committed sets, issue 15's held-out checks).

    python -m calibration.serve_lookup fit [--json calibration/s31look_fit.json]
    python -m calibration.serve_lookup guards [--json FILE]      # sets A-M, O, P and the committed sets (no set Q)
    python -m calibration.serve_lookup [--json calibration/s31look_judgement.json]   # set Q, guards, verdict
"""

from __future__ import annotations

import csv
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np

from calibration import entry, prereg
from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration import serve_first_met as sfm
from calibration import serve_graph_ops as sgo
from calibration import serve_idle_wake as siw
from calibration import serve_load_validation as slv
from calibration import serve_warm_budget as swb
from calibration.records_io import csv_exists, json_exists, open_csv, read_json
from twin.serving import engine

NAME = "s31look"
# set Q (real/serve/plans.py S31Q_PLANS): two probed models and three the probe never ran
FRESH_MODELS = ("bench-small", "v2-lite-slice", "qwen3moe-mla-slice", "qwen2moe-mla-slice", "v3-slice-2l")
FRESH_RUNS = 3 * len(FRESH_MODELS)
JUDGED = "L"
SHAPES_FILE = Path(__file__).resolve().parent / "s31look_shapes.json"   # real/serve/gemmshapes.py's counts
SEEN_P = (sfm.NAME, sfm.FRESH_MODELS)   # set P (s30serve): committed since, a guard here
GUARD_LABELS = {**sfm.GUARD_LABELS, "P": (sfm.NAME,)}
POOL_LEFT_OUT = (*sfm.POOL_LEFT_OUT, "P")
TTFT = siw.TTFT
MORE_CHECKS = 3   # L1: set Q's checks met under L at least this many more than in force
LATE_FROM = 16    # the probe's fresh sizes from this index in its order (of 32) fit lookup_s


def shapes(path: Path = SHAPES_FILE) -> dict[str, int]:
    """{model: distinct size-dependent dense GEMM shapes of a prompt step} (real/serve/gemmshapes.py's output)."""
    return {m: int(v["shapes"]) for m, v in read_json(path).items()}


def probe_per_shape(rows: list[dict], n_shapes: int) -> list[float]:
    """One model's probe: (first - repeat duration_s) / n_shapes per fresh size, in the probe's order."""
    first = sorted((int(r["order"]), int(r["size"]), float(r["duration_s"])) for r in rows if r["kind"] == "first")
    rep = {int(r["size"]): float(r["duration_s"]) for r in rows if r["kind"] == "repeat"}
    return [(d - rep[n]) / n_shapes for _, n, d in first if n in rep]


def fit(root: Path | str | None = None, shape_counts: dict | None = None) -> dict:
    """Per card with probe records: lookup_s (the module doc), with the per-model medians (all sizes, early, late)
    beside it; and the shape counts the twin reads."""
    root = Path(rec.records_root() if root is None else root)
    counts = shapes() if shape_counts is None else shape_counts
    out = {"lookup_s": {}, "per_model": {}, "shapes": counts}
    for card in sfm.CARDS:
        d = root / card / sfm.PROBE_DIR
        if not d.is_dir():
            continue
        late = []
        for m in sorted(p.name for p in d.iterdir() if p.is_dir()):
            if m not in counts or not csv_exists(d / m / "firstmet_steps.csv"):
                continue
            with open_csv(d / m / "firstmet_steps.csv") as f:
                per = probe_per_shape(list(csv.DictReader(f)), counts[m])
            late += per[LATE_FROM:]
            out["per_model"].setdefault(card, {})[m] = {
                "shapes": counts[m], "sizes": len(per), "all_median_s": float(np.median(per)),
                "early_median_s": float(np.median(per[:LATE_FROM])), "late_median_s": float(np.median(per[LATE_FROM:]))}
        if late:
            out["lookup_s"][card] = max(0.0, float(np.median(late)))
    out["source"] = ("python -m calibration.serve_lookup fit (docs/notes/s31look_rule.md): real/serve/firstmet.py's probe "
                     "records (s30serve, fitting records) and real/serve/gemmshapes.py's counts")
    return out


def candidate(exposed: bool = False):
    """L on: the switch (serve_load_validation.warm_pass_pairs hands the replays lookup_charges), as the rule's commit
    ran it (no exposure); `exposed`: the void amendment 1 (the charge exposed as the table's own stall), evidence only."""
    stack = ExitStack()
    stack.enter_context(mock.patch.object(engine, "ADOPT_LOOKUP_PER_SHAPE", True))
    stack.enter_context(mock.patch.object(engine, "LOOKUP_HOST_EXPOSED", exposed))
    return stack


POSITIONS = ("poisson-early", "closed-c9", "poisson-late")   # set Q's runs in their process's order


def evidence(root: Path | str | None = None) -> dict:
    """No criterion. Set Q in force, under L and under the void amendment 1 (L exposed): checks met and median |error|
    over all checks, the TTFT checks and by position in the process; the seen sets (A-M, O, P) under L exposed; and the
    nocache run's measured TTFT / TPOT P50 beside set Q's bench-small runs."""
    root = Path(rec.records_root() if root is None else root)
    out: dict = {"set_q": {}, "seen_exposed": {}, "nocache": {}}
    for label, ctx in (("in force", ExitStack), (JUDGED, candidate), (f"{JUDGED} exposed", lambda: candidate(True))):
        with ctx():
            rows = seh.set_rows(NAME, FRESH_MODELS, root)
            q = {"all": list(seh.checks(rows)), "ttft": list(seh.checks(rows, TTFT))}
            for pos in POSITIONS:
                sub = [r for r in rows if pos in r["run_id"]]
                q[pos] = {"all": list(seh.checks(sub)), "ttft": list(seh.checks(sub, TTFT))}
            q["runs"] = {r["run_id"]: {k: r[f"{k}_rel_error"] for k in seh.FIGURES} for r in rows}
            out["set_q"][label] = q
    with candidate(True):
        on = seen_rows(root)
    off = seen_rows(root)
    g = guard_criteria(off, on)
    out["seen_exposed"] = {k: [list(v[0]), list(v[1])] for k, v in g["sets"].items()}
    for sub in ("", "nocache/"):
        d = root / "h200" / NAME / f"{sub}bench-small"
        with open_csv(d / "serve_load.csv") as f:
            out["nocache"][sub.rstrip("/") or "cache on"] = {
                r["run_id"]: {k: float(r[k]) for k in ("ttft_p50_s", "ttft_p99_s", "tpot_p50_s", "output_tokens_per_s")}
                for r in csv.DictReader(f)}
    return out


def seen_rows(root: Path | str | None = None) -> list[dict]:
    """Sets A-M and O (serve_first_met.seen_rows) and set P (s30serve), replayed under the current setting."""
    root = rec.records_root() if root is None else root
    return sfm.seen_rows(root) + seh.set_rows(SEEN_P[0], SEEN_P[1], root)


def guard_criteria(off: list[dict], on: list[dict]) -> dict:
    """G2: each of sets A-M, O and P no fewer checks met; sets A-H pooled reported (with the median)."""
    with mock.patch.object(swb, "GUARD_LABELS", GUARD_LABELS), mock.patch.object(swb, "POOL_LEFT_OUT", POOL_LEFT_OUT):
        out = swb.guard_criteria(off, on)
    crit = {f"G2_set_{k}_no_fewer": v[1][0] >= v[0][0] for k, v in out["sets"].items()}
    return {**out, "criteria": crit, "met": bool(crit) and all(crit.values())}


def criteria(out: dict) -> dict:
    """L1: set Q's checks met under L at least MORE_CHECKS more and a lower median |error|; L2: its TTFT checks (P50,
    P99) more met and a lower median |TTFT error|; G1: no held-out check of issue 15's four folders lost; G2: each of
    sets A-M, O and P no fewer checks; G3: the committed held-out set and the held-out set with the input no fewer."""
    with mock.patch.object(sfm, "FRESH_RUNS", FRESH_RUNS), mock.patch.object(sfm, "JUDGED", JUDGED):
        got = sfm.criteria(out)
    crit = {k.replace("P1_", "L1_").replace("P2_", "L2_"): v for k, v in got["criteria"].items()}
    return {**got, "criteria": crit}


def judge(root: Path | str | None = None, committed_sets: bool = True, fresh=(NAME, FRESH_MODELS),
          guards: bool = True) -> dict:
    """serve_graph_ops.judge with L: set Q (`fresh`), sets A-M, O and P, the committed sets; the criteria, verdict."""
    root = rec.records_root() if root is None else root
    out = sgo.judge(root, committed_sets, fresh, guards, candidate=candidate, seen=seen_rows, guard=guard_criteria,
                    fresh_runs=FRESH_RUNS, judged=JUDGED)
    got = criteria(out)
    out["result"].update(criteria=got["criteria"], passes=got["passes"], ttft=got["ttft"], lost=got["lost"])
    out["adopt"] = JUDGED if got["passes"] and fresh else None
    return out


def _print_fit(got: dict) -> None:
    for card, models in got["per_model"].items():
        for m, v in models.items():
            print(f"{card} {m}: {v['shapes']} shapes, per look-up median all {v['all_median_s'] * 1e3:.3f} ms, early "
                  f"{v['early_median_s'] * 1e3:.3f}, late {v['late_median_s'] * 1e3:.3f} ({v['sizes']} sizes)")
        print(f"{card} lookup_s {got['lookup_s'][card] * 1e3:.3f} ms")


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.serve_lookup", __doc__)
    ap.add_argument("what", nargs="?", choices=("judge", "guards", "fit", "evidence"), default="judge",
                    help="fit: lookup_s from the probe records; guards: sets A-M, O, P and the committed sets under L "
                         "(no set Q); judge: set Q, the guards and the verdict; evidence: set Q by position, the void "
                         "amendment 1 on set Q and the seen sets, the nocache run (no criterion)")
    ap.add_argument("--no-committed", action="store_true", help="leave out the committed sets (no verdict then)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write the fit or the judgement")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    if args.what == "fit":
        got = fit(root)
        if not got["lookup_s"]:
            print(f"no probe records under {root}/<card>/{sfm.PROBE_DIR}/<model>/", file=sys.stderr)
            return 2
        _print_fit(got)
        entry.write_json(args.json, got, sort_keys=True)
        return 0
    if args.json and prereg.refuses_uncommitted_record():   # the file names the commit of the code that computed it
        return 2
    if not json_exists(slv.LOOKUP_FIT):
        print(f"no {slv.LOOKUP_FIT.name}: run `python -m calibration.serve_lookup fit --json "
              f"calibration/{slv.LOOKUP_FIT.name}` first", file=sys.stderr)
        return 2
    if args.what == "evidence":
        got = evidence(root)
        for label, q in got["set_q"].items():
            print(f"set Q {label}: {q['all'][0]} met, median {q['all'][1]:.2%}; TTFT {q['ttft'][0]} met, median "
                  f"{q['ttft'][1]:.2%}; " + "; ".join(f"{p} {q[p]['all'][0]} met {q[p]['all'][1]:.2%} (TTFT {q[p]['ttft'][0]}, "
                                                    f"{q[p]['ttft'][1]:.2%})" for p in POSITIONS))
        for k, (a, b) in got["seen_exposed"].items():
            print(f"set {k} in force -> {JUDGED} exposed: {a[0]} -> {b[0]} met, median {a[1]:.2%} -> {b[1]:.2%}")
        for label, runs in got["nocache"].items():
            for run, v in runs.items():
                print(f"bench-small {label} {run}: TTFT P50 {v['ttft_p50_s'] * 1e3:.2f} ms, P99 {v['ttft_p99_s'] * 1e3:.2f} ms,"
                      f" TPOT P50 {v['tpot_p50_s'] * 1e3:.3f} ms, {v['output_tokens_per_s']:.0f} out tok/s")
        if args.json:
            prereg.write_code_record(args.json, f"python -m calibration.serve_lookup evidence --json {args.json.as_posix()}",
                                     {"evidence_only": True, **got})
        return 0
    fresh = (NAME, FRESH_MODELS) if args.what == "judge" else None
    if fresh and not seh.set_rows(NAME, FRESH_MODELS, root):
        print(f"no set Q records under {root}/<gpu>/{NAME}/<model>/", file=sys.stderr)
        return 2
    out = judge(root, committed_sets=not args.no_committed, fresh=fresh)
    return siw.report_ttft_judgement(out, args, fresh, "Q", "L", "calibration.serve_lookup", JUDGED)


if __name__ == "__main__":
    sys.exit(main())

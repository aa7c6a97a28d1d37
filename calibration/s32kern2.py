"""Session s32kern2 (issue 15, round 3 of the first-used-kernel charge; docs/notes/s32kern2.md): candidate C-kx,
`twin.serving.engine.ADOPT_COLD_KERNELS_EXPOSED` (off, no rule: judged on nothing fresh). s32kern's C-k (1.874 ms per
GEMM kernel a warmed one-GPU H200 process launches for the first time, counted on the model's kernel map) met its
criteria on set N but lost a closed-loop check on each of guard sets I and J. C-kx pays C-k's charge only as far as the
host is the iteration's critical path: real/serve launches a whole forward and waits once at its end, so the host time
hides behind the GPU work the forward keeps queued ahead of the host, exposed = max(0, charge - max(0, kernels_s -
host_s)) with the engine table's own GPU and fixed launch terms of that iteration (twin.serving.timing
.exposed_stall_s with the backlog). No fitted figure.

    python -m calibration.s32kern2 screen [--json calibration/s32kern2_screen.json]
        sets N, K, Q (by position) and the guard sets (I, J, L, P, Q, K; every seen set reported) in force, under C-k
        and under C-kx: the screen that decided no fresh set was run (set J's loop check stays lost under C-kx)
    python -m calibration.s32kern2 loopcheck [--json FILE]
        the traced processes of real/campaigns/s32kern2.sh (calibration/measurements/h200/s32kern2/trace/<model>/):
        per run, the eager steps' GEMM kernels first launched as the trace counts them against the kernel map's count
        (the s32kern map of the model, the process's warm-up and warm-pass sizes launched first), and the profiled
        dense GEMM host time of the steps that launched new kernels against those that did not; and per unprofiled
        closed loop C-k lost (sets J, I; today's repeat of J's) the measured excess of the steps the map says launch
        new kernels over the loop's own no-new-kernel fit, against C-k's charge (no criterion)
"""

from __future__ import annotations

import csv
import json
import sys
from contextlib import ExitStack
from pathlib import Path
from unittest import mock

import numpy as np

from calibration import entry
from calibration import records as rec
from calibration import s32cold as s32c
from calibration import s32kern as s32k
from calibration import serve_eager_host as seh
from calibration import serve_load_validation as slv
from calibration.records_io import csv_exists, json_exists, open_csv
from twin.serving import engine

NAME = "s32kern2"
CARD = "h200"
TRACED = ("v2-lite-slice", "v3-slice-1l", "mixtral-mla-slice")
SCREEN_FILE = Path(__file__).resolve().parent / "s32kern2_screen.json"
NAMES_CAP = 6   # real/serve/coldtrace.py keeps the first 6 new kernel names of an iteration (new_kernels counts all)


def candidate():
    """C-kx: C-k (s32kern.candidate) with its charge exposed only where the host is the critical path."""
    stack = s32k.candidate()
    stack.enter_context(mock.patch.object(engine, "ADOPT_COLD_KERNELS_EXPOSED", True))
    return stack


LABELS = (("in force", ExitStack), ("C-k", s32k.candidate), ("C-kx", candidate))


def _position(rows: list[dict]) -> dict:
    return {p: {"all": list(y["all"]), "ttft_p50": list(y["ttft_p50"])} for p, y in s32c.by_position(rows).items()}


def screen(root: Path | str | None = None, guards: bool = True) -> dict:
    """Sets N, K, Q in force / C-k / C-kx (all checks, by position), and with `guards` every seen set's checks met and
    G2's criteria (sets I, J, L, P, Q, K no fewer than in force) for C-k and C-kx."""
    root = rec.records_root() if root is None else root
    sets = (("N", (s32k.FRESH, s32k.FRESH_MODELS)), ("K", s32k.SET_K), ("Q", s32c.SET_Q))
    out: dict = {"sets": {}, "guards": {}}
    seen: dict = {}
    for label, ctx in LABELS:
        with ctx():
            for key, (name, models) in sets:
                rows = seh.set_rows(name, models, root)
                if rows:
                    out["sets"].setdefault(key, {})[label] = {"all": list(seh.checks(rows)), "by_position": _position(rows)}
            if guards:
                seen[label] = s32k.seen_rows(root)
    for label in ("C-k", "C-kx") if guards else ():
        g = s32k.guard_criteria(seen["in force"], seen[label])
        out["guards"][label] = {"sets": {k: [v[0][0], v[1][0]] for k, v in g["sets"].items()},
                                "criteria": g["criteria"]}
    return out


def _read(path: Path) -> list[dict]:
    with open_csv(path) as f:
        return list(csv.DictReader(f))


def loop_check(root: Path | str | None = None, models=TRACED) -> dict:
    """Per traced model and run: eager steps, the trace's new GEMM kernels (named; a lower bound where an iteration
    launched more than NAMES_CAP new kernels, `capped` steps) and all new kernels, the map's count of new GEMM kernels
    on the same steps, and the profiled dense GEMM host time (median, ms) of steps with / without a new kernel."""
    root = Path(rec.records_root() if root is None else root)
    fit = slv.cold_kernel_fit()
    out: dict = {}
    for model in models:
        path = root / CARD / NAME / "trace" / model / "serve_kernels.csv"
        kmap = slv.cold_kernel_map(model, root)
        if not csv_exists(path):
            continue
        rows = _read(path)
        warm = {s32k._i(r["prefill_tokens"]) + s32k._i(r["decode_seqs"]) for r in rows if r["phase"] == "warmup"}
        wp = max((s32k._i(r["prefill_tokens"]) for r in rows if r["phase"] == "warm_pass"), default=0)
        met = set(range(1, wp + 1)) | warm | set(fit.get("warmup_sizes", ()))
        launched = (frozenset().union(*(kmap[n] for n in met if n < len(kmap))) if kmap is not None else frozenset())
        per: dict = {}
        for r in rows:
            if r["phase"] != "run" or s32k._i(r["graph_batch"]) != 0:
                continue
            n = s32k._i(r["prefill_tokens"]) + s32k._i(r["decode_seqs"])
            new = ((kmap[n] if n < len(kmap) else frozenset()) - launched) if kmap is not None else frozenset()
            launched |= new
            names = [x for x in (r["new_kernel_names"] or "").split(";") if x]
            gemm = sum(s32k.is_gemm_kernel(x) for x in names)
            d = per.setdefault(r["run_id"], {"steps": 0, "prompt_steps": 0, "map_new": 0, "traced_gemm_new": 0,
                                             "traced_new_all": 0, "capped": 0, "steps_equal": 0, "_with": [],
                                             "_without": []})
            d["steps"] += 1
            d["prompt_steps"] += s32k._i(r["prefill_tokens"]) > 0
            d["map_new"] += len(new)
            d["traced_gemm_new"] += gemm
            d["traced_new_all"] += s32k._i(r["new_kernels"])
            d["capped"] += s32k._i(r["new_kernels"]) > NAMES_CAP
            d["steps_equal"] += len(new) == gemm
            (d["_with"] if gemm else d["_without"]).append(float(r["gemm_s"] or 0.0))
        for d in per.values():
            w, wo = d.pop("_with"), d.pop("_without")
            d["gemm_host_ms_with_new"] = [len(w), float(np.median(w)) * 1e3 if w else None]
            d["gemm_host_ms_without"] = [len(wo), float(np.median(wo)) * 1e3 if wo else None]
        out[model] = {"map": kmap is not None, "runs": per}
    return out


# the unprofiled closed loops whose checks C-k lost (set J's v2-lite c18, set I's v3-slice-1l c14) and today's repeat
LOOPS = (("s27serve", "v2-lite-slice"), ("s26start2", "v3-slice-1l"), ("s32kern2/timed", "v2-lite-slice"))


def loop_excess(root: Path | str | None = None, loops=LOOPS) -> dict:
    """Per unprofiled process's closed-loop run: its eager prompt steps walked in order with the map (the launched set
    from the warm pass 1..W, the fit's warm-up sizes and the process's earlier runs' eager sizes), a least-squares fit
    of duration on (1, prompt tokens, decode rows) over the steps that launch no new kernel, and the steps that do:
    their map kernels, their measured excess over that fit (ms) and C-k's charge (kernel_s x kernels, ms)."""
    root = Path(rec.records_root() if root is None else root)
    fit = slv.cold_kernel_fit()
    kernel_s = fit.get("kernel_s", {}).get(CARD, 0.0)
    out: dict = {}
    for name, model in loops:
        d = root / CARD / name / model
        kmap = slv.cold_kernel_map(model, root)
        if kmap is None or not csv_exists(d / "serve_iterations.csv"):
            continue
        runs = _read(d / "serve_load.csv")
        its = _read(d / "serve_iterations.csv")
        warm = max(s32k._i(r.get("warm_shapes")) for r in runs)
        met = set(range(1, warm + 1)) | set(fit.get("warmup_sizes", ()))
        launched = frozenset().union(*(kmap[n] for n in met if n < len(kmap)))
        for run in [r["run_id"] for r in runs]:
            pts = []
            for it in (x for x in its if x["run_id"] == run and s32k._i(x["graph_batch"]) == 0):
                p, dec = s32k._i(it["prefill_tokens"]), s32k._i(it["decode_seqs"])
                n = p + dec
                new = (kmap[n] if n < len(kmap) else frozenset()) - launched
                launched |= new
                if p > 0:
                    pts.append((p, dec, float(it["duration_s"]), len(new)))
            if "-closed-" not in run or len(pts) < 8:
                continue
            x = np.array([[1.0, p, dec] for p, dec, _, _ in pts])
            y = np.array([t for _, _, t, _ in pts])
            k = np.array([c for *_, c in pts])
            b, *_ = np.linalg.lstsq(x[k == 0], y[k == 0], rcond=None)
            res = y - x @ b
            out[f"{name}/{model}/{run}"] = {
                "prompt_steps": len(pts), "steps_with_new": int((k > 0).sum()), "map_kernels": int(k.sum()),
                "excess_ms": float(res[k > 0].sum() * 1e3), "ck_charge_ms": float(k.sum() * kernel_s * 1e3),
                "resid_sd_ms_no_new": float(res[k == 0].std() * 1e3),
                "steps": [[int(c), round(float(r) * 1e3, 2)] for c, r in zip(k, res) if c]}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.s32kern2", __doc__)
    ap.add_argument("what", nargs="?", default="screen", choices=["screen", "loopcheck"],
                    help="screen: sets N, K, Q and the guard sets in force / C-k / C-kx; loopcheck: the traced loops' "
                         "first-launched kernels against the maps")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write the figures")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    root = rec.records_root()
    if not json_exists(slv.COLD_KERNEL_FIT):
        print(f"no {slv.COLD_KERNEL_FIT.name}", file=sys.stderr)
        return 2
    got = screen(root) if args.what == "screen" else {"traced": loop_check(root), "unprofiled_loops": loop_excess(root)}
    if not got or (args.what == "loopcheck" and not got["traced"]):
        print(f"no records for {args.what} under {root}", file=sys.stderr)
        return 2
    if args.what == "screen":
        for key, v in got["sets"].items():
            for label, x in v.items():
                print(f"set {key} {label}: {x['all'][0]} met, median {x['all'][1]:.2%}; " + "; ".join(
                    f"{p} {y['all'][0]} met {y['all'][1]:.2%} (TTFT P50 {y['ttft_p50'][0]}, {y['ttft_p50'][1]:.2%})"
                    for p, y in x["by_position"].items()))
        for label, g in got["guards"].items():
            print(f"{label} seen sets (in force, {label}): " + ", ".join(f"{k} {a}->{b}" for k, (a, b) in g["sets"].items()))
            print(f"{label} G2: " + ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in g["criteria"].items()))
    else:
        print(json.dumps(got, indent=1, sort_keys=True))
    if args.json:
        entry.write_json(args.json, {**got, "command": f"python -m calibration.s32kern2 {args.what}"}
                         if args.what == "screen" else got, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

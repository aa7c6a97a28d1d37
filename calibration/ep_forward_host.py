"""s27epfwd (issue 13, docs/notes/s27epfwd_rule.md): the EP forward's host seconds a launch when a run is priced
before it runs, pooled over the committed leases' fitting records.

What an EP forward's host time per MoE layer consists of (real/ep.py, real/model.py; the twin's op list,
calibration.whole_step.ep_moe_ops with calibration.predict.with_host_terms): the attention, gate and sort launches,
dispatch's counts all-to-all call (EP term `ep_counts_a2a`), two blocking `.tolist()` (the host waits for the GPU and
the peer; `ep_send_sync`, `ep_recv_sync`), the row gather, the token all-to-all call (`ep_tokens_a2a`), the
permutation, the experts' two grouped GEMMs (one launch each: no per-expert launch, no host work that grows with the
expert count, top-k or tokens), combine's un-permute, all-to-all and un-sort; every launch at one host rate. Solved
per fitting op (pipeline.solved_host_rate_s: the rate at which the twin's issue model gives the op's host interval,
its syncs' waits included), that rate moves from lease to lease more than from model to model within one run:
on `h200x4` the committed folder's own lease gives 17.8 us a launch, nine other parts 20-30 us; the Qwen slices'
pp2ep2 forwards of s26pipeop / s26pipeop2 (seq 2048-3072, every split, diagnostic) solve to 25-32 us, the Mixtral
slice's in the same run 24-29 us. The twin prices every later 4-GPU run at the committed folder's lease (17.8 us),
which is why its forwards come out ~8 ms short a 4-layer stage there (docs/notes/s26pipeop3.md). The candidate F
prices them at the median lease instead: each committed part's median fitting EP forward rate, the median over
the parts of a `<gpu>x<n>` kind (EP_FWD_POOLED_HOST_S in calibration.pipeline, calibration/s27epfwd_fit.json,
fixed at f6fb6cab: a later `fit` also reads later deliveries' fitting rows, s27epfwd's own among them, and
replaces it only by a rule that says so).
Judged on one fresh 2xH200 delivery (docs/notes/s27epfwd_rule.md, calibration/s27epfwd_judgement.json): F failed R1
(base 2.11 / 9.48%, F 2.72 / 11.47% over 18 EP2 rows; that lease's forwards ran at ~27.7 us); not adopted.

Parts: every folder under calibration/measurements/<gpu>x<n>/ whose pipeline_ops.csv holds host marks of fitting-split
(split == fit) EP forwards (ep > 1, kind F, any pp), except folders under `marks_events` (a CUDA event recorded at
each of real/ep.py's marks: host work the runs priced do not have). Each op's rate is solved with the kind's
committed EP terms and device gap (prereg.two_gpu_inputs), as the predictions take them. Held-out rows are never read.

    python -m calibration.ep_forward_host fit [--json calibration/s27epfwd_fit.json]   every kind's parts and pool
    python -m calibration.ep_forward_host judge RUN_FOLDER GPU        a fresh 2-GPU delivery (base, F, the verdict)
    python -m calibration.ep_forward_host record OUT.json GPU RUN_FOLDER    the judgement file (JUDGEMENT_FILE)
    python -m calibration.ep_forward_host guards OFF.json ON.json     twin validate --json, switch off / on (G)
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import calibration.pipeline as pipe
from calibration import entry, prereg
from calibration import records as rec
from calibration.records_io import csv_exists, glob_csv, read_csv, read_json

KINDS = ("h100x2", "h100x4", "h200x2", "h200x4")
MIN_PARTS = 3                  # a kind's pool needs at least this many parts
EXCLUDED = "marks_events"      # parts instrumented with a CUDA event a mark
FIT_FILE = Path(__file__).resolve().parent / "s27epfwd_fit.json"
FIT_COMMAND = "python -m calibration.ep_forward_host fit --json calibration/s27epfwd_fit.json"
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s27epfwd_judgement.json"
SETTINGS = ("base", "F")
JUDGED = "F"
# the rule's numbers (docs/notes/s27epfwd_rule.md)
R1_GAIN = 0.005                # F's median |error| at least this below base's
CONTROL_MOVE = 0.01            # a GPU-bound control part's rows move at most this
CONTROL_PARTS = ("v3-3l",)
TARGET_MEDIAN, TARGET_P90 = 0.05, 0.10
GUARD_MARGIN = 0.005           # G: no guarded figure worse by more than half a point
IDLE_TOL, IDLE_FLOOR_OF_STEP = 0.10, 0.01


def parts(kind_dir: Path) -> list[Path]:
    """The folders under a kind's records folder whose pipeline_ops.csv may hold fitting EP forwards (EXCLUDED
    left out)."""
    out = []
    for path in glob_csv(Path(kind_dir), "**/pipeline_ops.csv"):
        folder = Path(path).parent
        if EXCLUDED not in folder.relative_to(kind_dir).parts:
            out.append(folder)
    return sorted(set(out))


def fitting_forwards(folder: Path) -> pd.DataFrame:
    """A part's fitting-split EP forward ops with host marks (empty where it has none)."""
    h = read_csv(Path(folder) / "pipeline_ops.csv")
    if not {"host_start_s", "host_end_s", "split", "ep"} <= set(h.columns):
        return h.iloc[0:0]
    return h[h["host_start_s"].notna() & (h["kind"] == "F") & (h["ep"] > 1) & (h["split"] == "fit")]


def part_rates_s(folder: Path, gpu: str, inputs: tuple) -> list[float]:
    """Each fitting EP forward's solved host seconds a launch (pipeline.solved_host_rate_s through _solved_rates:
    the op's stage list, its lead, its host interval; the kind's EP terms and device gap from `inputs`)."""
    h = fitting_forwards(folder)
    if h.empty:
        return []
    profile, accumulate, host, _ = inputs
    terms = {k: v for k, v in (host or {}).items() if k in pipe.EP_TERM_KEYS}
    return pipe._solved_rates(h, Path(folder), gpu, profile, accumulate, (host or {}).get("device_gap", 0.0),
                              terms).get("fwd", [])


def fit_kind(kind: str, root: Path | str | None = None) -> dict:
    """{kind, committed_fwd_s (the folder's own rate), parts: [{part, models, pp, ops, rate_s}], pooled_s (median over
    the parts' medians; None under MIN_PARTS parts)}."""
    root = rec.records_root() if root is None else root
    gpu, n = kind.split("x")
    inputs = prereg.two_gpu_inputs(gpu, root, int(n))
    kind_dir = Path(root) / kind
    rows = []
    for folder in parts(kind_dir):
        r = part_rates_s(folder, gpu, inputs)
        if r:
            h = fitting_forwards(folder)
            rows.append({"part": folder.relative_to(kind_dir).as_posix() or ".", "models": sorted(h["model"].unique()),
                         "pp": sorted(int(p) for p in h["pp"].unique()), "ops": len(r), "rate_s": float(np.median(r))})
    pooled = float(np.median([r["rate_s"] for r in rows])) if len(rows) >= MIN_PARTS else None
    return {"kind": kind, "committed_fwd_s": (inputs[2] or {}).get("fwd"), "parts": rows, "pooled_s": pooled}


def fit(kinds=KINDS, root: Path | str | None = None) -> dict:
    root = rec.records_root() if root is None else root
    return {"command": FIT_COMMAND, "kinds": {k: fit_kind(k, root) for k in kinds}}


def read_fit(path: Path = FIT_FILE) -> dict:
    return read_json(path)


def pooled_rates(fitted: dict) -> dict[str, float]:
    """{kind: pooled seconds a launch} of a fit record (kinds without a pool left out)."""
    return {k: v["pooled_s"] for k, v in fitted["kinds"].items() if v["pooled_s"] is not None}


# --- the fresh delivery ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def switch(on: bool):
    before = pipe.ADOPT_EP_FORWARD_HOST
    pipe.ADOPT_EP_FORWARD_HOST = on
    try:
        yield
    finally:
        pipe.ADOPT_EP_FORWARD_HOST = before


def run_parts(run: Path) -> list[Path]:
    return [d for d in sorted(Path(run).iterdir()) if d.is_dir() and csv_exists(d / "pipeline_step.csv")]


STEP_KEYS = ("bench", "model", "schedule", "pp", "ep", "dp", "num_gpus", "num_microbatches", "micro_batch_seqs",
             "seq_len", "precision", "num_layers")


def fresh_rows(run: Path, gpu: str, inputs: dict | None = None, num_gpus: int = 2) -> pd.DataFrame:
    """Every timed step row of a delivery (ep_step: EP2; pipeline_step: PP2) priced under each setting before the run
    (prereg.predict_ep: the committed `<gpu>x<num_gpus>` folder's inputs, the run's routing records), with
    rel_error_<setting> and, for pipeline rows, each rank's idle within IDLE_TOL (or IDLE_FLOOR_OF_STEP of the
    step) under base (the same under F where ep is 1). `num_gpus` 4: a four-GPU run (diagnostics of seen records)."""
    inputs = {} if inputs is None else inputs
    out = []
    for d in run_parts(run):
        steps = read_csv(d / "pipeline_step.csv")
        steps = steps[steps["bench"].isin(["ep_step", "pipeline_step"]) & (steps["time_s"] > 0)]
        routing = read_csv(d / "pipeline_routing.csv") if csv_exists(d / "pipeline_routing.csv") else None
        ops = read_csv(d / "pipeline_ops.csv") if csv_exists(d / "pipeline_ops.csv") else None
        for _, s in steps.iterrows():
            row = {"gpu": gpu, **{k: s[k] for k in STEP_KEYS}}
            rec_ = {"part": d.name, **{k: s[k] for k in ("bench", "model", "schedule", "pp", "ep", "num_microbatches",
                                                           "micro_batch_seqs", "seq_len", "num_layers", "split")},
                    "measured_s": float(s["time_s"])}
            for name in SETTINGS:
                with switch(name == JUDGED):
                    key = f"{gpu}x{num_gpus}:{name}"
                    if key not in inputs:
                        inputs[key] = prereg.two_gpu_inputs(gpu, rec.MEASUREMENTS_DIR, num_gpus)
                    pred = prereg.predict_ep([row], num_gpus=num_gpus, routing=routing, inputs={gpu: inputs[key]})
                rec_[f"predicted_{name}_s"] = float(pred["predicted_s"].iloc[0])
                rec_[f"rel_error_{name}"] = rec_[f"predicted_{name}_s"] / rec_["measured_s"] - 1.0
                if name == "base" and s["bench"] == "pipeline_step" and ops is not None:
                    idle = {int(k.rsplit("_r", 1)[1][:-2]): float(v) for k, v in pred.iloc[0].items()
                            if str(k).startswith("predicted_idle_r")}
                    meas = pipe.measured_idle_s(pipe.ops_of(pd.Series(row), ops))
                    within = [abs(idle[r % len(idle)] - m) <= max(IDLE_TOL * m, IDLE_FLOOR_OF_STEP * rec_["measured_s"])
                              for r, m in meas.items()] if idle else []
                    rec_["idle_ranks"], rec_["idle_within"] = len(within), int(sum(within))
            out.append(rec_)
    return pd.DataFrame(out)


def _stats(e) -> tuple[float, float]:
    a = np.abs(np.asarray(e, float))
    return (float(np.median(a)), float(np.percentile(a, 90))) if a.size else (math.nan, math.nan)


def verdict(t: pd.DataFrame) -> dict:
    """The rule's clauses on one delivery's rows: R1 (EP rows: F's median at least R1_GAIN below base's, its P90 not
    above base's), R2 (the control part's EP rows move at most CONTROL_MOVE), R3 (every pipeline row identical under
    both settings), T (issue 13's target under F: reported); `pass` = R1 and R2 and R3 (G is judged apart)."""
    ep = t[t["bench"] == "ep_step"]
    pp = t[t["bench"] == "pipeline_step"]
    (med, p90), (bmed, bp90) = _stats(ep[f"rel_error_{JUDGED}"]), _stats(ep["rel_error_base"])
    ctrl = ep[ep["part"].isin(CONTROL_PARTS)]
    moves = (ctrl[f"rel_error_{JUDGED}"] - ctrl["rel_error_base"]).abs()
    out = {"ep_rows": int(len(ep)), "median": med, "p90": p90, "base_median": bmed, "base_p90": bp90,
           "r1": bool(len(ep) >= 6 and med <= bmed - R1_GAIN and p90 <= bp90),
           "control_rows": int(len(ctrl)), "r2": bool(len(ctrl) > 0 and (moves <= CONTROL_MOVE).all()),
           "pipeline_rows": int(len(pp)),
           "r3": bool((pp[f"predicted_{JUDGED}_s"] == pp["predicted_base_s"]).all()),
           "t": bool(med <= TARGET_MEDIAN and p90 <= TARGET_P90)}
    if len(pp):
        out["pipeline_median"], out["pipeline_p90"] = _stats(pp["rel_error_base"])
        if "idle_ranks" in pp:
            out["idle_within"], out["idle_ranks"] = int(pp["idle_within"].sum()), int(pp["idle_ranks"].sum())
    out["pass"] = bool(out["r1"] and out["r2"] and out["r3"])
    return out


# --- G: the committed multi-GPU figures ------------------------------------------------------------------------------

GUARDED = ("multi_gpu", "pipelines", "idle", "fresh_s21ep2")
GUARDED_PREFIX = "prereg_"


def _figures(node, path: str = "") -> dict[str, float]:
    """Every numeric leaf of a validate section that is a median or P90 error: a key naming a median or P90 and an
    error (`median_abs_rel_error`), or a bare `median` / `p90` / `signed_median` (fresh_s21ep2's summaries)."""
    out: dict[str, float] = {}
    if isinstance(node, dict):
        for k, v in node.items():
            out.update(_figures(v, f"{path}/{k}"))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.update(_figures(v, f"{path}[{i}]"))
    elif isinstance(node, (int, float)) and not isinstance(node, bool):
        leaf = path.rsplit("/", 1)[-1].lower()
        if (("median" in leaf or "p90" in leaf) and "error" in leaf) or leaf in ("median", "p90", "signed_median"):
            out[path] = float(node)
    return out


def _case_errors(cases: list) -> dict[str, float]:
    """validate's `pipelines` cases: {gpu, folder's num_gpus, case name: predicted / measured - 1}."""
    return {f"pipelines/{c['gpu']}x{c['num_gpus']} {c['name']}": c["predicted_s"] / c["measured_s"] - 1.0
            for c in cases if c.get("measured_s")}


def _idle_counts(idle: dict) -> dict[str, float]:
    """validate's `idle` section: {folder count key: ranks met} (met and held_out_met)."""
    return {f"idle/{folder}/{k}": float(v) for folder, x in (idle or {}).items()
            for k, v in (x.get("counts") or {}).items() if k in ("met", "held_out_met")}


def guards(off: dict, on: dict) -> tuple[bool, list[str]]:
    """G: in the guarded sections of `twin validate --json` (GUARDED and every prereg_* key), no median or P90 error
    figure, nor any `pipelines` case's error, worse (in magnitude) with the switch on by more than GUARD_MARGIN, and no
    `idle` count of ranks met lower; (holds, the lines of what moved)."""
    keys = [k for k in off if (k in GUARDED or k.startswith(GUARDED_PREFIX)) and k not in ("pipelines", "idle")]
    pairs = [(_figures(off[k], k), _figures(on.get(k), k)) for k in keys]
    pairs.append((_case_errors(off.get("pipelines") or []), _case_errors(on.get("pipelines") or [])))
    lines, ok, moved = [], True, 0
    for a, b in pairs:
        for name in sorted(a):
            if name not in b or a[name] == b[name]:
                continue
            moved += 1
            good = abs(b[name]) - abs(a[name]) <= GUARD_MARGIN
            ok &= good
            lines.append(f"  {'ok ' if good else 'BAD'} {name}: {a[name]:+.4%} -> {b[name]:+.4%}")
    a, b = _idle_counts(off.get("idle")), _idle_counts(on.get("idle"))
    for name in sorted(a):
        if name in b and a[name] != b[name]:
            moved += 1
            good = b[name] >= a[name]
            ok &= good
            lines.append(f"  {'ok ' if good else 'BAD'} {name}: {a[name]:.0f} -> {b[name]:.0f}")
    lines.append(f"  G: {'holds' if ok else 'FAILS'} ({moved} figures moved; sections {', '.join(keys)}, "
                 "pipelines, idle)")
    return ok, lines


# --- the command line ------------------------------------------------------------------------------------------------

def format_fit(fitted: dict) -> str:
    lines = []
    for kind, v in fitted["kinds"].items():
        c = v["committed_fwd_s"]
        lines.append(f"{kind}: committed folder's fwd {c * 1e6:.2f} us" if c else f"{kind}: no committed fwd")
        for r in v["parts"]:
            lines.append(f"  {r['part']:<60} {','.join(r['models']):<24} pp {r['pp']} ops {r['ops']:>5} "
                         f"{r['rate_s'] * 1e6:6.2f} us")
        p = v["pooled_s"]
        lines.append(f"  pooled ({len(v['parts'])} parts): " + (f"{p * 1e6:.2f} us a launch" if p else "none"))
    return "\n".join(lines)


def format_rows(t: pd.DataFrame) -> str:
    cols = ["part", "bench", "schedule", "pp", "ep", "num_microbatches", "seq_len", "measured_s", "rel_error_base",
            f"rel_error_{JUDGED}"] + [c for c in ("idle_within", "idle_ranks") if c in t]
    return t[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}")


def judgement(run: Path, gpu: str) -> dict:
    t = fresh_rows(Path(run), gpu)
    records = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
               for r in t.to_dict(orient="records")]
    return {"gpu": gpu, "run": Path(run).name, "settings": list(SETTINGS),
            "pooled_s": pipe.EP_FWD_POOLED_HOST_S.get(f"{gpu}x2"), "rows": records, "verdict": verdict(t)}


def _parser():
    ap = entry.parser("calibration.ep_forward_host", __doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fit", help="every kind's parts and pooled EP forward rate")
    f.add_argument("--json", type=Path, default=None, metavar="OUT.json")
    j = sub.add_parser("judge", help="a fresh delivery's rows under base and F, and the verdict")
    j.add_argument("run", type=entry.folder, metavar="RUN_FOLDER")
    j.add_argument("gpu", type=entry.gpu_name, metavar="GPU")
    r = sub.add_parser("record", help="write the judgement of a delivery to OUT.json")
    r.add_argument("out", type=Path, metavar="OUT.json")
    r.add_argument("gpu", type=entry.gpu_name, metavar="GPU")
    r.add_argument("run", type=entry.folder, metavar="RUN_FOLDER")
    g = sub.add_parser("guards", help="G from two twin validate --json outputs (switch off, on)")
    g.add_argument("off", type=Path, metavar="OFF.json")
    g.add_argument("on", type=Path, metavar="ON.json")
    return ap


@entry.script
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "fit":
        fitted = fit()
        print(format_fit(fitted))
        entry.write_json(args.json, fitted)
        return 0
    if args.command == "guards":
        with entry.user_inputs("OFF.json / ON.json", f"{args.off} {args.on}", "twin validate --json outputs"):
            off, on = json.loads(args.off.read_text()), json.loads(args.on.read_text())
        ok, lines = guards(off, on)
        print("\n".join(lines))
        return 0
    if args.command == "record":
        if prereg.refuses_uncommitted_record():
            return 2
    out = judgement(args.run, args.gpu)
    t = pd.DataFrame(out["rows"])
    print(format_rows(t))
    v = out["verdict"]
    print(f"EP rows {v['ep_rows']}: base {v['base_median']:.2%} / {v['base_p90']:.2%}, F {v['median']:.2%} / "
          f"{v['p90']:.2%} (median / P90); R1 {v['r1']}, R2 {v['r2']}, R3 {v['r3']}, T {v['t']}; pass {v['pass']}")
    if args.command == "record":
        cmd = " ".join(["python -m calibration.ep_forward_host record", str(args.out), args.gpu, args.run.as_posix()])
        prereg.write_code_record(args.out, cmd, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

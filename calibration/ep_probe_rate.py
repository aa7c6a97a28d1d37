"""s26eprate (issue 13, docs/notes/s26eprate_rule.md): an EP2 step's host-paced forward and backward at the lease's
own host speed, read from a host-pace probe right before each timed step.

A real/campaigns/s26eprate.sh part is one torchrun (real.pipeline --host-probe): EP2 (pp 1, ep 2, dp 2) at 1
micro-batch (split fit) then 2, 3, 4 (split holdout), every timed step of every configuration right after a probe
on every rank (real/pipeline/hostpace.py: `launch`, 128 small launches behind a sleeping stream, host seconds a
launch; `python`, a fixed pure-Python loop), rows in pipeline_host_probe.csv (cycle = the step's rep).

The candidate P (calibration.pipeline.ADOPT_EP_PROBE_HOST), per part:
- fitting rates, per rank r and fitting step (rep) k, from the fitting step's ops that ran level with the GPU:
  the forward f(k, r) = the rate at which the twin's issue model gives the F op's host interval
  (pipeline.solved_host_rate_s on the whole-model forward list at ep 2, each MoE layer at the fitting step's most
  loaded rank's rows, the committed folder's EP host terms and device gap), level when the GPU began and ended
  within FWD_LEVEL_S of the host; the backward b(k, r) = s24bwd3's A1 figure (ep_bwd_run.fit_bwd_op_rates);
- ratios kf(r) = median_k f(k, r) / p(1, k, r), kb(r) likewise, p(n, k, r) the launch probe right before step k
  of the configuration at n micro-batches on rank r;
- a held-out configuration n: P(n, r) = median_k p(n, k, r); forward rate max_r kf(r) P(n, r), backward max_r
  kb(r) P(n, r) (the ranks pace each other through the all-to-alls), under pipeline.EP_FWD_PROBE_KEY /
  EP_BWD_PROBE_KEY; a part whose fitting forward (backward) has no level op keeps the committed pricing there.
No held-out step's op or time is read; the held-out configurations' host speed comes from their probes alone.

Settings (SETTINGS): `base` (main's committed pricing), `P` (the candidate, judged), and reported: `R` (the fitting
rates without the probe: max_r median_k f(k, r), the same for b), `P_fwd` / `P_bwd` (one direction), `P_py` (the
Python probe in place of the launch probe), `PL` (one ratio a lease: the medians over every part's level fitting
ops, pooled, times max_r P(n, r)), `A1` (s24bwd3's A1 as on main's code, switch on).

    python -m calibration.ep_probe_rate judge RUN_FOLDER GPU          (RUN_FOLDER: <gpu>x2/s26eprate_<stamp>)
    python -m calibration.ep_probe_rate record OUT.json GPU RUN_FOLDER...   (the judgement file, JUDGEMENT_FILE)
    python -m calibration.ep_probe_rate guards OFF.json ON.json       (twin validate --json, switch off / on: G)
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

import calibration.pipeline as pipe
from calibration import entry, ep_bwd_run, prereg
from calibration.ep_postsync import error_line
from calibration.predict import gpu_spec
from calibration.records_io import csv_exists, read_csv, write_json_text
from twin.core.specs import get_model

FWD_LEVEL_S = 0.5e-3     # a forward is host-paced when its GPU began and ended within this of its host
PROBE, PY_PROBE = "launch", "python"
SETTINGS = ("base", "P", "R", "P_fwd", "P_bwd", "P_py", "PL", "A1")
JUDGED = "P"
CONTROL_PARTS = ("mixtral-3l",)
TARGET_MEDIAN, TARGET_P90 = 0.05, 0.10
CONTROL_MOVE = 0.01
R4_MEDIAN, R4_P90 = 0.005, 0.01   # P against R: not worse by more than these
GUARD_MARGIN = 0.001              # G: no validate figure worse by more than 0.1 point
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s26eprate_judgement.json"
ROW_KEYS = ["part", "num_microbatches", "measured_s"]


def probes(folder: Path, kind: str = PROBE) -> pd.DataFrame:
    """A part's probe rows of one kind: (num_microbatches, rep, rank, probe_s) (host seconds a call, the mean)."""
    p = read_csv(Path(folder) / "pipeline_host_probe.csv")
    p = p[p["probe"] == kind]
    return pd.DataFrame({"num_microbatches": p["num_microbatches"].astype(int), "rep": p["cycle"].astype(int),
                         "rank": p["rank"].astype(int), "probe_s": p["us_per_call"].astype(float) * 1e-6})


def _fit_row(folder: Path, ops: pd.DataFrame) -> pd.Series | None:
    steps = read_csv(Path(folder) / "pipeline_step.csv")
    fit = steps[(steps["split"] == "fit") & (steps["pp"] == 1) & (steps["ep"] == 2) & (steps["num_microbatches"] == 1)]
    return fit.iloc[0] if len(fit) else None


def fit_fwd_op_rates(folder: Path, gpu: str, profile, host: dict) -> pd.DataFrame:
    """Each level fitting EP2 F op of a part as (rank, rep, rate_s) (module docstring); empty without one."""
    folder = Path(folder)
    ops = read_csv(folder / "pipeline_ops.csv")
    f = ops[(ops["split"] == "fit") & (ops["pp"] == 1) & (ops["ep"] == 2) & (ops["kind"] == "F")
            & (ops["num_microbatches"] == 1)]
    f = f[((f["start_s"] - f["host_start_s"]) <= FWD_LEVEL_S) & ((f["end_s"] - f["host_end_s"]) <= FWD_LEVEL_S)]
    row = _fit_row(folder, ops)
    if f.empty or row is None:
        return pd.DataFrame(columns=["rank", "rep", "rate_s"])
    routing = read_csv(folder / "pipeline_routing.csv") if csv_exists(folder / "pipeline_routing.csv") else None
    spec = pipe._spec_of(row)
    ep_rows = pipe.ep_layer_rows(routing, row, get_model(str(row["model"])).top_k) if routing is not None else {}
    so = pipe.stage_ops(spec, range(spec.num_layers), True, True, int(row["micro_batch_seqs"]), int(row["seq_len"]),
                        str(row["precision"]), gpu_spec(gpu), profile, 2, ep_rows=ep_rows)
    terms = {**{k: v for k, v in host.items() if k in pipe.EP_TERM_KEYS}, **pipe.cub_terms(gpu)} or None
    gap_s = host.get("device_gap", 0.0)
    out = []
    for r in f.itertuples():
        rate = pipe.solved_host_rate_s(so.f, r.start_s - r.host_start_s, r.host_end_s - r.host_start_s, gap_s, terms)
        if rate is not None:
            out.append({"rank": int(r.rank), "rep": int(r.rep), "rate_s": rate})
    return pd.DataFrame(out, columns=["rank", "rep", "rate_s"])


def fit_bwd_op_rates(folder: Path, gpu: str, profile) -> pd.DataFrame:
    """Each level fitting EP2 BW op of a part as (rank, rep, rate_s): s24bwd3's A1 figure per op."""
    folder = Path(folder)
    ops = read_csv(folder / "pipeline_ops.csv")
    ops = ops[ops["num_microbatches"] == 1]
    routing = read_csv(folder / "pipeline_routing.csv") if csv_exists(folder / "pipeline_routing.csv") else None
    row = _fit_row(folder, ops)
    if row is None:
        return pd.DataFrame(columns=["rank", "rep", "rate_s"])
    return ep_bwd_run.fit_bwd_op_rates(ops, int(row["num_layers"]), gpu, profile, routing)


def _with_probe(rates: pd.DataFrame, p: pd.DataFrame) -> pd.DataFrame:
    """Fitting op rates with the probe right before their step (n 1, same rep and rank) and rate / probe."""
    fit = p[p["num_microbatches"] == 1][["rep", "rank", "probe_s"]]
    t = rates.astype({"rank": int, "rep": int}).merge(fit, on=["rep", "rank"], how="inner")
    return t.assign(ratio=t["rate_s"] / t["probe_s"])


def part_inputs(folder: Path, gpu: str, inputs: tuple) -> dict:
    """What a part gives the settings: per direction ("fwd", "bwd") the fitting ops with their probes (launch and
    python), and each held-out configuration's median probe per rank: {"fwd": df, "bwd": df, "fwd_py": df,
    "bwd_py": df, "held": {n: {kind: {rank: median probe_s}}}}."""
    profile, _, host, _ = inputs
    p = {kind: probes(folder, kind) for kind in (PROBE, PY_PROBE)}
    f, b = fit_fwd_op_rates(folder, gpu, profile, host or {}), fit_bwd_op_rates(folder, gpu, profile)
    held = {}
    for kind, t in p.items():
        for (n, rank), g in t[t["num_microbatches"] > 1].groupby(["num_microbatches", "rank"]):
            held.setdefault(int(n), {}).setdefault(kind, {})[int(rank)] = float(g["probe_s"].median())
    return {"fwd": _with_probe(f, p[PROBE]), "bwd": _with_probe(b, p[PROBE]),
            "fwd_py": _with_probe(f, p[PY_PROBE]), "bwd_py": _with_probe(b, p[PY_PROBE]), "held": held}


def probe_rate_s(fit: pd.DataFrame, held: dict[int, float]) -> float | None:
    """max over ranks of median(rate / probe) x the configuration's median probe (None without a fitting op)."""
    got = [float(g["ratio"].median()) * held[int(r)] for r, g in fit.groupby("rank") if int(r) in held]
    return max(got) if got else None


def run_rate_s(fit: pd.DataFrame) -> float | None:
    """max over ranks of the median fitting rate (R: no probe)."""
    return float(fit.groupby("rank")["rate_s"].median().max()) if len(fit) else None


def lease_ratios(parts: dict[str, dict]) -> dict[str, float | None]:
    """PL: per direction, the median of rate / probe over every part's level fitting ops (ranks pooled)."""
    out = {}
    for d in ("fwd", "bwd"):
        r = pd.concat([v[d]["ratio"] for v in parts.values() if len(v[d])], ignore_index=True) if parts else []
        out[d] = float(np.median(r)) if len(r) else None
    return out


def setting_keys(name: str, part: dict, n: int, lease: dict) -> dict:
    """The probe keys (pipeline.EP_FWD_PROBE_KEY / EP_BWD_PROBE_KEY) a setting adds to the committed host dict for a
    held-out configuration at n micro-batches ({} for base and A1)."""
    held = part["held"].get(n, {})
    launch, py = held.get(PROBE, {}), held.get(PY_PROBE, {})
    if name in ("P", "P_fwd", "P_bwd"):
        fwd, bwd = probe_rate_s(part["fwd"], launch), probe_rate_s(part["bwd"], launch)
        fwd, bwd = (None, bwd) if name == "P_bwd" else (fwd, None) if name == "P_fwd" else (fwd, bwd)
    elif name == "P_py":
        fwd, bwd = probe_rate_s(part["fwd_py"], py), probe_rate_s(part["bwd_py"], py)
    elif name == "R":
        fwd, bwd = run_rate_s(part["fwd"]), run_rate_s(part["bwd"])
    elif name == "PL":
        top = max(launch.values()) if launch else None
        fwd = lease["fwd"] * top if len(part["fwd"]) and lease["fwd"] and top else None
        bwd = lease["bwd"] * top if len(part["bwd"]) and lease["bwd"] and top else None
    else:
        return {}
    return {k: v for k, v in ((pipe.EP_FWD_PROBE_KEY, fwd), (pipe.EP_BWD_PROBE_KEY, bwd)) if v is not None}


@contextlib.contextmanager
def switches(probe: bool, a1: bool = False):
    old = pipe.ADOPT_EP_PROBE_HOST, pipe.ADOPT_EP_BWD_RUN_HOST
    pipe.ADOPT_EP_PROBE_HOST, pipe.ADOPT_EP_BWD_RUN_HOST = probe, a1
    try:
        yield
    finally:
        pipe.ADOPT_EP_PROBE_HOST, pipe.ADOPT_EP_BWD_RUN_HOST = old


def _parts(run: Path) -> list[Path]:
    return [d for d in sorted(Path(run).iterdir()) if d.is_dir() and csv_exists(d / "pipeline_step.csv")
            and csv_exists(d / "pipeline_host_probe.csv")]


def fresh_errors(run: Path, gpu: str, names=SETTINGS, inputs: tuple | None = None) -> pd.DataFrame:
    """The held-out EP2 steps of a run folder's parts as (part, num_microbatches, measured_s, the keys' rates of P)
    with rel_error_<setting> for each setting."""
    inputs = inputs or prereg.two_gpu_inputs(gpu)
    profile, accumulate, host, hold_s = inputs
    parts = {d.name: part_inputs(d, gpu, inputs) for d in _parts(run)}
    lease = lease_ratios(parts)
    rows = []
    for d in _parts(run):
        steps = read_csv(d / "pipeline_step.csv")
        steps = steps[(steps["split"] == "holdout") & (steps["bench"] == "ep_step") & (steps["time_s"] > 0)]
        routing = read_csv(d / "pipeline_routing.csv") if csv_exists(d / "pipeline_routing.csv") else None
        a1_s = ep_bwd_run.run_bwd_host_s(d, gpu, profile) if "A1" in names else None
        for _, s in steps.iterrows():
            n = int(s["num_microbatches"])
            row = {"gpu": gpu, **{k: s[k] for k in ep_bwd_run.STEP_KEYS}}
            p_keys = setting_keys("P", parts[d.name], n, lease)
            out = {"part": d.name, "num_microbatches": n, "measured_s": float(s["time_s"]),
                   "fwd_probe_rate_s": p_keys.get(pipe.EP_FWD_PROBE_KEY, math.nan),
                   "bwd_probe_rate_s": p_keys.get(pipe.EP_BWD_PROBE_KEY, math.nan)}
            for name in names:
                extra = setting_keys(name, parts[d.name], n, lease)
                if name == "A1" and a1_s is not None:
                    extra = {pipe.EP_BWD_RUN_KEY: a1_s}
                with switches(probe=name not in ("base", "A1"), a1=name == "A1"):
                    pred = prereg.predict_ep([row], routing=routing,
                                             inputs={gpu: (profile, accumulate, {**(host or {}), **extra}, hold_s)})
                out[f"rel_error_{name}"] = float(pred["predicted_s"].iloc[0]) / out["measured_s"] - 1.0
            rows.append(out)
    return pd.DataFrame(rows)


def _stats(e: np.ndarray) -> tuple[float, float]:
    a = np.abs(e)
    return float(np.median(a)), float(np.percentile(a, 90))


def verdict(t: pd.DataFrame, judged: str = JUDGED) -> dict:
    """R1-R4 of the rule on one delivery's rows (`judged`: P, or PL under amendment A1; base and R for R2 / R4)."""
    base, p, r = (t[f"rel_error_{n}"].to_numpy() for n in ("base", judged, "R"))
    control = t["part"].isin(CONTROL_PARTS).to_numpy()
    (med, p90), (bmed, _), (rmed, rp90) = _stats(p), _stats(base), _stats(r)
    moves = np.abs(p[control] - base[control])
    out = {"median": med, "p90": p90, "base_median": bmed, "R_median": rmed, "R_p90": rp90,
           "r1": med <= TARGET_MEDIAN and p90 <= TARGET_P90, "r2": med < bmed,
           "r3": bool(np.all(moves <= CONTROL_MOVE)), "r4": med <= rmed + R4_MEDIAN and p90 <= rp90 + R4_P90,
           "rows": int(len(t)), "control_rows": int(control.sum())}
    out["pass"] = bool(out["r1"] and out["r2"] and out["r3"] and out["r4"])
    return out


AMENDED = "PL"   # amendment A1 (docs/notes/s26eprate_rule.md): judged on the second delivery, pooled with the first


def amended_verdict(first: pd.DataFrame, second: pd.DataFrame) -> dict:
    """Amendment A1: PL's R1-R4 on the second delivery and R5, issue 13's target on both deliveries' rows pooled."""
    v = verdict(second, AMENDED)
    med, p90 = _stats(np.concatenate([first[f"rel_error_{AMENDED}"].to_numpy(), second[f"rel_error_{AMENDED}"].to_numpy()]))
    v.update(pooled_median=med, pooled_p90=p90, r5=med <= TARGET_MEDIAN and p90 <= TARGET_P90)
    v["pass"] = bool(v["pass"] and v["r5"])
    return v


def guards(off: dict, on: dict) -> tuple[bool, list[str]]:
    """G: every held-out median and P90 of `twin validate --json` (by GPU and kind, and the totals by GPU) with the
    switch on not worse than off by more than GUARD_MARGIN; (all hold, the lines of what moved)."""
    lines, ok = [], True

    def check(name: str, a: float | None, b: float | None) -> None:
        nonlocal ok
        if a is None or b is None or a == b:
            return
        good = b - a <= GUARD_MARGIN
        ok &= good
        lines.append(f"  {'ok ' if good else 'BAD'} {name}: {a:.4%} -> {b:.4%}")

    for gpu, kinds in off["by_gpu_kind"].items():
        for kind, v in kinds.items():
            h0, h1 = v.get("held_out") or {}, (on["by_gpu_kind"].get(gpu, {}).get(kind) or {}).get("held_out") or {}
            for stat in ("median_abs_rel_error", "p90_abs_rel_error"):
                check(f"{gpu} {kind} held-out {stat}", h0.get(stat), h1.get(stat))
    for gpu, v in off["gpus"].items():
        for stat in ("median_abs_rel_error", "p90_abs_rel_error"):
            check(f"{gpu} held-out total {stat}", v.get(stat), on["gpus"].get(gpu, {}).get(stat))
    lines.append(f"  G: {'holds' if ok else 'FAILS'} ({len(lines)} figures moved)")
    return ok, lines


def judgement(runs: list, gpu: str) -> dict:
    """Each delivery's rows under every setting and its verdict, JSON-ready; `adopt`: P passes on every delivery."""
    inputs = prereg.two_gpu_inputs(gpu)
    out: dict = {"gpu": gpu, "settings": list(SETTINGS), "runs": {}}
    for run in runs:
        t = fresh_errors(Path(run), gpu, inputs=inputs)
        records = [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
                   for r in t.to_dict(orient="records")]
        out["runs"][Path(run).name] = {"rows": records, "verdict": verdict(t)}
    out["fresh_pass"] = bool(out["runs"]) and all(v["verdict"]["pass"] for v in out["runs"].values())
    tables = list(judged_rows(out).values())
    if len(tables) >= 2:    # amendment A1: PL on the second delivery, pooled with the first
        out["amended"] = {"setting": AMENDED, **amended_verdict(tables[0], tables[1])}
    return out


def judged_rows(judged: dict) -> dict[str, pd.DataFrame]:
    """A judgement's rows read back: {run name: the table fresh_errors gave}."""
    return {run: pd.DataFrame(v["rows"]).astype({"fwd_probe_rate_s": float, "bwd_probe_rate_s": float})
            for run, v in judged["runs"].items()}


def _code_commit() -> str:
    repo = Path(__file__).resolve().parents[1]
    return subprocess.run(["git", "rev-parse", "--short=8", "HEAD"], capture_output=True, text=True, cwd=repo,
                          check=False).stdout.strip()


def _parser():
    ap = entry.parser("calibration.ep_probe_rate", __doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    j = sub.add_parser("judge", help="one delivery's held-out EP2 rows under every setting, and R1-R4")
    j.add_argument("run", type=entry.folder, metavar="RUN_FOLDER")
    j.add_argument("gpu", type=entry.gpu_name, metavar="GPU")
    r = sub.add_parser("record", help="write the judgement of the deliveries to OUT.json")
    r.add_argument("out", type=Path, metavar="OUT.json")
    r.add_argument("gpu", type=entry.gpu_name, metavar="GPU")
    r.add_argument("runs", type=entry.folder, nargs="+", metavar="RUN_FOLDER")
    g = sub.add_parser("guards", help="G from two twin validate --json outputs (switch off, on)")
    g.add_argument("off", type=Path, metavar="OFF.json")
    g.add_argument("on", type=Path, metavar="ON.json")
    return ap


@entry.script
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "guards":
        with entry.user_inputs("OFF.json / ON.json", f"{args.off} {args.on}", "twin validate --json outputs"):
            ok, lines = guards(json.loads(args.off.read_text()), json.loads(args.on.read_text()))
        print("\n".join(lines))
        return 0
    if args.command == "record":
        dirty = prereg.dirty_paths(Path(__file__).resolve().parents[1])
        if dirty:
            print(f"record: uncommitted changes under twin/ or calibration/ ({dirty[:3]}): the file names the "
                  "commit of the code that computed it", file=sys.stderr)
            return 2
        cmd = " ".join(["python -m calibration.ep_probe_rate record", str(args.out), args.gpu, *map(str, args.runs)])
        out = {"command": cmd, "code_commit": _code_commit(), **judgement(list(args.runs), args.gpu)}
        write_json_text(args.out, json.dumps(out, indent=1) + "\n")
        for run, v in out["runs"].items():
            print(run, {k: v["verdict"][k] for k in ("median", "p90", "r1", "r2", "r3", "r4", "pass")})
        print("P passes on every delivery:", out["fresh_pass"])
        if "amended" in out:
            print("amendment A1 (PL):", {k: out["amended"][k] for k in ("median", "p90", "pooled_median",
                                                                          "pooled_p90", "r1", "r2", "r3", "r4", "r5", "pass")})
        return 0
    pd.set_option("display.width", 240)
    t = fresh_errors(args.run, args.gpu)
    for name in SETTINGS:
        print(error_line(f"{name:6s}", t[f"rel_error_{name}"].to_numpy()))
    print(t.to_string(index=False, float_format=lambda x: f"{x:+.4g}"))
    v = verdict(t)
    print(f"P: median {v['median']:.2%} P90 {v['p90']:.2%} (base {v['base_median']:.2%}; R {v['R_median']:.2%} / "
          f"{v['R_p90']:.2%}) R1 {v['r1']} R2 {v['r2']} R3 {v['r3']} R4 {v['r4']}: {'passes' if v['pass'] else 'fails'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

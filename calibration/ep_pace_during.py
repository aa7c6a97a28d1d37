"""s26eprate round 2 (issue 13, docs/notes/s26eprate2_rule.md): an EP2 step's host-paced forward and backward at the
host's pace sampled *during* the step's own ops, by a companion thread beside the step.

A real/campaigns/s26eprate2.sh part is one torchrun (real.pipeline --host-probe --pace-sampler): EP2 (pp 1, ep 2,
dp 2) at 1 micro-batch (split fit) then 2, 3, 4 (split holdout). During every timed step a thread of every rank's
process times a fixed pure-Python loop every ~2 ms (real/pipeline/hostpace.PaceSampler), rows in
pipeline_host_pace.csv (t_s on the step's shared axis, the axis of pipeline_ops.csv's host marks; sample_s its wall;
duty the rank's sample walls over the step's host span); round 1's probe right before each step stays.

The candidate S (calibration.pipeline.ADOPT_EP_PACE_DURING), per part:
- fitting rates as round 1 (ep_probe_rate.fit_fwd_op_rates / fit_bwd_op_rates): per level fitting F op the forward
  rate f, per level fitting BW op s24bwd3's A1 figure b (one F and one BW a rank and step at 1 micro-batch);
- s(op): the median sample_s of its rank's samples inside the op's host interval (an op without one drops out);
- ratios kF = median over the part's level fitting F ops (ranks pooled) of f / s(op), kB likewise;
- a held-out configuration n: SF(n, r) = median sample_s of rank r's samples inside any of its F ops' host intervals
  (every timed step), SB(n, r) in its BW ops; forward rate kF x max_r SF(n, r), backward kB x max_r SB(n, r), under
  pipeline.EP_FWD_PROBE_KEY / EP_BWD_PROBE_KEY; a part without a level fitting op keeps the committed pricing there.
No held-out op's or step's duration is read: the held-out ops' host intervals only select the samples kept.

Settings (SETTINGS): `base`, `S` (judged), and reported: `R` (round 1's run-level rates), `P`, `PL` (round 1's probe
forms on these steps' probes), `S_rank` (ratios per rank: max_r kF(r) SF(n, r)), `S_step` (every sample of the step,
not only the direction's ops), `SL` (one ratio a lease, pooled over every part's level fitting ops).

    python -m calibration.ep_pace_during judge RUN_FOLDER GPU          (RUN_FOLDER: <gpu>x2/s26eprate2_<stamp>)
    python -m calibration.ep_pace_during record OUT.json GPU RUN_FOLDER  (the judgement file, JUDGEMENT_FILE)
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
from calibration import entry, ep_bwd_run, ep_probe_rate, prereg
from calibration.ep_postsync import error_line
from calibration.records_io import csv_exists, read_csv, write_json_text

SETTINGS = ("base", "S", "R", "P", "PL", "S_rank", "S_step", "SL")
JUDGED = "S"
CONTROL_PARTS = ("mixtral-2l1k5",)
TARGET_MEDIAN, TARGET_P90 = 0.05, 0.10
CONTROL_MOVE = 0.01
R4_MEDIAN, R4_P90 = 0.005, 0.01   # S against R: not worse by more than these
DUTY_MAX = 0.02                   # C0: the companion's median duty over steps and ranks
MIN_HOST_BOUND_ROWS = 6
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s26eprate2_judgement.json"
KINDS = {"fwd": "F", "bwd": "BW"}
OP_KEYS = ["num_microbatches", "rep", "rank"]


def pace(folder: Path) -> pd.DataFrame:
    """A part's companion samples: (num_microbatches, rep, rank, t_s, sample_s, duty)."""
    p = read_csv(Path(folder) / "pipeline_host_pace.csv")
    return pd.DataFrame({"num_microbatches": p["num_microbatches"].astype(int), "rep": p["rep"].astype(int),
                         "rank": p["rank"].astype(int), "t_s": p["t_s"].astype(float),
                         "sample_s": p["sample_s"].astype(float), "duty": p["duty"].astype(float)})


def ep_ops(folder: Path) -> pd.DataFrame:
    """A part's EP2 ops (pp 1, ep 2) with their host intervals."""
    ops = read_csv(Path(folder) / "pipeline_ops.csv")
    ops = ops[(ops["pp"] == 1) & (ops["ep"] == 2)]
    return ops.astype({"num_microbatches": int, "rep": int, "rank": int})


def samples_in(samples: pd.DataFrame, ops: pd.DataFrame) -> pd.DataFrame:
    """Each sample lying inside one of `ops`' host intervals (same configuration, step and rank), with the op's
    op_index: (num_microbatches, rep, rank, op_index, sample_s)."""
    m = samples.merge(ops[OP_KEYS + ["op_index", "host_start_s", "host_end_s"]], on=OP_KEYS, how="inner")
    m = m[(m["t_s"] >= m["host_start_s"]) & (m["t_s"] <= m["host_end_s"])]
    return m[OP_KEYS + ["op_index", "sample_s"]].reset_index(drop=True)


def fit_op_pace(samples: pd.DataFrame, ops: pd.DataFrame, kind: str) -> pd.DataFrame:
    """s(op) of every fitting (1 micro-batch) op of `kind`: (rep, rank, pace_s), the median sample inside it."""
    fit = ops[(ops["num_microbatches"] == 1) & (ops["kind"] == kind)]
    inside = samples_in(samples, fit)
    g = inside.groupby(["rep", "rank", "op_index"])["sample_s"].median().reset_index()
    # one op of a kind a rank and step at 1 micro-batch: (rep, rank) names it
    return g.groupby(["rep", "rank"])["sample_s"].median().rename("pace_s").reset_index()


def fit_step_pace(samples: pd.DataFrame) -> pd.DataFrame:
    """S_step's s: the median of every sample of a fitting step on a rank: (rep, rank, pace_s)."""
    fit = samples[samples["num_microbatches"] == 1]
    return fit.groupby(["rep", "rank"])["sample_s"].median().rename("pace_s").reset_index()


def _with_pace(rates: pd.DataFrame, paces: pd.DataFrame) -> pd.DataFrame:
    t = rates.astype({"rank": int, "rep": int}).merge(paces, on=["rep", "rank"], how="inner")
    return t.assign(ratio=t["rate_s"] / t["pace_s"])


def held_pace(samples: pd.DataFrame, ops: pd.DataFrame) -> dict:
    """{n: {"fwd": {rank: SF}, "bwd": {rank: SB}, "step": {rank: median of every sample}}} for n > 1."""
    out: dict = {}
    held = samples[samples["num_microbatches"] > 1]
    for d, kind in KINDS.items():
        inside = samples_in(held, ops[ops["kind"] == kind])
        for (n, rank), g in inside.groupby(["num_microbatches", "rank"]):
            out.setdefault(int(n), {}).setdefault(d, {})[int(rank)] = float(g["sample_s"].median())
    for (n, rank), g in held.groupby(["num_microbatches", "rank"]):
        out.setdefault(int(n), {}).setdefault("step", {})[int(rank)] = float(g["sample_s"].median())
    return out


def part_inputs(folder: Path, gpu: str, inputs: tuple) -> dict:
    """What a part gives the settings: round 1's (ep_probe_rate.part_inputs: "fwd", "bwd" with probes, "held"
    probes) plus per direction the fitting ops with their sampled pace ("s_fwd", "s_bwd": rank, rep, rate_s, pace_s,
    ratio), with the step's pace ("st_fwd", "st_bwd"), and the held-out configurations' paces ("held_s")."""
    profile, _, host, _ = inputs
    out = ep_probe_rate.part_inputs(folder, gpu, inputs)
    samples, ops = pace(folder), ep_ops(folder)
    f = ep_probe_rate.fit_fwd_op_rates(folder, gpu, profile, host or {})
    b = ep_probe_rate.fit_bwd_op_rates(folder, gpu, profile)
    step = fit_step_pace(samples)
    out.update(s_fwd=_with_pace(f, fit_op_pace(samples, ops, "F")),
               s_bwd=_with_pace(b, fit_op_pace(samples, ops, "BW")),
               st_fwd=_with_pace(f, step), st_bwd=_with_pace(b, step), held_s=held_pace(samples, ops),
               duty=samples.groupby(OP_KEYS)["duty"].first())
    return out


def pooled_rate_s(fit: pd.DataFrame, held: dict[int, float]) -> float | None:
    """median over the fitting ops (ranks pooled) of rate / pace x max over ranks of the held-out pace."""
    if fit.empty or not held:
        return None
    return float(fit["ratio"].median()) * max(held.values())


def lease_ratios(parts: dict[str, dict]) -> dict[str, float | None]:
    """SL: per direction, the median of rate / pace over every part's level fitting ops (ranks pooled)."""
    out = {}
    for d in KINDS:
        r = [v[f"s_{d}"]["ratio"] for v in parts.values() if len(v[f"s_{d}"])]
        out[d] = float(np.median(pd.concat(r, ignore_index=True))) if r else None
    return out


def setting_keys(name: str, part: dict, n: int, lease_s: dict, lease_p: dict) -> dict:
    """The keys (pipeline.EP_FWD_PROBE_KEY / EP_BWD_PROBE_KEY) a setting adds to the committed host dict for a held-out
    configuration at n micro-batches ({} for base)."""
    if name in ("R", "P", "PL"):
        return ep_probe_rate.setting_keys(name, part, n, lease_p)
    held = part["held_s"].get(n, {})
    got = {}
    for d in KINDS:
        s = held.get(d, {})
        if name == "S":
            got[d] = pooled_rate_s(part[f"s_{d}"], s)
        elif name == "S_rank":
            got[d] = ep_probe_rate.probe_rate_s(part[f"s_{d}"], s)
        elif name == "S_step":
            got[d] = pooled_rate_s(part[f"st_{d}"], held.get("step", {}))
        elif name == "SL":
            got[d] = lease_s[d] * max(s.values()) if len(part[f"s_{d}"]) and lease_s[d] and s else None
    return {k: v for k, v in ((pipe.EP_FWD_PROBE_KEY, got.get("fwd")), (pipe.EP_BWD_PROBE_KEY, got.get("bwd")))
            if v is not None}


@contextlib.contextmanager
def switches(pace_on: bool, probe_on: bool):
    old = pipe.ADOPT_EP_PACE_DURING, pipe.ADOPT_EP_PROBE_HOST
    pipe.ADOPT_EP_PACE_DURING, pipe.ADOPT_EP_PROBE_HOST = pace_on, probe_on
    try:
        yield
    finally:
        pipe.ADOPT_EP_PACE_DURING, pipe.ADOPT_EP_PROBE_HOST = old


def _parts(run: Path) -> list[Path]:
    return [d for d in sorted(Path(run).iterdir()) if d.is_dir() and csv_exists(d / "pipeline_step.csv")
            and csv_exists(d / "pipeline_host_pace.csv")]


def fresh_errors(run: Path, gpu: str, names=SETTINGS, inputs: tuple | None = None,
                 only: str | None = None) -> tuple[pd.DataFrame, dict]:
    """The held-out EP2 steps of a run folder's parts (or of part `only`, the lease ratios still from every part) as
    (part, num_microbatches, measured_s, S's rates) with rel_error_<setting> for each setting; and the parts'
    inputs."""
    inputs = inputs or prereg.two_gpu_inputs(gpu)
    profile, accumulate, host, hold_s = inputs
    parts = {d.name: part_inputs(d, gpu, inputs) for d in _parts(run)}
    lease_s, lease_p = lease_ratios(parts), ep_probe_rate.lease_ratios(parts)
    rows = []
    for d in _parts(run):
        if only is not None and d.name != only:
            continue
        steps = read_csv(d / "pipeline_step.csv")
        steps = steps[(steps["split"] == "holdout") & (steps["bench"] == "ep_step") & (steps["time_s"] > 0)]
        routing = read_csv(d / "pipeline_routing.csv") if csv_exists(d / "pipeline_routing.csv") else None
        for _, s in steps.iterrows():
            n = int(s["num_microbatches"])
            row = {"gpu": gpu, **{k: s[k] for k in ep_bwd_run.STEP_KEYS}}
            s_keys = setting_keys("S", parts[d.name], n, lease_s, lease_p)
            out = {"part": d.name, "num_microbatches": n, "measured_s": float(s["time_s"]),
                   "fwd_pace_rate_s": s_keys.get(pipe.EP_FWD_PROBE_KEY, math.nan),
                   "bwd_pace_rate_s": s_keys.get(pipe.EP_BWD_PROBE_KEY, math.nan)}
            for name in names:
                extra = setting_keys(name, parts[d.name], n, lease_s, lease_p)
                with switches(pace_on=name.startswith("S"), probe_on=name in ("P", "PL", "R")):
                    pred = prereg.predict_ep([row], routing=routing,
                                             inputs={gpu: (profile, accumulate, {**(host or {}), **extra}, hold_s)})
                out[f"rel_error_{name}"] = float(pred["predicted_s"].iloc[0]) / out["measured_s"] - 1.0
            rows.append(out)
    return pd.DataFrame(rows), parts


def diagnostics(run: Path, parts: dict) -> dict:
    """Per part: kF, kB (pooled), the duty's median and max, and per direction the correlation over every op of the
    part (fitting and held-out) of ln(op host interval) with ln(median sample inside it), with the op count."""
    out = {}
    for d in _parts(run):
        if d.name not in parts:
            continue
        samples, ops = pace(d), ep_ops(d)
        v = parts[d.name]
        one = {"kF": float(v["s_fwd"]["ratio"].median()) if len(v["s_fwd"]) else None,
               "kB": float(v["s_bwd"]["ratio"].median()) if len(v["s_bwd"]) else None,
               "duty_median": float(v["duty"].median()), "duty_max": float(v["duty"].max())}
        for dname, kind in KINDS.items():
            k = ops[ops["kind"] == kind]
            s = samples_in(samples, k).groupby(OP_KEYS + ["op_index"])["sample_s"].median().rename("pace_s")
            j = k.merge(s.reset_index(), on=OP_KEYS + ["op_index"], how="inner")
            x, y = np.log(j["pace_s"].to_numpy()), np.log((j["host_end_s"] - j["host_start_s"]).to_numpy())
            ok = len(j) > 2 and x.std() > 0 and y.std() > 0
            one[f"corr_{dname}"] = float(np.corrcoef(x, y)[0, 1]) if ok else None
            one[f"ops_{dname}"] = int(len(j))
        out[d.name] = one
    return out


def _stats(e: np.ndarray) -> tuple[float, float]:
    a = np.abs(e)
    return float(np.median(a)), float(np.percentile(a, 90))


def verdict(t: pd.DataFrame, parts: dict, judged: str = JUDGED) -> dict:
    """C0 and R1-R4 of the rule on the delivery's rows."""
    base, s, r = (t[f"rel_error_{n}"].to_numpy() for n in ("base", judged, "R"))
    control = t["part"].isin(CONTROL_PARTS).to_numpy()
    duty = pd.concat([v["duty"] for v in parts.values()]) if parts else pd.Series(dtype=float)
    (med, p90), (bmed, _), (rmed, rp90) = _stats(s), _stats(base), _stats(r)
    moves = np.abs(s[control] - base[control])
    out = {"median": med, "p90": p90, "base_median": bmed, "R_median": rmed, "R_p90": rp90,
           "duty_median": float(duty.median()) if len(duty) else None,
           "c0": bool(len(duty)) and float(duty.median()) <= DUTY_MAX,
           "host_bound_rows": int((~control).sum()), "judged": int((~control).sum()) >= MIN_HOST_BOUND_ROWS,
           "r1": med <= TARGET_MEDIAN and p90 <= TARGET_P90, "r2": med < bmed,
           "r3": bool(np.all(moves <= CONTROL_MOVE)), "r4": med <= rmed + R4_MEDIAN and p90 <= rp90 + R4_P90,
           "rows": int(len(t)), "control_rows": int(control.sum())}
    out["pass"] = bool(out["judged"] and out["c0"] and out["r1"] and out["r2"] and out["r3"] and out["r4"])
    return out


def _clean(v):
    return None if isinstance(v, float) and math.isnan(v) else v


def judgement(run: Path, gpu: str) -> dict:
    """The delivery's rows under every setting, the diagnostics and the verdict, JSON-ready."""
    t, parts = fresh_errors(Path(run), gpu)
    rows = [{k: _clean(v) for k, v in r.items()} for r in t.to_dict(orient="records")]
    stats = {name: dict(zip(("median", "p90"), _stats(t[f"rel_error_{name}"].to_numpy()))) for name in SETTINGS}
    return {"gpu": gpu, "run": Path(run).name, "settings": list(SETTINGS), "rows": rows, "stats": stats,
            "diagnostics": diagnostics(Path(run), parts), "verdict": verdict(t, parts)}


def _parser():
    ap = entry.parser("calibration.ep_pace_during", __doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    j = sub.add_parser("judge", help="the delivery's held-out EP2 rows under every setting, C0 and R1-R4")
    j.add_argument("run", type=entry.folder, metavar="RUN_FOLDER")
    j.add_argument("gpu", type=entry.gpu_name, metavar="GPU")
    r = sub.add_parser("record", help="write the judgement of the delivery to OUT.json")
    r.add_argument("out", type=Path, metavar="OUT.json")
    r.add_argument("gpu", type=entry.gpu_name, metavar="GPU")
    r.add_argument("run", type=entry.folder, metavar="RUN_FOLDER")
    return ap


@entry.script
def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "record":
        repo = Path(__file__).resolve().parents[1]
        dirty = prereg.dirty_paths(repo)
        if dirty:
            print(f"record: uncommitted changes under twin/ or calibration/ ({dirty[:3]}): the file names the "
                  "commit of the code that computed it", file=sys.stderr)
            return 2
        cmd = " ".join(["python -m calibration.ep_pace_during record", str(args.out), args.gpu, str(args.run)])
        out = {"command": cmd, "code_commit": ep_probe_rate._code_commit(), **judgement(args.run, args.gpu)}
        write_json_text(args.out, json.dumps(out, indent=1) + "\n")
        print({k: out["verdict"][k] for k in ("median", "p90", "duty_median", "c0", "r1", "r2", "r3", "r4", "pass")})
        return 0
    pd.set_option("display.width", 240)
    t, parts = fresh_errors(args.run, args.gpu)
    for name in SETTINGS:
        print(error_line(f"{name:6s}", t[f"rel_error_{name}"].to_numpy()))
    print(t.to_string(index=False, float_format=lambda x: f"{x:+.4g}"))
    for part, d in diagnostics(args.run, parts).items():
        print(part, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()})
    v = verdict(t, parts)
    print(f"S: median {v['median']:.2%} P90 {v['p90']:.2%} (base {v['base_median']:.2%}; R {v['R_median']:.2%} / "
          f"{v['R_p90']:.2%}; duty {v['duty_median']}) C0 {v['c0']} R1 {v['r1']} R2 {v['r2']} R3 {v['r3']} "
          f"R4 {v['r4']}: {'passes' if v['pass'] else 'fails'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""s28pp42 (issue 13, docs/notes/s28pp42_rule.md): P on two GPUs. s28pp4 adopted P (pipeline.ADOPT_EP_FORWARD_LEASE:
a probed run's EP forwards at the lease's own solved rate) on a fresh 4xH200 lease; this judges the same statistic
on a fresh 2xH200 lease, blind, against base (the committed `h200x2` folder's rate, 27.95 us a launch).

The probe is the configuration the `h200x2` folder's own fitting EP2 forwards come from (v2-lite-slice 8 layers, seq
4096, EP2 at 1 and 4 micro-batches, split fit), run first on the same two GPUs; P's rate = the median, over its
fitting EP forwards (every rank, count and timed step; at least MIN_PROBE_OPS), of each op's solved seconds a launch
(lease_probe's statistic: pipeline._solved_rates with the folder's EP terms and device gap). Settings, each pricing
every judged row before it runs (prereg.two_gpu_inputs with num_gpus 2; the run's routing records):
  base  every switch as committed (the EP forward at the folder's `fwd`);
  P     the host dict carrying EP_FWD_LEASE_KEY at the probe's rate (simulate_row: every EP forward at it).
  Q     (amendment A1) P, and the forwards of rows without EP (pp2) at the probe's rate too
        (pipeline.ADOPT_FORWARD_LEASE_ALL): judged on the pp2 control rows.
pp2 rows (ep 1) are priced identically under base and P (the control). pipeline.ADOPT_EP_FORWARD_LEASE_X2 (False until
the rule says adopt) decides what probed_inputs gives a probed two-GPU run.

    python -m calibration.lease_probe2 register            the registered predictions (before the run; clean tree)
    python -m calibration.lease_probe2 register-q          Q's registered predictions of the control rows (A1)
    python -m calibration.lease_probe2 rate RUN_FOLDER     the probe's rate (P's input)
    python -m calibration.lease_probe2 judge RUN_FOLDER [--gpu h200]    every row under each setting, the verdict
    python -m calibration.lease_probe2 record OUT.json RUN_FOLDER [--gpu h200]   the judgement file
    python -m calibration.lease_probe2 attribute RUN4 [--json calibration/s28pp42_attribution.json]
                                      item 1 on a four-GPU delivery (s28pp4's): the ops paired one by one, and
                                      which op kind's measured spans recover the idle target
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
from calibration import entry, judged_under, prereg
from calibration import ep_forward_host as efh
from calibration import lease_probe as lp
from calibration import records as rec
from calibration.pipeline_judgement import IDLE_FLOOR_OF_STEP, IDLE_TOL
from calibration.records_io import csv_exists, json_exists, read_csv, read_json, write_json_text

GPU = "h200"
NUM_GPUS = 2
# real/campaigns/s28pp42.sh's PARTS (tests/real/test_real_campaign_s28pp42.py holds them equal)
PROBE_PART = "probe"
PROBE = ("v2-lite-slice", 8, 4096, (1, 4))
# part, model, layers, seq len: EP2 (pp 1, ep 2) at EP_COUNTS, every row judged
CASES = (("qwen3-6l2k5", "qwen3moe-mla-slice", 6, 2560), ("qwen2-3l3k", "qwen2moe-mla-slice", 3, 3072),
         ("qwen3g-5l1k5", "qwen3moe-slice", 5, 1536), ("bench-6l1k5", "bench-small", 6, 1536),
         ("mixtral-3l1k5", "mixtral-mla-slice", 3, 1536))
EP_COUNTS = (1, 2, 4, 8)
# the control: pp 2, ep 1, every schedule at PP_COUNTS (priced the same under every setting)
CONTROL = ("qwen2-pp2", "qwen2moe-mla-slice", 8, 2560)
PP_COUNTS = (4, 8)
SCHEDULES = ("1f1b", "zb1p", "dualpipev", "dualpipe")
SETTINGS = ("base", "P", "Q")
MIN_PROBE_OPS = 16            # fewer solved probe forwards: P is not judged
MIN_EP_ROWS = 12              # fewer EP2 rows delivered: not judged
P_GRID_S = (20e-6, 25e-6, 30e-6, 35e-6, 40e-6, 45e-6)   # P registered as a function of the probe's rate
PREDICTIONS_FILE = prereg.PREREG_DIR / "s28pp42_predictions.csv"
Q_PREDICTIONS_FILE = prereg.PREREG_DIR / "s28pp42_q_predictions.csv"
MIN_CONTROL_ROWS = 6          # fewer pp2 rows delivered: Q not judged
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s28pp42_judgement.json"
# the rule's numbers (docs/notes/s28pp42_rule.md)
MARGIN = 0.005                # R1: P's median and P90 |error| over the EP2 rows at most this above base's
Q_GAIN = 0.005                # Q1: Q's median |error| over the control rows at least this below base's
TARGET_MEDIAN, TARGET_P90 = 0.05, 0.10


def case_rows(gpu: str = GPU) -> list[dict]:
    """Every judged row (real/pipeline/bench.py's fields), in the campaign's order: the EP2 parts, then the control."""
    base = {"gpu": gpu, "num_gpus": NUM_GPUS, "micro_batch_seqs": 1, "precision": "bf16"}
    rows = [{"part": part, **base, "bench": "ep_step", "model": model, "schedule": "1f1b", "pp": 1, "ep": 2, "dp": 2,
             "num_microbatches": n, "seq_len": seq, "num_layers": layers}
            for part, model, layers, seq in CASES for n in EP_COUNTS]
    part, model, layers, seq = CONTROL
    rows += [{"part": part, **base, "bench": "pipeline_step", "model": model, "schedule": s, "pp": 2, "ep": 1, "dp": 1,
              "num_microbatches": n, "seq_len": seq, "num_layers": layers} for n in PP_COUNTS for s in SCHEDULES]
    return rows


@contextlib.contextmanager
def setting(name: str):
    """Q's switch on for `name` Q (base and P: as committed, off), restored after."""
    before = pipe.ADOPT_FORWARD_LEASE_ALL
    pipe.ADOPT_FORWARD_LEASE_ALL = name == "Q"
    try:
        yield
    finally:
        pipe.ADOPT_FORWARD_LEASE_ALL = before


def inputs_of(name: str, rate_s: float | None = None, gpu: str = GPU, root: Path | str | None = None,
              cache: dict | None = None) -> tuple:
    """The committed `<gpu>x2` inputs a setting prices with (P: the host dict carrying the probe's rate)."""
    root = rec.records_root() if root is None else root
    cache = {} if cache is None else cache
    if gpu not in cache:
        cache[gpu] = prereg.two_gpu_inputs(gpu, root, NUM_GPUS)
    profile, accumulate, host, hold = cache[gpu]
    if name in ("P", "Q"):
        if rate_s is None:
            raise ValueError(f"{name} needs the probe's rate")
        ref_key = f"{gpu}:ref"
        if ref_key not in cache:
            cache[ref_key] = folder_rate_s(gpu, root, cache[gpu])
        host = {**(host or {}), pipe.EP_FWD_LEASE_KEY: float(rate_s)}
        if cache[ref_key] is not None:
            host[pipe.EP_FWD_LEASE_REF_KEY] = cache[ref_key]
    return profile, accumulate, host, hold


def folder_rate_s(gpu: str = GPU, root: Path | str | None = None, inputs: tuple | None = None) -> float | None:
    """The probe's statistic of the committed `<gpu>x2` folder's own fitting EP forwards (its pipeline_ops at the
    folder's root: the probe's configuration on the folder's lease; Q's reference), or None."""
    root = rec.records_root() if root is None else root
    folder = Path(root) / f"{gpu}x{NUM_GPUS}"
    if not csv_exists(folder / "pipeline_ops.csv"):
        return None
    inputs = prereg.two_gpu_inputs(gpu, root, NUM_GPUS) if inputs is None else inputs
    rates = efh.part_rates_s(folder, gpu, inputs)
    return float(np.median(rates)) if len(rates) >= MIN_PROBE_OPS else None


def probed_inputs(rate_s: float | None, gpu: str = GPU, root: Path | str | None = None) -> tuple:
    """A probed two-GPU run's pricing inputs: P's where pipeline.ADOPT_EP_FORWARD_LEASE_X2 (and a rate), else base's."""
    root = rec.records_root() if root is None else root
    use = pipe.ADOPT_EP_FORWARD_LEASE_X2 and rate_s is not None
    return inputs_of("P" if use else "base", rate_s if use else None, gpu, root)


def predict(rows: list[dict], name: str, rate_s: float | None = None, routing: pd.DataFrame | None = None,
            gpu: str = GPU, cache: dict | None = None) -> pd.DataFrame:
    """The twin's step seconds (and each pipeline rank's idle) of `rows` under setting `name`."""
    inputs = inputs_of(name, rate_s, gpu, cache=cache)
    clean = [{k: v for k, v in r.items() if k != "part"} for r in rows]
    with setting(name):
        return prereg.predict_ep(clean, num_gpus=NUM_GPUS, routing=routing, inputs={gpu: inputs})


def registered() -> pd.DataFrame:
    """The registration: each judged row under base and under P at each rate of P_GRID_S (balanced routing)."""
    rows = case_rows()
    cache: dict = {}
    out = pd.DataFrame(rows)
    base = predict(rows, "base", cache=cache)
    out["predicted_base_s"] = base["predicted_s"].to_numpy()
    for r in P_GRID_S:
        out[f"predicted_P{r * 1e6:.0f}us_s"] = predict(rows, "P", r, cache=cache)["predicted_s"].to_numpy()
    return out


def registered_q() -> pd.DataFrame:
    """Q's registration (amendment A1): each control row under base and under Q at each rate of P_GRID_S, with each
    pipeline rank's predicted idle (balanced routing; ep 1 rows read none)."""
    rows = [r for r in case_rows() if r["ep"] == 1]
    cache: dict = {}
    out = pd.DataFrame(rows)
    base = predict(rows, "base", cache=cache)
    out["predicted_base_s"] = base["predicted_s"].to_numpy()
    for c in [c for c in base.columns if str(c).startswith("predicted_idle_r")]:
        out[f"base_{c}"] = base[c].to_numpy()
    for r in P_GRID_S:
        q = predict(rows, "Q", r, cache=cache)
        out[f"predicted_Q{r * 1e6:.0f}us_s"] = q["predicted_s"].to_numpy()
        for c in [c for c in q.columns if str(c).startswith("predicted_idle_r")]:
            out[f"Q{r * 1e6:.0f}us_{c}"] = q[c].to_numpy()
    return out


# --- the probe ------------------------------------------------------------------------------------------------------

def probe_rate(folder: Path, gpu: str = GPU, root: Path | str | None = None,
               cache: dict | None = None) -> dict:
    """{rate_s (None under MIN_PROBE_OPS solved forwards), ops, by_rank_s, by_count_s} of a probe folder (the run's
    `probe` part): each fitting EP forward's solved seconds a launch with base's inputs."""
    root = rec.records_root() if root is None else root
    folder = Path(folder)
    if not csv_exists(folder / "pipeline_ops.csv"):
        return {"rate_s": None, "ops": 0, "by_rank_s": {}, "by_count_s": {}}
    inputs = inputs_of("base", gpu=gpu, root=root, cache=cache)
    h = efh.fitting_forwards(folder).reset_index(drop=True)
    by_op = lp.forward_rates_by_op(h, folder, inputs, gpu) if not h.empty else {}   # each forward solved once
    rates = list(by_op.values())
    out = {"rate_s": float(np.median(rates)) if len(rates) >= MIN_PROBE_OPS else None, "ops": len(rates),
           "by_rank_s": {}, "by_count_s": {}}
    for col, key in (("rank", "by_rank_s"), ("num_microbatches", "by_count_s")):
        for v, g in h.groupby(col):
            r = [by_op[i] for i in g.index if i in by_op]
            if r:
                out[key][str(v)] = float(np.median(r))
    return out


# --- the judgement --------------------------------------------------------------------------------------------------

def judge_rows(run: Path, rate_s: float | None, gpu: str = GPU, parts: tuple | None = None) -> pd.DataFrame:
    """Every timed row of the judged parts (CASES and CONTROL; `parts` another list of part folders, for a mock)
    priced under each setting (P only with a probe rate) at the run's routing."""
    cache: dict = {}
    names = [c[0] for c in CASES] + [CONTROL[0]] if parts is None else list(parts)
    out = []
    for part in names:
        d = Path(run) / part
        if not csv_exists(d / "pipeline_step.csv"):
            continue
        steps = read_csv(d / "pipeline_step.csv")
        steps = steps[steps["bench"].isin(["ep_step", "pipeline_step"]) & (steps["time_s"] > 0)]
        routing = read_csv(d / "pipeline_routing.csv") if csv_exists(d / "pipeline_routing.csv") else None
        ops = read_csv(d / "pipeline_ops.csv") if csv_exists(d / "pipeline_ops.csv") else None
        for _, s in steps.iterrows():
            row = {"gpu": gpu, **{k: s[k] for k in efh.STEP_KEYS}}
            r = {"part": Path(part).name, **{k: s[k] for k in ("bench", "model", "schedule", "pp", "ep",
                                                               "num_microbatches", "seq_len", "num_layers")},
                 "gpu_name": str(s["gpu_name"]), "measured_s": float(s["time_s"])}
            for name in SETTINGS:
                if name != "base" and rate_s is None:
                    continue
                pred = predict([row], name, rate_s if name != "base" else None, routing, gpu, cache).iloc[0]
                r[f"predicted_{name}_s"] = float(pred["predicted_s"])
                r[f"rel_error_{name}"] = r[f"predicted_{name}_s"] / r["measured_s"] - 1.0
                if name in ("base", "Q") and s["bench"] == "pipeline_step" and ops is not None:
                    idle = {int(str(k)[len("predicted_idle_r"):-2]): float(v) for k, v in pred.items()
                            if str(k).startswith("predicted_idle_r") and not pd.isna(v)}
                    meas = pipe.measured_idle_s(pipe.ops_of(pd.Series(row), ops))
                    within = [abs(idle[int(k) % len(idle)] - m) <= max(IDLE_TOL * m, IDLE_FLOOR_OF_STEP * r["measured_s"])
                              for k, m in meas.items()] if idle else []
                    tag = "" if name == "base" else f"_{name}"
                    r[f"idle_ranks{tag}"], r[f"idle_within{tag}"] = len(within), int(sum(within))
            out.append(r)
    return pd.DataFrame(out)


def verdict(t: pd.DataFrame, probe: dict) -> dict:
    """The rule's clauses (docs/notes/s28pp42_rule.md) on one delivery's rows and the decision (G judged apart)."""
    ep = t[t["bench"] == "ep_step"] if len(t) else t
    ctrl = t[t["bench"] == "pipeline_step"] if len(t) else t
    bmed, bp90 = lp._stats(ep["rel_error_base"]) if len(ep) else (math.nan, math.nan)
    out = {"ep_rows": int(len(ep)), "control_rows": int(len(ctrl)), "probe_rate_s": probe.get("rate_s"),
           "probe_ops": probe.get("ops"),
           "base": {"median": bmed, "p90": bp90, "t": bool(bmed <= TARGET_MEDIAN and bp90 <= TARGET_P90)},
           "judged": bool(len(ep) >= MIN_EP_ROWS and probe.get("rate_s") is not None)}
    if len(ctrl):
        out["base"]["control_median"], out["base"]["control_p90"] = lp._stats(ctrl["rel_error_base"])
        if "idle_ranks" in ctrl:
            out["base"]["idle_within"], out["base"]["idle_ranks"] = (int(ctrl["idle_within"].sum()),
                                                                     int(ctrl["idle_ranks"].sum()))
    if "rel_error_P" not in t:
        out["P"] = {"judged": False, "pass": False, "why": "no probe rate"}
        out["adopt"] = False
        return out
    med, p90 = lp._stats(ep["rel_error_P"])
    c = {"judged": out["judged"], "median": med, "p90": p90,
         "r1": bool(med <= bmed + MARGIN and p90 <= bp90 + MARGIN),
         "r2": bool(med <= TARGET_MEDIAN and p90 <= TARGET_P90),
         "r3": bool((ctrl["predicted_P_s"] == ctrl["predicted_base_s"]).all()),
         "signed_mean": float(ep["rel_error_P"].mean()), "base_signed_mean": float(ep["rel_error_base"].mean())}
    c["pass"] = bool(c["judged"] and c["r1"] and c["r2"] and c["r3"])
    out["P"] = c
    out["adopt"] = c["pass"]
    if "rel_error_Q" in t and len(ctrl):
        qmed, qp90 = lp._stats(ctrl["rel_error_Q"])
        bcm, bcp = out["base"]["control_median"], out["base"]["control_p90"]
        q = {"judged": bool(probe.get("rate_s") is not None and len(ctrl) >= MIN_CONTROL_ROWS), "median": qmed,
             "p90": qp90, "signed_mean": float(ctrl["rel_error_Q"].mean()),
             "idle_within": int(ctrl["idle_within_Q"].sum()) if "idle_within_Q" in ctrl else None,
             "idle_ranks": int(ctrl["idle_ranks_Q"].sum()) if "idle_ranks_Q" in ctrl else None,
             "q1": bool(qmed <= bcm - Q_GAIN and qp90 <= bcp),
             "q3": bool((ep["predicted_Q_s"] == ep["predicted_P_s"]).all())}
        q["q2"] = bool(q["idle_within"] is not None and q["idle_within"] >= out["base"].get("idle_within", 0))
        q["pass"] = bool(q["judged"] and q["q1"] and q["q2"] and q["q3"])
        out["Q"] = q
    else:
        out["Q"] = {"judged": False, "pass": False, "why": "no probe rate or no control rows"}
    out["adopt_q"] = out["Q"]["pass"]
    return out


def judgement(run: Path, gpu: str = GPU) -> dict:
    probe = probe_rate(Path(run) / PROBE_PART, gpu)
    t = judge_rows(Path(run), probe["rate_s"], gpu)
    v = verdict(t, probe)
    records = [{k: (None if isinstance(x, float) and math.isnan(x) else x) for k, x in r.items()}
               for r in t.to_dict(orient="records")]
    return {"gpu": gpu, "num_gpus": NUM_GPUS, "run": Path(run).name, "settings": list(SETTINGS), "probe": probe,
            "rows": records, "verdict": v}


def format_judgement(out: dict) -> str:
    t = pd.DataFrame(out["rows"])
    lines = []
    if len(t):
        cols = ["part", "bench", "schedule", "num_microbatches", "measured_s"] + [
            f"rel_error_{n}" for n in SETTINGS if f"rel_error_{n}" in t] + [c for c in ("idle_within", "idle_ranks",
                                                                                      "idle_within_Q") if c in t]
        lines.append(t[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}"))
    v, p = out["verdict"], out["probe"]
    lines.append(f"probe: {p['ops']} forwards, rate " + (f"{p['rate_s'] * 1e6:.2f} us" if p["rate_s"] else "none")
                 + f" (by rank {({k: round(x * 1e6, 2) for k, x in p['by_rank_s'].items()})}, by count "
                 f"{({k: round(x * 1e6, 2) for k, x in p['by_count_s'].items()})})")
    b = v["base"]
    lines.append(f"EP2 rows {v['ep_rows']}: base {b['median']:.2%} / {b['p90']:.2%} (T {b['t']})")
    c = v["P"]
    if "median" in c:
        lines.append(f"P: {c['median']:.2%} / {c['p90']:.2%} (signed mean {c['signed_mean']:+.2%}, base "
                     f"{c['base_signed_mean']:+.2%}); R1 {c['r1']} R2 (T) {c['r2']} R3 {c['r3']}: pass {c['pass']}")
    q = v.get("Q", {})
    if "median" in q:
        lines.append(f"Q (control rows): {q['median']:.2%} / {q['p90']:.2%} (signed mean {q['signed_mean']:+.2%}), idle "
                     f"{q['idle_within']} of {q['idle_ranks']}; Q1 {q['q1']} Q2 {q['q2']} Q3 {q['q3']}: pass {q['pass']}")
    if "control_median" in b:
        lines.append(f"control (pp2, {v['control_rows']} rows): {b['control_median']:.2%} / {b['control_p90']:.2%}, "
                     f"idle {b.get('idle_within')} of {b.get('idle_ranks')} rank-rows within")
    lines.append(f"judged: {v['judged']}; adopt P on two GPUs: {v['adopt']}; adopt Q: {v.get('adopt_q')}")
    return "\n".join(lines)


# --- `twin validate`'s section ------------------------------------------------------------------------------------------

DELIVERY_GLOB = "s28pp42_*"    # calibration/measurements/h200x2/s28pp42_<stamp>/<part>/


def section(root: Path | str | None = None) -> dict:
    """The registration's base predictions (balanced routing, before the run) against the delivery's measured steps,
    and the judgement file's figures (the run's routing; each setting's verdict) where they exist."""
    root = rec.records_root() if root is None else root
    found = sorted(p for p in (Path(root) / f"{GPU}x{NUM_GPUS}").glob(DELIVERY_GLOB) if p.is_dir())
    out: dict = {"run": found[0].name if found else None, "rows": [], "judgement": None}
    if not found or not csv_exists(PREDICTIONS_FILE):
        return out
    reg = read_csv(PREDICTIONS_FILE)
    for part in sorted({str(x) for x in reg["part"]}):
        if not csv_exists(found[0] / part / "pipeline_step.csv"):
            continue
        steps = read_csv(found[0] / part / "pipeline_step.csv")
        mine = reg[reg["part"] == part]
        for _, s in steps[steps["time_s"] > 0].iterrows():
            m = mine[(mine["schedule"] == s["schedule"]) & (mine["num_microbatches"] == s["num_microbatches"])]
            if len(m):
                out["rows"].append({"part": part, "bench": str(s["bench"]), "schedule": str(s["schedule"]),
                                    "num_microbatches": int(s["num_microbatches"]), "measured_s": float(s["time_s"]),
                                    "registered_base_s": float(m["predicted_base_s"].iloc[0])})
    if json_exists(JUDGEMENT_FILE):
        judged = read_json(JUDGEMENT_FILE)
        out["judgement"] = {"run": judged["run"], "verdict": judged["verdict"], "note": judged_under.note(judged)}
    return out


def format_section(sec: dict) -> str:
    lines = [f"s28pp42 two-GPU EP2 steps on a fresh lease, P on two GPUs ({sec.get('run') or 'no delivery'}):"]
    j = sec.get("judgement")
    if j:
        v = j["verdict"]
        b, p, q = v["base"], v["P"], v.get("Q", {})
        lines.append(f"  judged at the run's routing (probe {v['probe_rate_s'] * 1e6:.2f} us a launch): EP2 {v['ep_rows']} "
                     f"rows base {b['median']:.1%} / {b['p90']:.1%}, P {p['median']:.1%} / {p['p90']:.1%} "
                     f"(adopted: {'P' if v['adopt'] else 'none'}); pp2 control base {b.get('control_median', 0):.1%} / "
                     f"{b.get('control_p90', 0):.1%}, Q {q.get('median', 0):.1%} / {q.get('p90', 0):.1%} "
                     f"(adopted: {'Q' if v.get('adopt_q') else 'none'})")
        if j.get("note"):   # s30stale: a switch moved since the judgement; its figures are that day's
            lines.append(f"  {j['note']}")
    if sec.get("rows"):
        t = pd.DataFrame(sec["rows"])
        for bench, g in t.groupby("bench", sort=False):
            e = (g["registered_base_s"] / g["measured_s"] - 1.0).abs()
            lines.append(f"  registered before the run, base (balanced routing), {bench} {len(g)} rows: median |err| "
                         f"{e.median():.1%}, P90 {np.percentile(e, 90):.1%}")
    return "\n".join(lines)


# --- item 1: the EP backward's B ops and the idle target, on a four-GPU delivery (diagnostic) ----------------------

ATTRIBUTION_FILE = Path(__file__).resolve().parent / "s28pp42_attribution.json"
KIND_SETS = (("none", ()), ("F", ("F",)), ("FB", ("FB",)), ("F+FB", ("F", "FB")), ("B", ("B",)), ("BW", ("BW",)),
             ("W", ("W",)), ("B+BW+W", ("B", "BW", "W")), ("all", None))


def config_attribution(row: dict, ops: pd.DataFrame, routing: pd.DataFrame | None, inputs: tuple) -> dict:
    """One four-GPU configuration under s28pp4's P (its run's routing): each op paired with the twin's (twin / measured
    - 1 per op, by kind) and, per KIND_SETS entry, the rank-rows whose idle the twin's schedule puts within when that
    set of kinds runs at its measured median spans (the rest at the twin's; idle_terms.simulate_durations)."""
    from calibration import idle_terms as it   # lazy: only this diagnostic replays schedules
    from calibration.whole_step import gpu_spec   # lazy: as above
    from twin.core.specs import get_model   # lazy: as above
    profile, accumulate, host, hold = inputs
    sr = pd.Series(row)
    rows = pipe.ep_layer_rows(pd.DataFrame() if routing is None else routing, sr, get_model(row["model"]).top_k)
    with lp.setting("P"):
        res, _, det = pipe.simulate_row(sr, gpu_spec(row["gpu"]), profile, accumulate, host, None, rows, hold)
    sched, pp = it.schedule_of(row), int(row["pp"])
    meas, twin = it.measured_op_s(sr, ops), it.twin_op_s(res)
    idle_m = pipe.measured_idle_s(pipe.ops_of(sr, ops))
    within = {}
    for name, kinds in KIND_SETS:
        if name == "none":
            idle = list(res.idle_s)
        else:
            dur = {k: meas[k] if (kinds is None or str(sched.programs[k[0]][k[1]].kind) in kinds) else v
                   for k, v in twin.items()}
            idle = list(it.simulate_durations(row, det, dur, hold, fb_half=True).idle_s)
        within[name] = int(sum(abs(idle[int(g) % pp] - m) <= max(IDLE_TOL * m, IDLE_FLOOR_OF_STEP * row["time_s"])
                               for g, m in idle_m.items()))
    paired: dict[str, list] = {}
    for k, v in twin.items():
        if k in meas and meas[k] > 0:
            paired.setdefault(str(sched.programs[k[0]][k[1]].kind), []).append(v / meas[k] - 1.0)
    return {"rank_rows": len(idle_m), "within": within, "paired": paired,
            "pooled": {kind: (float(np.median([twin[k] for k in twin if str(sched.programs[k[0]][k[1]].kind) == kind]))
                              / float(np.median([meas[k] for k in meas if str(sched.programs[k[0]][k[1]].kind) == kind]))
                              - 1.0) for kind in paired}}


def attribution(run: Path, gpu: str = GPU) -> dict:
    """Item 1 over every judged part of a four-GPU lease_probe delivery (s28pp4's), under P at its probe's rate:
    per part and layout the paired op errors' medians and the pooled-median comparison; the idle rank-rows within per
    KIND_SETS entry, per layout."""
    from calibration import idle_terms as it   # lazy: as config_attribution
    rate = lp.probe_rate(Path(run))["rate_s"]
    inputs = lp.inputs_of("P", rate)
    parts, idle, configs = [], {}, []
    for part, *_ in lp.CASES:
        d = Path(run) / part
        steps, ops = read_csv(d / "pipeline_step.csv"), read_csv(d / "pipeline_ops.csv")
        routing = read_csv(d / "pipeline_routing.csv") if csv_exists(d / "pipeline_routing.csv") else None
        by_layout: dict[str, dict] = {}
        for _, s in steps[steps["bench"] == "pipeline_step"].iterrows():
            row = {**{k: s[k] for k in it.ROW_KEYS}, "gpu": gpu, "time_s": float(s["time_s"])}
            a = config_attribution(row, ops, routing, inputs)
            layout = f"pp{int(row['pp'])}ep{int(row['ep'])}"
            configs.append({"part": part, "layout": layout, "schedule": row["schedule"],
                            "num_microbatches": int(row["num_microbatches"]), "within": a["within"]})
            acc = by_layout.setdefault(layout, {"paired": {}, "pooled": {}})
            for kind, v in a["paired"].items():
                acc["paired"].setdefault(kind, []).extend(v)
                acc["pooled"].setdefault(kind, []).append(a["pooled"][kind])
            tot = idle.setdefault(layout, {"rank_rows": 0, **{n: 0 for n, _ in KIND_SETS}})
            tot["rank_rows"] += a["rank_rows"]
            for n, c in a["within"].items():
                tot[n] += c
        for layout, acc in by_layout.items():
            parts.append({"part": part, "layout": layout,
                          "paired_median": {k: float(np.median(v)) for k, v in acc["paired"].items()},
                          "paired_ops": {k: len(v) for k, v in acc["paired"].items()},
                          "config_pooled_median": {k: float(np.median(v)) for k, v in acc["pooled"].items()}})
    return {"run": Path(run).name, "rate_s": rate, "ops": parts, "idle_within": idle, "configs": configs}


# --- the command line -----------------------------------------------------------------------------------------------

def _parser():
    ap = entry.parser("calibration.lease_probe2", __doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("register", help="write the registered predictions (refuses a dirty tree or an existing file)")
    sub.add_parser("register-q", help="write Q's registered predictions of the control rows (amendment A1)")
    r = sub.add_parser("rate", help="the probe's rate of a delivery")
    r.add_argument("run", type=entry.folder, metavar="RUN_FOLDER")
    j = sub.add_parser("judge", help="a delivery's rows under each setting, and the verdict")
    j.add_argument("run", type=entry.folder, metavar="RUN_FOLDER")
    w = sub.add_parser("record", help="write the judgement of a delivery to OUT.json")
    w.add_argument("out", type=Path, metavar="OUT.json")
    w.add_argument("run", type=entry.folder, metavar="RUN_FOLDER")
    a = sub.add_parser("attribute", help="item 1 on a four-GPU delivery (s28pp4's)")
    a.add_argument("run", type=entry.folder, metavar="RUN4")
    a.add_argument("--json", type=Path, default=None, metavar="OUT.json", help="also write the record (ATTRIBUTION_FILE)")
    for p in (r, j, w):
        p.add_argument("--gpu", type=entry.gpu_name, default=GPU, help="the delivery's card (h200; h100: a 2xH100 pair)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "register":
        df = prereg.write_registered(PREDICTIONS_FILE, registered)
        print(df.to_string(index=False))
        return 0
    if args.command == "register-q":
        df = prereg.write_registered(Q_PREDICTIONS_FILE, registered_q)
        print(df[[c for c in df.columns if "idle" not in c]].to_string(index=False))
        return 0
    if args.command == "attribute":
        from calibration.step_replay import _rounded   # lazy: the record's rounding, only here
        out = attribution(args.run)
        cmd = " ".join(["python -m calibration.lease_probe2 attribute", args.run.as_posix()]
                       + (["--json", str(args.json)] if args.json else []))
        text = json.dumps(_rounded({"command": cmd, **out}), indent=1)
        print(text)
        if args.json:
            write_json_text(args.json, text + "\n")
        return 0
    if args.command == "rate":
        print(json.dumps(probe_rate(args.run / PROBE_PART, args.gpu), indent=1))
        return 0
    if args.command == "record":
        if prereg.refuses_uncommitted_record():
            return 2
    out = judgement(args.run, args.gpu)
    print(format_judgement(out))
    if args.command == "record":
        cmd = " ".join(["python -m calibration.lease_probe2 record", str(args.out), args.run.as_posix()]
                       + ([f"--gpu {args.gpu}"] if args.gpu != GPU else []))
        prereg.write_code_record(args.out, cmd, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

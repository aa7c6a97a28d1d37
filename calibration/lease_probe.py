"""s28pp4 (issue 13, docs/notes/s28pp4_rule.md): the four-GPU EP forward's host rate judged blind on a fresh 4xH200
lease: base (the committed `h200x4` folder's own lease), F4 (F's pool of the committed 4-GPU leases, s27epfwd) and
P (this lease's own rate, from a probe run at the campaign's start).

The EP forward of a pp2ep2 stage is host-paced at seq 2048-3072 (docs/notes/s26pipeop3.md): its launches issue at
one host rate a launch, and that rate belongs to the lease (s27epfwd: 17-30 us across the committed 4-GPU leases,
the `h200x4` folder's 17.8 the fastest). Settings, each pricing every judged row before it runs (the committed
`h200x4` folder's inputs, prereg.two_gpu_inputs with num_gpus 4; the run's routing records, ADOPT_EP_ROUTED_ROWS):
  base  every switch as committed (the EP forward at the folder's `fwd` / `fwd@<role>`);
  F4    pipeline.ADOPT_EP_FORWARD_HOST_X4: every EP forward at EP_FWD_POOLED_HOST_S["h200x4"] (26.72 us);
  P     pipeline.ADOPT_EP_FORWARD_LEASE: every EP forward at the probe's rate: the median, over the probe's fitting
        EP forwards (every rank, schedule and timed step), of each op's solved rate (ep_forward_host.part_rates_s:
        pipeline.solved_host_rate_s with the folder's EP terms and device gap), the statistic F's pool takes of
        each committed part. The probe is the configuration those parts hold (v2-lite-slice 8 layers, seq 4096,
        pp2ep2 at 4 micro-batches, every schedule, split fit), run first on the same four GPUs.
Non-EP rows (pp4) are priced identically under every setting (a control).

    python -m calibration.lease_probe register            the registered predictions (before the run; clean tree)
    python -m calibration.lease_probe rate RUN_FOLDER     the probe's rate (P's input)
    python -m calibration.lease_probe judge RUN_FOLDER    every row under each setting, idle, ranking, the verdict
    python -m calibration.lease_probe record OUT.json RUN_FOLDER   the judgement file (JUDGEMENT_FILE)
    python -m calibration.lease_probe components RUN_FOLDER [--json calibration/s28pp4_components.json]
                                                          item 4: where the remaining miss sits
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
from calibration import entry, judged_under, prereg, prereg_pp4
from calibration import ep_forward_host as efh
from calibration import records as rec
from calibration.pipeline_judgement import IDLE_FLOOR_OF_STEP, IDLE_TOL, step_times_by_rep_s
from calibration.records_io import csv_exists, json_exists, read_csv, read_json, write_json_text

GPU = "h200"
NUM_GPUS = 4
# real/campaigns/s28pp4.sh's PARTS (tests/real/test_real_campaign_s28pp4.py holds them equal)
PROBE_PART = "probe"
PROBE = ("v2-lite-slice", 8, 4096, {(2, 2): (4,)})
# part, model, layers, seq len: each at pp2ep2 8 and 12, pp4 8, every schedule
CASES = (("qwen3-2k", "qwen3moe-mla-slice", 8, 2048), ("qwen2-2k5", "qwen2moe-mla-slice", 8, 2560),
         ("qwen3g-3k", "qwen3moe-slice", 8, 3072))
COUNTS = {(2, 2): (8, 12), (4, 1): (8,)}
SCHEDULES = ("1f1b", "zb1p", "dualpipev", "dualpipe")
MARKS_PART = "marks"          # qwen3moe-mla-slice seq 2048 pp2ep2 at 8, 1F1B, real/ep.py's host marks (item 4)
SETTINGS = ("base", "F4", "P")
CANDIDATES = ("F4", "P")
MIN_PROBE_OPS = 16            # fewer solved probe forwards: P is not judged
P_GRID_S = (15e-6, 20e-6, 25e-6, 30e-6, 35e-6, 40e-6)   # P registered as a function of the probe's rate
PREDICTIONS_FILE = prereg.PREREG_DIR / "s28pp4_predictions.csv"
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s28pp4_judgement.json"
# the rule's numbers (docs/notes/s28pp4_rule.md)
R1_GAIN = 0.005               # a candidate's median |error| over the pp2ep2 rows at least this below base's
TARGET_MEDIAN, TARGET_P90 = 0.05, 0.10


def case_rows(gpu: str = GPU) -> list[dict]:
    """Every judged pipeline_step row (real/pipeline/bench.py's fields), in the campaign's order."""
    return [{"part": part, "gpu": gpu, "bench": "pipeline_step", "model": model, "schedule": sched, "pp": pp,
             "ep": ep, "dp": NUM_GPUS // pp, "num_gpus": NUM_GPUS, "num_microbatches": n, "micro_batch_seqs": 1,
             "seq_len": seq, "precision": "bf16", "num_layers": layers}
            for part, model, layers, seq in CASES for (pp, ep), counts in COUNTS.items() for n in counts
            for sched in SCHEDULES]


@contextlib.contextmanager
def setting(name: str):
    """The switches of `name` on (base: both candidates off), restored after."""
    before = (pipe.ADOPT_EP_FORWARD_HOST_X4, pipe.ADOPT_EP_FORWARD_LEASE)
    pipe.ADOPT_EP_FORWARD_HOST_X4, pipe.ADOPT_EP_FORWARD_LEASE = name == "F4", name == "P"
    try:
        yield
    finally:
        pipe.ADOPT_EP_FORWARD_HOST_X4, pipe.ADOPT_EP_FORWARD_LEASE = before


def inputs_of(name: str, rate_s: float | None = None, root: Path | str | None = None,
              cache: dict | None = None) -> tuple:
    """The committed `h200x4` inputs a setting prices with (P: the host dict carrying the probe's rate)."""
    root = rec.records_root() if root is None else root
    cache = {} if cache is None else cache
    key = "F4" if name == "F4" else "base"
    if key not in cache:
        with setting(key):
            cache[key] = prereg.two_gpu_inputs(GPU, root, NUM_GPUS)
    profile, accumulate, host, hold = cache[key]
    if name == "P":
        if rate_s is None:
            raise ValueError("P needs the probe's rate")
        host = {**(host or {}), pipe.EP_FWD_LEASE_KEY: float(rate_s)}
    return profile, accumulate, host, hold


def predict(rows: list[dict], name: str, rate_s: float | None = None, routing: pd.DataFrame | None = None,
            cache: dict | None = None) -> pd.DataFrame:
    """The twin's step seconds and each pipeline rank's idle of `rows` under setting `name`."""
    inputs = inputs_of(name, rate_s, cache=cache)
    clean = [{k: v for k, v in r.items() if k != "part"} for r in rows]
    with setting(name):
        return prereg.predict_ep(clean, num_gpus=NUM_GPUS, routing=routing, inputs={GPU: inputs})


def registered() -> pd.DataFrame:
    """The registration: each judged row under base and F4 and under P at each rate of P_GRID_S (balanced
    routing: the run's is not known before it runs), with base's predicted idle per pipeline rank."""
    rows = case_rows()
    cache: dict = {}
    out = pd.DataFrame(rows)
    base = predict(rows, "base", cache=cache)
    out["predicted_base_s"] = base["predicted_s"].to_numpy()
    for c in [c for c in base.columns if str(c).startswith("predicted_idle_r")]:
        out[f"base_{c}"] = base[c].to_numpy()
    out["predicted_F4_s"] = predict(rows, "F4", cache=cache)["predicted_s"].to_numpy()
    for r in P_GRID_S:
        out[f"predicted_P{r * 1e6:.0f}us_s"] = predict(rows, "P", r, cache=cache)["predicted_s"].to_numpy()
    return out


# --- the probe ------------------------------------------------------------------------------------------------------

def probe_rate(run: Path, root: Path | str | None = None, cache: dict | None = None) -> dict:
    """{rate_s (None under MIN_PROBE_OPS solved forwards), ops, by_rank_s, by_schedule_s} of the run's probe part:
    each fitting EP forward's solved seconds a launch (ep_forward_host.part_rates_s with base's inputs)."""
    root = rec.records_root() if root is None else root
    folder = Path(run) / PROBE_PART
    if not csv_exists(folder / "pipeline_ops.csv"):
        return {"rate_s": None, "ops": 0, "by_rank_s": {}, "by_schedule_s": {}}
    inputs = inputs_of("base", root=root, cache=cache)
    h = efh.fitting_forwards(folder).reset_index(drop=True)
    by_op = forward_rates_by_op(h, folder, inputs, GPU)    # each forward solved once, read per rank and schedule
    rates = list(by_op.values())
    out = {"rate_s": float(np.median(rates)) if len(rates) >= MIN_PROBE_OPS else None, "ops": len(rates),
           "by_rank_s": {}, "by_schedule_s": {}}
    for col, key in (("rank", "by_rank_s"), ("schedule", "by_schedule_s")):
        for v, g in h.groupby(col):
            r = [by_op[i] for i in g.index if i in by_op]
            if r:
                out[key][str(v)] = float(np.median(r))
    return out


def forward_rates_by_op(h: pd.DataFrame, folder: Path, inputs: tuple, gpu: str) -> dict:
    """{index label in `h`: its solved rate} of each EP forward of `h` (pipeline.solved_rate_rows with the EP terms
    and device gap of `inputs`)."""
    profile, accumulate, host, _ = inputs
    terms = {k: v for k, v in (host or {}).items() if k in pipe.EP_TERM_KEYS}
    return {i: rate for i, d, _, rate in pipe.solved_rate_rows(h, Path(folder), gpu, profile, accumulate,
                                                                 (host or {}).get("device_gap", 0.0), terms)
            if d == "fwd"}


# --- the judgement --------------------------------------------------------------------------------------------------

def measured_rows(run: Path) -> list[tuple[dict, dict, pd.DataFrame | None]]:
    """(row for the twin, measured: time_s, step_times_s, measured_idle_s, routing) of every judged part's
    pipeline_step rows, in CASES' order."""
    out = []
    for part, *_ in CASES:
        d = Path(run) / part
        if not csv_exists(d / "pipeline_step.csv"):
            continue
        steps = read_csv(d / "pipeline_step.csv")
        steps = steps[(steps["bench"] == "pipeline_step") & (steps["time_s"] > 0)]
        routing = read_csv(d / "pipeline_routing.csv") if csv_exists(d / "pipeline_routing.csv") else None
        ops = read_csv(d / "pipeline_ops.csv") if csv_exists(d / "pipeline_ops.csv") else None
        for _, s in steps.iterrows():
            row = {"part": part, "gpu": GPU, **{k: s[k] for k in efh.STEP_KEYS}}
            mine = pipe.ops_of(pd.Series(row), ops) if ops is not None else None
            meas = {"time_s": float(s["time_s"]), "gpu_name": str(s["gpu_name"]),
                    "step_times_s": step_times_by_rep_s(mine),
                    "measured_idle_s": ({int(r): float(v) for r, v in pipe.measured_idle_s(mine).items()}
                                        if mine is not None and len(mine) else {})}
            out.append((row, meas, routing))
    return out


def _stats(e) -> tuple[float, float]:
    return efh._stats(e)


def judge_rows(run: Path, rate_s: float | None) -> pd.DataFrame:
    """Every judged row priced under each setting (P only where the probe gave a rate) at the run's routing."""
    cache: dict = {}
    out = []
    for row, meas, routing in measured_rows(run):
        r = {**{k: row[k] for k in ("part", "model", "schedule", "pp", "ep", "num_microbatches", "seq_len",
                                    "num_layers")}, **meas}
        for name in SETTINGS:
            if name == "P" and rate_s is None:
                continue
            pred = predict([row], name, rate_s if name == "P" else None, routing, cache).iloc[0]
            r[f"predicted_{name}_s"] = float(pred["predicted_s"])
            r[f"rel_error_{name}"] = r[f"predicted_{name}_s"] / r["time_s"] - 1.0
            r[f"idle_{name}"] = {int(str(k)[len("predicted_idle_r"):-2]): float(v) for k, v in pred.items()
                                 if str(k).startswith("predicted_idle_r") and not pd.isna(v)}
        out.append(r)
    return pd.DataFrame(out)


def idle_within(t: pd.DataFrame, name: str) -> tuple[int, int]:
    """(rank-rows within IDLE_TOL of the measured idle or IDLE_FLOOR_OF_STEP of the step, rank-rows) under `name`:
    each measured global rank against its pipeline rank's (rank % pp) predicted idle."""
    met = total = 0
    for _, r in t.iterrows():
        pred = r[f"idle_{name}"]
        for rank, m in r["measured_idle_s"].items():
            p = pred.get(int(rank) % int(r["pp"]))
            if p is None:
                continue
            total += 1
            met += abs(p - m) <= max(IDLE_TOL * m, IDLE_FLOOR_OF_STEP * r["time_s"])
    return int(met), int(total)


def ranking(t: pd.DataFrame, name: str) -> list[dict]:
    """prereg_pp4.ranking's pairs under `name`'s predictions."""
    rows = t.assign(gpu=GPU, predicted_s=t[f"predicted_{name}_s"])
    return prereg_pp4.ranking(rows)


def verdict(t: pd.DataFrame, probe: dict) -> dict:
    """The rule's clauses (docs/notes/s28pp4_rule.md) per candidate, and the decision."""
    ep = t[t["ep"] > 1]
    ctrl = t[t["ep"] == 1]
    bmed, bp90 = _stats(ep["rel_error_base"])
    bidle = idle_within(t, "base")
    bmis = sum(1 for p in ranking(t, "base") if p["resolved"] and not p["ordered"])
    amed, ap90 = _stats(t["rel_error_base"])
    out = {"rows": int(len(t)), "ep_rows": int(len(ep)), "control_rows": int(len(ctrl)),
           "probe_rate_s": probe.get("rate_s"), "probe_ops": probe.get("ops"),
           "base": {"ep_median": bmed, "ep_p90": bp90, "median": amed, "p90": ap90, "idle_within": bidle[0],
                    "idle_ranks": bidle[1], "misordered": bmis,
                    "resolved": sum(1 for p in ranking(t, "base") if p["resolved"]),
                    "t": bool(amed <= TARGET_MEDIAN and ap90 <= TARGET_P90)},
           "judged": len(ep) >= 12}
    for name in CANDIDATES:
        if f"rel_error_{name}" not in t:
            out[name] = {"judged": False, "why": "no probe rate" if name == "P" else "no rows"}
            continue
        med, p90 = _stats(ep[f"rel_error_{name}"])
        amed_c, ap90_c = _stats(t[f"rel_error_{name}"])
        idle = idle_within(t, name)
        mis = sum(1 for p in ranking(t, name) if p["resolved"] and not p["ordered"])
        c = {"judged": out["judged"], "ep_median": med, "ep_p90": p90, "median": amed_c, "p90": ap90_c,
             "idle_within": idle[0], "idle_ranks": idle[1], "misordered": mis,
             "r1": bool(med <= bmed - R1_GAIN and p90 <= bp90),
             "r2": bool(idle[0] >= bidle[0]),
             "r3": bool(mis <= bmis),
             "r4": bool((ctrl[f"predicted_{name}_s"] == ctrl["predicted_base_s"]).all()),
             "t": bool(amed_c <= TARGET_MEDIAN and ap90_c <= TARGET_P90)}
        c["pass"] = bool(c["judged"] and c["r1"] and c["r2"] and c["r3"] and c["r4"])
        out[name] = c
    passing = [n for n in CANDIDATES if out[n].get("pass")]
    # at most one: the lower P90 over the pp2ep2 rows, then the lower median (G is judged apart and must hold)
    out["adopt"] = min(passing, key=lambda n: (out[n]["ep_p90"], out[n]["ep_median"])) if passing else None
    return out


def judgement(run: Path) -> dict:
    probe = probe_rate(run)
    t = judge_rows(Path(run), probe["rate_s"])
    v = verdict(t, probe)
    records = []
    for r in t.to_dict(orient="records"):
        records.append({k: (None if isinstance(x, float) and math.isnan(x) else
                            ({str(a): b for a, b in x.items()} if isinstance(x, dict) else x)) for k, x in r.items()})
    return {"gpu": GPU, "run": Path(run).name, "settings": list(SETTINGS),
            "pooled_s": pipe.EP_FWD_POOLED_HOST_S.get(f"{GPU}x{NUM_GPUS}"), "probe": probe, "rows": records,
            "verdict": v}


def rows_of(judged: dict) -> pd.DataFrame:
    """A judgement file's rows as judge_rows gives them (JSON's string keys of the idle dicts back to ranks)."""
    t = pd.DataFrame(judged["rows"])
    for col in [c for c in t.columns if c == "measured_idle_s" or c.startswith("idle_")]:
        t[col] = [{int(k): v for k, v in (d or {}).items()} for d in t[col]]
    return t


def format_judgement(out: dict) -> str:
    t = pd.DataFrame(out["rows"])
    cols = ["part", "schedule", "pp", "ep", "num_microbatches", "time_s"] + [f"rel_error_{n}" for n in SETTINGS
                                                                            if f"rel_error_{n}" in t]
    lines = [t[cols].to_string(index=False, float_format=lambda x: f"{x:.4f}")]
    v, p = out["verdict"], out["probe"]
    lines.append(f"probe: {p['ops']} forwards, rate " + (f"{p['rate_s'] * 1e6:.2f} us" if p["rate_s"] else "none")
                 + f" (by rank {({k: round(x * 1e6, 2) for k, x in p['by_rank_s'].items()})})")
    for name in ("base",) + CANDIDATES:
        c = v[name]
        if name != "base" and not c.get("judged", False) and "ep_median" not in c:
            lines.append(f"{name}: not judged ({c.get('why')})")
            continue
        lines.append(f"{name}: pp2ep2 {c['ep_median']:.2%} / {c['ep_p90']:.2%}, all {c['median']:.2%} / "
                     f"{c['p90']:.2%}, idle {c['idle_within']}/{c['idle_ranks']}, misordered {c['misordered']}"
                     + ("" if name == "base" else f"; R1 {c['r1']} R2 {c['r2']} R3 {c['r3']} R4 {c['r4']} "
                        f"T {c['t']}: pass {c['pass']}"))
    lines.append(f"adopt: {v['adopt']}")
    return "\n".join(lines)


# --- item 4: the per-component residual -----------------------------------------------------------------------------

COMPONENTS_FILE = Path(__file__).resolve().parent / "s28pp4_components.json"


def op_residuals(run: Path, rate_s: float) -> list[dict]:
    """Per judged part, layout and op kind (F, B, W, BW, FB), over every rank's timed compute ops: the measured
    median device span and the twin's span of the same op under base and under P at `rate_s` (step_replay.op_table's
    pairing: idle_terms.twin_row on prereg_pp4's path, balanced routing), and the median host lead at the op's end
    (near 0: host-paced)."""
    from calibration import step_replay   # lazy: only the diagnostic reads the replay's tables
    sub = Path(run).name
    out = {}
    for name in ("base", "P"):
        inputs = {GPU: inputs_of(name, rate_s if name == "P" else None)}
        with setting(name):
            out[name] = step_replay.op_table(Path(run).parents[1], (sub,), inputs, GPU)
    rows = []
    for b, p in zip(out["base"], out["P"]):
        if b["model"] == PROBE[0]:
            continue
        rows.append({"model": b["model"], "seq_len": b["seq_len"], "layout": b["layout"], "kind": b["kind"],
                     "ops": b["ops"], "measured_s": b["device_s"], "base_s": b["twin_s"], "P_s": p["twin_s"],
                     "lead_end_s": b["lead_end_s"]})
    return rows


def twin_forward_split(rate_s: float, model: str = "qwen3moe-mla-slice", seq: int = 2048,
                       cache: dict | None = None) -> dict:
    """The twin's forward of a pp2ep2 first stage (4 of 8 layers, one sequence) under P at `rate_s`: launches and
    their host seconds, the EP calls' and syncs' host seconds (their terms), its device seconds (the GPU's work
    alone) - the split the marked forward is compared with. `cache`: inputs_of's."""
    profile, accumulate, host, _ = inputs_of("P", rate_s, cache=cache)
    host = pipe.ep_forward_at(host, rate_s)
    spec = pipe._spec_of({"model": model, "num_layers": 8})
    stages = pipe.stage_layers(spec.num_layers, 2)
    ops = pipe.stage_ops(spec, stages[0], True, False, 1, seq, "bf16", pipe.gpu_spec(GPU), profile, 2, 0.0,
                         accumulate, host)
    launches = [h for h, _ in ops.f if h is not None and not getattr((h, _), "term", "")]
    terms: dict[str, float] = {}
    n_launch, launch_s, device_s = 0, 0.0, 0.0
    for op in ops.f:
        h, g = op[0], op[1]
        term = getattr(op, "term", "")
        if term:
            terms[term] = terms.get(term, 0.0) + (h or 0.0)
        elif h is not None:
            n_launch += 1
            launch_s += h
        device_s += g or 0.0
    del launches
    return {"model": model, "seq_len": seq, "rate_s": rate_s, "launches": n_launch, "launch_s": launch_s,
            "terms_s": terms, "device_s": device_s}


def marked_forward(run: Path) -> dict:
    """The marked part's forwards (real/ep.py's host marks; 1F1B at 8, qwen3moe-mla-slice seq 2048), medians over
    ranks, steps and micro-batches, ms: calibration.ep_host's split of each forward's host interval (issue,
    collective calls, .tolist() waits) and per MoE layer (layer 0, the later layers' median)."""
    from calibration import ep_host   # lazy: the marks' reader, only for this diagnostic
    d = Path(run) / MARKS_PART / "marks_host"
    marks, ops = ep_host.load(d)
    seg = ep_host.forward_segments(marks, ops)
    summ = ep_host.forward_summary(seg).iloc[0]
    groups = ep_host.measured_groups(seg)
    first = groups[groups["layer"] == groups["layer"].min()].drop(columns=list(ep_host.OP_KEYS) + ["split", "layer"])
    later = groups[groups["layer"] > groups["layer"].min()].drop(columns=list(ep_host.OP_KEYS) + ["split", "layer"])
    span = (ops[ops["kind"] == "F"]["end_s"] - ops[ops["kind"] == "F"]["start_s"]).median()
    return {"forward_device_span_s": float(span), "forward_host_s": float(summ["host"]),
            **{f"{c}_s": float(summ[c]) for c in ep_host.CLASSES if c in summ},
            "layer0_s": {k: float(v) for k, v in first.median().items() if not pd.isna(v)},
            "later_layer_s": {k: float(v) for k, v in later.median().items() if not pd.isna(v)}}


def components(run: Path, rate_s: float) -> dict:
    """Item 4 (after the verdict, diagnostic): where the remaining miss sits. `ops`: op_residuals; `configs`: each
    pp2ep2 configuration's measured step span against the twin's schedule replayed step by step with that step's
    own op spans (`configs`: step_replay.config_checks under P: a residual there is the schedule's, not an op's; the tail; the
    twin's makespan against the replay's and the share of that gap the forwards or the backwards recover); `forward`: the marked forward
    against the twin's forward split under P."""
    from calibration import step_replay   # lazy: as op_residuals
    sub = Path(run).name
    with setting("P"):
        rows = step_replay.config_rows(Path(run).parents[1], (sub,), {GPU: inputs_of("P", rate_s)}, GPU)
    rows = [r for r in rows if r["model"] != PROBE[0] and int(r["ep"]) > 1]
    return {"run": sub, "rate_s": rate_s, "ops": op_residuals(run, rate_s), "configs": rows,
            "forward": {"marked": marked_forward(run), "twin_P": twin_forward_split(rate_s)}}


# --- `twin validate`'s section ----------------------------------------------------------------------------------------

DELIVERY_GLOB = "s28pp4_*"    # calibration/measurements/h200x4/s28pp4_<stamp>/<part>/


def delivery(root: Path | str | None = None) -> str | None:
    """The delivery's folder name under `<root>/h200x4` (the first, by name), or None."""
    root = rec.records_root() if root is None else root
    found = sorted(p.name for p in (Path(root) / f"{GPU}x{NUM_GPUS}").glob(DELIVERY_GLOB) if p.is_dir())
    return found[0] if found else None


def section(root: Path | str | None = None, path: Path = PREDICTIONS_FILE) -> dict:
    """The registered predictions (balanced routing, before the run) beside the delivery's records, as prereg_pp4
    judges its deliveries: base's registered column, and the judgement file's figures (the run's routing) where
    it exists."""
    root = rec.records_root() if root is None else root
    sub = delivery(root)
    if not csv_exists(path) or sub is None:
        return {**prereg_pp4.compared(pd.DataFrame(), pd.DataFrame(), sub or "s28pp4"), "judgement": None}
    reg = read_csv(path)
    preds = reg.rename(columns={"predicted_base_s": "predicted_s",
                                **{c: c[len("base_"):] for c in reg.columns if c.startswith("base_predicted_idle")}})
    sec = prereg_pp4.compared(preds, prereg_pp4.measured(root, sub), sub)
    judged = read_json(JUDGEMENT_FILE) if json_exists(JUDGEMENT_FILE) else None
    sec["judgement"] = None if judged is None else {"run": judged["run"], "verdict": judged["verdict"],
                                                    "note": judged_under.note(judged)}
    return sec


def format_section(sec: dict) -> str:
    """The judgement file's figures first (every setting at the run's routing; the adopted one named), then the
    registration's base rows beside the records (prereg_pp4's table)."""
    table = prereg_pp4.format_table(sec).replace("prereg-pp4", "s28pp4 base").splitlines()
    head = table[0].replace("Pre-registered four-GPU pipeline steps", "s28pp4 four-GPU pipeline steps on a fresh lease")
    lines = [head]
    j = sec.get("judgement")
    if j:
        v = j["verdict"]
        probe = f"{v['probe_rate_s'] * 1e6:.2f} us a launch" if v.get("probe_rate_s") else "none"
        lines.append(f"  s28pp4 judged at the run's routing (the lease's probe {probe}; adopted: {v['adopt'] or 'none'}):")
        for name in ("base",) + CANDIDATES:
            c = v.get(name) or {}
            if "ep_median" in c:
                tag = " (adopted)" if name == v["adopt"] else ""
                lines.append(f"    {name}{tag}: pp2ep2 median |err| {c['ep_median']:.1%}, P90 {c['ep_p90']:.1%}; all "
                             f"{c['median']:.1%} / {c['p90']:.1%}; idle {c['idle_within']} of {c['idle_ranks']} "
                             f"rank-rows within; misordered {c['misordered']}")
        if j.get("note"):   # s30stale: a switch moved since the judgement; its figures are that day's
            lines.append(f"    {j['note']}")
        if len(table) > 1:
            lines.append("  registered before the run, base (balanced routing):")
    return "\n".join(lines + table[1:])


# --- the command line -----------------------------------------------------------------------------------------------

def _parser():
    ap = entry.parser("calibration.lease_probe", __doc__)
    sub = ap.add_subparsers(dest="command", required=True)
    sub.add_parser("register", help="write the registered predictions (refuses a dirty tree or an existing file)")
    r = sub.add_parser("rate", help="the probe's rate of a delivery")
    r.add_argument("run", type=entry.folder, metavar="RUN_FOLDER")
    j = sub.add_parser("judge", help="a delivery's rows under each setting, and the verdict")
    j.add_argument("run", type=entry.folder, metavar="RUN_FOLDER")
    w = sub.add_parser("record", help="write the judgement of a delivery to OUT.json")
    w.add_argument("out", type=Path, metavar="OUT.json")
    w.add_argument("run", type=entry.folder, metavar="RUN_FOLDER")
    c = sub.add_parser("components", help="the per-component residual of the marked part")
    c.add_argument("run", type=entry.folder, metavar="RUN_FOLDER")
    c.add_argument("--json", type=Path, default=None, metavar="OUT.json", help="also write the record (COMPONENTS_FILE)")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "register":
        df = prereg.write_registered(PREDICTIONS_FILE, registered)
        print(df.drop(columns=[c for c in df.columns if "idle" in c]).to_string(index=False))
        return 0
    if args.command == "rate":
        print(json.dumps(probe_rate(args.run), indent=1))
        return 0
    if args.command == "components":
        from calibration.step_replay import _rounded   # lazy: the record's rounding, only here
        out = components(args.run, probe_rate(args.run)["rate_s"])
        text = json.dumps(_rounded({"command": " ".join(["python -m calibration.lease_probe components",
                                                          args.run.as_posix()] + (["--json", str(args.json)]
                                                                                  if args.json else [])),
                                    **out}), indent=1, default=float)
        print(text)
        if args.json:
            write_json_text(args.json, text + "\n")
        return 0
    if args.command == "record":
        if prereg.refuses_uncommitted_record():
            return 2
    out = judgement(args.run)
    print(format_judgement(out))
    if args.command == "record":
        cmd = " ".join(["python -m calibration.lease_probe record", str(args.out), args.run.as_posix()])
        prereg.write_code_record(args.out, cmd, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

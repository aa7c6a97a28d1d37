"""Where the twin's per-rank pipeline idle misses come from, and one term for it (session s25idle,
docs/notes/s25idle_rule.md).

Issue 13 asks each rank's idle within 10% of the measured one. s21pp4's four-GPU deliveries (4xH200)
missed it on 33 of 140 and 15 of 48 rank-rows. Idle is the step span less a rank's op time, on both
sides (calibration.pipeline.measured_idle_s: span of the step's schedule ops less the rank's
compute-op spans; twin.sim.pipeline: makespan less the rank's compute tasks), so a miss is either the
schedule mechanism (dependencies, transfers, the host between ops) or the op durations that feed it.

`replay` separates the two: it runs the twin's own schedule simulation (twin.sim.pipeline through
calibration.pipeline.PipelineCosts' per-op durations) on the measured op durations of a run (each op's
median device span over the timed steps and the data-parallel replicas). Where the replay's idle meets
the measured idle, the mechanism is right and the miss is in the op durations; `replay(..., which=)`
takes the measured durations of some op categories only (category: the op's kind, the role of its
model stage, whether it is its rank's first op) to find which ops carry the miss.

Term S (ADOPT_SEEN_OP_RATIOS, off): each op of a four-GPU pipeline row at the twin's duration times the
median ratio measured / twin of its category over the same model's and layout's seen records
(SEEN_SUBDIRS of the ratios' GPU folder), the schedule then simulated with those durations
(`predict_with_ratios`). It scales op durations toward the op spans of other runs, never idle: idle
follows from the simulation.

    python -m calibration.idle_terms replay [SUBDIR ...]   # seen records: twin vs replayed idle
    python -m calibration.idle_terms fresh                 # the s25idle campaign's rows: baseline, S, replay
    python -m calibration.idle_terms fresh --json calibration/s25idle_judgement.json   # and its record
    python -m calibration.idle_terms write                 # the fresh cases' registered predictions (done once)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import pipeline as pipe
from calibration import prereg
from calibration import prereg_pp4
from calibration import records as rec
from calibration.p2p_waits import COMPUTE_KINDS
from calibration.pipeline_judgement import IDLE_FLOOR_OF_STEP, IDLE_TOL
from calibration.records_io import glob_csv, read_csv, read_json, write_json_text
from calibration.whole_step import gpu_spec
from twin.core.schedules import build_schedule
from twin.sim.pipeline import PipelineResult, simulate_pipeline

# (model, num_layers, seq_len, {(pp, ep): micro-batch counts}): real/campaigns/s25idle.sh's MODELS in
# its order (a test holds them equal); layouts pp2ep2 then pp4 on four GPUs, one sequence a micro-batch
FRESH_CASES = (("qwen3moe-mla-slice", 8, 4096, {(2, 2): (8,), (4, 1): (12,)}),
               ("mixtral-mla-slice", 8, 2048, {(2, 2): (6,), (4, 1): (12,)}))
FRESH_SUBDIR = "s25idle"   # calibration/measurements/<gpu>x4/s25idle/<model>/
SCHEDULES = ("1f1b", "zb1p", "dualpipev", "dualpipe")

ADOPT_SEEN_OP_RATIOS = False   # term S; docs/notes/s25idle_rule.md decides it on the fresh rows
# the seen records whose op spans give S's ratios (docs/notes/s25idle_rule.md section 2): both s21pp4
# deliveries, on the one GPU that holds them
SEEN_SUBDIRS = (prereg_pp4.RECORDS_SUBDIR, prereg_pp4.SECOND_SUBDIR)
RATIO_GPU = "h200"
PREDICTIONS_FILE = prereg.PREREG_DIR / "s25idle_predictions.csv"   # B and S, written before the fresh run
REPLAY_MET_FRACTION = 0.90     # R0: the replay puts at least this share of rank-rows within
# the fresh judgement as `fresh --json` wrote it, with the rule's section-1 replay of the seen second
# delivery: what the tests read back (one configuration of it recomputed by today's code)
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s25idle_judgement.json"
SEEN_REPLAY_SUBDIR = prereg_pp4.SECOND_SUBDIR
ROW_KEYS = ("model", "schedule", "pp", "ep", "dp", "num_gpus", "num_microbatches", "micro_batch_seqs", "seq_len",
            "precision", "num_layers")


def schedule_of(row):
    return build_schedule(pipe.SCHEDULE_NAMES.get(str(row["schedule"]), str(row["schedule"])), int(row["pp"]),
                          int(row["num_microbatches"]))


def category(schedule, rank: int, k: int) -> tuple[str, str, bool]:
    """(op kind, role of its model stage - an FB pair's forward's -, first op of its rank)."""
    op = schedule.programs[rank][k]
    role = pipe.stage_role(schedule.stage_of(rank, op.chunk), schedule.num_model_stages)
    return str(op.kind), role, k == 0


def measured_op_s(row, ops: pd.DataFrame) -> dict[tuple[int, int], float]:
    """(pipeline rank, op index) -> the op's median device span over the configuration's timed steps
    and its data-parallel replicas (global rank % pp), from pipeline_ops rows."""
    mine = pipe.ops_of(row, ops)
    mine = mine[mine["kind"].isin(COMPUTE_KINDS) & mine["rep"].notna()]
    span = (mine["end_s"] - mine["start_s"]).to_numpy(float)
    keys = pd.DataFrame({"pr": mine["rank"].astype(int).to_numpy() % int(row["pp"]),
                         "k": mine["op_index"].astype(int).to_numpy(), "d": span})
    return {(int(pr), int(k)): float(d) for (pr, k), d in keys.groupby(["pr", "k"])["d"].median().items()}


def twin_op_s(result: PipelineResult) -> dict[tuple[int, int], float]:
    """(rank, op index) -> the simulated op's span (a rank's ops run in program order)."""
    by_rank: dict[int, list] = {}
    for rank, _, start, end in sorted(result.op_spans, key=lambda s: (s[0], s[2])):
        by_rank.setdefault(rank, []).append(end - start)
    return {(r, k): d for r, spans in by_rank.items() for k, d in enumerate(spans)}


def _parts(schedule, stage_costs: dict, rank: int, op, seconds: float, fb_half: bool) -> tuple:
    """An op's seconds as PipelineCosts' per-part durations: an FB pair split in half (`fb_half`, the
    replay as section 1 of the rule ran it) or in its stages' steady F : B (or BW) proportion."""
    if op.kind != "FB":
        return (seconds,)
    if fb_half:
        return (seconds / 2, seconds / 2)
    f = stage_costs[schedule.stage_of(rank, op.chunk)].f_s
    b_cost = stage_costs[schedule.stage_of(rank, op.b_chunk)]
    b = b_cost.b_s if op.b_split else b_cost.bw_s
    return (seconds * f / (f + b), seconds * b / (f + b))


def simulate_durations(row, details: dict, durations: dict, hold_s: float, fb_half: bool = False) -> PipelineResult:
    """The twin's schedule simulation (one pipeline, the twin's p2p seconds and send hold) with every op
    at `durations[(rank, op index)]` seconds."""
    schedule = schedule_of(row)
    costs = {int(s): pipe.StageCost(**v) for s, v in details["stage_costs"].items()}
    per_op = {(r, k): _parts(schedule, costs, r, op, durations[r, k], fb_half)
              for r, program in enumerate(schedule.programs) for k, op in enumerate(program)}
    return simulate_pipeline(schedule, pipe.PipelineCosts(schedule, costs, details["p2p_s"], per_op, hold_s),
                             streams=("compute",))


def twin_row(row, gpu: str, inputs: dict) -> tuple[PipelineResult, float, dict, float]:
    """(simulation, step seconds, details, send hold) of a four-GPU row on prereg_pp4's path
    (prereg.predict_ep: balanced routing, the host inputs of `<gpu>x4`); `inputs` caches those."""
    if gpu not in inputs:
        inputs[gpu] = prereg.two_gpu_inputs(gpu, rec.records_root(), prereg_pp4.NUM_GPUS)
    profile, accumulate, host, hold_s = inputs[gpu]
    result, step_s, details = pipe.simulate_row(pd.Series(row), gpu_spec(gpu), profile, accumulate, host, None,
                                                {}, hold_s)
    return result, step_s, details, hold_s


def step_of(row, gpu: str, inputs: dict, result: PipelineResult) -> float:
    """simulate_row's step for a simulation: max(makespan, each rank's finish after its reductions)."""
    profile = inputs[gpu][0]
    spec, schedule = pipe._spec_of(pd.Series(row)), schedule_of(row)
    stages = pipe.stage_layers(spec.num_layers, schedule.num_model_stages)
    ends = list(result.last_compute_end_s) or [result.makespan_s] * result.num_ranks
    finish = pipe.rank_finish_s(spec, schedule, stages, ends, int(row.get("dp", 1) or 1), int(row.get("ep", 1) or 1),
                                gpu_spec(gpu), profile, None)
    return max([result.makespan_s] + finish)


def folder_rows(folder: Path, model: str | None = None) -> list[tuple[dict, pd.DataFrame]]:
    """(pipeline_step row as a dict, that model folder's pipeline_ops) of every model subfolder (or of
    `model`'s only)."""
    out = []
    for path in glob_csv(folder, f"{model or '*'}/pipeline_step.csv"):
        steps, ops = read_csv(path), read_csv(Path(path).parent / "pipeline_ops.csv")
        out += [({**{k: r[k] for k in ROW_KEYS}, "time_s": float(r["time_s"])}, ops)
                for _, r in steps[steps["bench"] == "pipeline_step"].iterrows()]
    return out


def chosen(schedule, rank: int, k: int, which: frozenset | None) -> bool:
    """Whether op k of `rank` takes its measured duration in a partial replay: every op (`which` None),
    a rank's first op ("first" in `which`), a later op whose kind is in `which`."""
    if which is None:
        return True
    return "first" in which if k == 0 else schedule.programs[rank][k].kind in which


def replay_config(row: dict, ops: pd.DataFrame, gpu: str, inputs: dict, which: frozenset | None = None) -> list[dict]:
    """Per measured global rank of one configuration (a folder_rows pair): the measured idle, the
    twin's and the replay's (the twin's simulation on the measured op durations, FB halved as the
    rule's section 1; with `which` only those ops measured (chosen), the rest at the twin's), each
    within IDLE_TOL / IDLE_FLOOR_OF_STEP or not."""
    result, _, details, hold_s = twin_row(row, gpu, inputs)
    schedule, meas, twin = schedule_of(row), measured_op_s(row, ops), twin_op_s(result)
    durations = {key: meas[key] if chosen(schedule, *key, which) else d for key, d in twin.items()}
    replayed = simulate_durations(row, details, durations, hold_s, fb_half=True)
    pp, out = int(row["pp"]), []
    for rank, meas_s in sorted(pipe.measured_idle_s(pipe.ops_of(row, ops)).items()):
        tol = max(IDLE_TOL * meas_s, IDLE_FLOOR_OF_STEP * row["time_s"])
        twin_s, replay_s = result.idle_s[rank % pp], replayed.idle_s[rank % pp]
        out.append({**{k: row[k] for k in ("model", "schedule", "pp", "ep", "num_microbatches", "seq_len")},
                    "rank": int(rank), "measured_idle_s": float(meas_s), "twin_idle_s": float(twin_s),
                    "replay_idle_s": float(replay_s), "twin_within": bool(abs(twin_s - meas_s) <= tol),
                    "replay_within": bool(abs(replay_s - meas_s) <= tol)})
    return out


def replay_rows(folder: Path, gpu: str, inputs: dict, which: frozenset | None = None) -> list[dict]:
    """replay_config's rank-rows of every configuration of `folder`."""
    return [x for row, ops in folder_rows(folder) for x in replay_config(row, ops, gpu, inputs, which)]


def seen_op_pairs(root: Path | str, gpu: str, subdirs: tuple, inputs: dict, only: tuple | None = None) -> list[tuple]:
    """(model, pp, ep, category, measured s, twin s) of every op of every seen configuration (of one
    (model, pp, ep) with `only`); kept in `inputs` (under "seen_ops") so S's ratios and X's excess
    share one pass."""
    cache = inputs.setdefault("seen_ops", {})
    key = (str(root), gpu, tuple(subdirs), only)
    if key not in cache:
        out = []
        for sub in subdirs:
            for row, ops in folder_rows(Path(root) / f"{gpu}x{prereg_pp4.NUM_GPUS}" / sub, only[0] if only else None):
                if only and (row["model"], int(row["pp"]), int(row["ep"])) != only:
                    continue
                result, _, _, _ = twin_row(row, gpu, inputs)
                twin, meas, schedule = twin_op_s(result), measured_op_s(row, ops), schedule_of(row)
                out += [(row["model"], int(row["pp"]), int(row["ep"]), category(schedule, r, k), m, twin[r, k])
                        for (r, k), m in meas.items() if (r, k) in twin and twin[r, k] > 0]
        cache[key] = out
    return cache[key]


def seen_ratios(root: Path | str | None = None, gpu: str = RATIO_GPU,
                subdirs: tuple = SEEN_SUBDIRS, inputs: dict | None = None, excess: bool = False,
                only: tuple | None = None) -> dict:
    """S's ratios: {(model, pp, ep): {category: median over the seen ops of measured / twin seconds}};
    with `excess` (X, a diagnostic) the median of measured - twin seconds instead; with `only` (model,
    pp, ep) that entry alone (the same figures: each entry pools its own configurations only)."""
    root = rec.records_root() if root is None else root
    pooled: dict = {}
    for model, pp, ep, cat, m, t in seen_op_pairs(root, gpu, subdirs, {} if inputs is None else inputs, only):
        pooled.setdefault((model, pp, ep), {}).setdefault(cat, []).append(m - t if excess else m / t)
    return {key: {c: float(np.median(v)) for c, v in table.items()} for key, table in pooled.items()}


def ratio_for(table: dict, cat: tuple, default: float = 1.0) -> float:
    """A category's ratio (or excess); a first op without its own falls back to the kind and role's,
    then `default`."""
    if cat in table:
        return table[cat]
    return table.get((cat[0], cat[1], False), default)


def predict_rows(rows: list[dict], ratios: dict | None, inputs: dict, excess: bool = False) -> pd.DataFrame:
    """prereg.predict_ep's columns (predicted_s, predicted_idle_r<k>_s) for four-GPU rows (each with
    `gpu`); with `ratios` (term S) each op of a row whose (model, pp, ep) has ratios at its twin
    duration times its category's ratio, the schedule simulated with those durations."""
    out = []
    for r in rows:
        result, step_s, details, hold_s = twin_row(r, r["gpu"], inputs)
        table = (ratios or {}).get((r["model"], int(r["pp"]), int(r["ep"])))
        if table:
            schedule, twin = schedule_of(r), twin_op_s(result)
            scaled = {key: (max(0.0, d + ratio_for(table, category(schedule, *key), 0.0)) if excess
                            else d * ratio_for(table, category(schedule, *key))) for key, d in twin.items()}
            result = simulate_durations(r, details, scaled, hold_s)
            step_s = step_of(r, r["gpu"], inputs, result)
        out.append({**r, "predicted_s": float(step_s),
                    **{f"predicted_idle_r{k}_s": float(v) for k, v in enumerate(result.idle_s)}})
    return pd.DataFrame(out)


def fresh_case_rows(gpus: tuple = prereg.GPUS) -> list[dict]:
    """One pipeline_step row per (gpu, fresh case, layout, count, schedule), real/pipeline's fields."""
    n_gpus = prereg_pp4.NUM_GPUS
    return [{"gpu": gpu, "bench": "pipeline_step", "model": model, "schedule": sched, "pp": pp, "ep": ep,
             "dp": n_gpus // pp, "num_gpus": n_gpus, "num_microbatches": n, "micro_batch_seqs": 1,
             "seq_len": seq, "precision": "bf16", "num_layers": layers}
            for gpu in gpus for model, layers, seq, counts in FRESH_CASES for (pp, ep), ns in counts.items()
            for n in ns for sched in SCHEDULES]


def fresh(root: Path | str | None = None, inputs: dict | None = None) -> dict:
    """The fresh rows (FRESH_SUBDIR) judged by the rule: baseline B and term S (prereg_pp4.compared:
    steps, idle, ranking), the replay's rank-rows (R0), and H1-H3. Empty sections with no records."""
    root = rec.records_root() if root is None else root
    inputs = {} if inputs is None else inputs
    meas = prereg_pp4.measured(root, FRESH_SUBDIR)
    if meas.empty:
        return {"records": False}
    keys = {tuple(m[k] for k in prereg_pp4.KEY) for _, m in meas.iterrows()}
    rows = [c for c in fresh_case_rows() if tuple(c[k] for k in prereg_pp4.KEY) in keys]
    ratios = seen_ratios(root, inputs=inputs)
    base = prereg_pp4.compared(predict_rows(rows, None, inputs).assign(code_commit="live"), meas, "s25idle B")
    term = prereg_pp4.compared(predict_rows(rows, ratios, inputs).assign(code_commit="live"), meas, "s25idle S")
    # X (diagnostic, after the judgement; not in the rule): the seen ops' additive excess in place of S's ratio
    excess = seen_ratios(root, inputs=inputs, excess=True)
    extra = prereg_pp4.compared(predict_rows(rows, excess, inputs, excess=True).assign(code_commit="live"), meas,
                                "s25idle X (diagnostic)")
    replay = []
    for gpu in sorted(set(meas["gpu"])):
        replay += [{**x, "gpu": gpu} for x in replay_rows(Path(root) / f"{gpu}x4" / FRESH_SUBDIR, gpu, inputs)]
    return {"records": True, "B": base, "S": term, "X": extra, "replay": replay, "verdict": verdict(base, term, replay),
            "ratios": ratios, "excess": excess}


def table_to_json(tables: dict) -> dict:
    """S's ratios (or X's excess) as JSON: {"model pp ep": [[kind, role, first op, value], ...]}."""
    return {f"{m} {pp} {ep}": [[k, role, first, v] for (k, role, first), v in sorted(t.items())]
            for (m, pp, ep), t in sorted(tables.items())}


def table_from_json(obj: dict) -> dict:
    """table_to_json's inverse."""
    out = {}
    for key, entries in obj.items():
        m, pp, ep = key.split()
        out[m, int(pp), int(ep)] = {(k, role, bool(first)): float(v) for k, role, first, v in entries}
    return out


def _plain(x):
    """numpy scalars and tuples as JSON's types."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    return x.item() if isinstance(x, np.generic) else x


def _diagnostic_summary(sec: dict) -> dict:
    """X's section as counts (a diagnostic after the judgement): step summaries, rank-rows within and
    resolved pairs misordered per GPU."""
    gpus = sorted(sec["by_gpu"])
    return {"by_gpu": sec["by_gpu"], "by_layout": sec["by_layout"],
            "idle_within": {g: _counts(sec, g) for g in gpus},
            "misordered": {g: sum(1 for p in sec["ranking"] if p["gpu"] == g and p["resolved"] and not p["ordered"])
                           for g in gpus}}


def judgement_record(res: dict, inputs: dict) -> dict:
    """The fresh judgement as tests read it back (JUDGEMENT_FILE): B's and S's sections (rows, idle
    rank-rows, ranking, summaries), X's counts, the replay's rank-rows, the verdict, S's ratios and X's
    excess, and the rule's section-1 replay of the seen second delivery (every op measured, and each
    rank's first op alone)."""
    seen = rec.MEASUREMENTS_DIR / f"{RATIO_GPU}x{prereg_pp4.NUM_GPUS}" / SEEN_REPLAY_SUBDIR
    return _plain({"rule": "docs/notes/s25idle_rule.md",
                   "command": "python -m calibration.idle_terms fresh --json calibration/s25idle_judgement.json",
                   **{k: res[k] for k in ("B", "S", "replay", "verdict")}, "X": _diagnostic_summary(res["X"]),
                   "ratios": table_to_json(res["ratios"]), "excess": table_to_json(res["excess"]),
                   "seen_replay": {"subdir": f"{RATIO_GPU}x{prereg_pp4.NUM_GPUS}/{SEEN_REPLAY_SUBDIR}",
                                   "all": replay_rows(seen, RATIO_GPU, inputs),
                                   "first": replay_rows(seen, RATIO_GPU, inputs, frozenset({"first"}))}})


def dump_record(obj, indent: str = "") -> str:
    """JSON with each list of rows as a table ({"columns": [...], "data": [[...], ...]}, one row a
    line; read_judgement turns it back) so the file stays small and its diffs readable."""
    inner = indent + " "
    if isinstance(obj, list) and obj and isinstance(obj[0], dict):
        cols = sorted({k for r in obj for k in r})
        return dump_record({"columns": cols, "data": [[r.get(c) for c in cols] for r in obj]}, indent)
    if isinstance(obj, dict) and obj:
        return "{\n" + ",\n".join(f"{inner}{json.dumps(k)}: {dump_record(v, inner)}" for k, v in obj.items()) + \
            "\n" + indent + "}"
    if isinstance(obj, list) and obj and isinstance(obj[0], list):
        return "[\n" + ",\n".join(inner + json.dumps(v, separators=(",", ":")) for v in obj) + "\n" + indent + "]"
    return json.dumps(obj, separators=(",", ":"), sort_keys=True)


def _rows_back(obj):
    if isinstance(obj, dict) and set(obj) == {"columns", "data"}:
        return [dict(zip(obj["columns"], values)) for values in obj["data"]]
    if isinstance(obj, dict):
        return {k: _rows_back(v) for k, v in obj.items()}
    return obj


def read_judgement(path: Path = JUDGEMENT_FILE) -> dict:
    """JUDGEMENT_FILE as judgement_record made it (rows as dicts; tuples as lists)."""
    return _rows_back(read_json(path))


def registered_predictions(inputs: dict | None = None) -> pd.DataFrame:
    """Every fresh case (h100 and h200) predicted by B and by S (column `term`), for the predictions file."""
    inputs = {} if inputs is None else inputs
    rows = fresh_case_rows()
    return pd.concat([predict_rows(rows, None, inputs).assign(term="B"),
                      predict_rows(rows, seen_ratios(inputs=inputs), inputs).assign(term="S")], ignore_index=True)


def _counts(sec: dict, gpu: str, layout: tuple | None = None) -> tuple[int, int]:
    idle = [i for i in sec["idle"] if i["gpu"] == gpu and (layout is None or (int(i["pp"]), int(i["ep"])) == layout)]
    return sum(i["within"] for i in idle), len(idle)


def verdict(base: dict, term: dict, replay: list[dict]) -> dict:
    """Per GPU: R0 and H1-H3 of docs/notes/s25idle_rule.md section 4, with the figures they rest on."""
    out = {}
    for gpu in sorted(base["by_gpu"]):
        mine = [x for x in replay if x["gpu"] == gpu]
        r0 = sum(x["replay_within"] for x in mine)
        b_in, total = _counts(base, gpu)
        s_in, _ = _counts(term, gpu)
        layouts = {(int(i["pp"]), int(i["ep"])) for i in base["idle"] if i["gpu"] == gpu}
        h1 = s_in >= b_in + (total - b_in) / 2 and all(_counts(term, gpu, lay)[0] >= _counts(base, gpu, lay)[0]
                                                       for lay in layouts)
        b_err = [x["rel_error"] for x in base["rows"] if x["gpu"] == gpu]
        s_err = [x["rel_error"] for x in term["rows"] if x["gpu"] == gpu]
        h2 = bool(np.median(np.abs(s_err)) <= np.median(np.abs(b_err)) and max(s_err) <= 0.03)
        mis = {name: sum(1 for p in sec["ranking"] if p["gpu"] == gpu and p["resolved"] and not p["ordered"])
               for name, sec in (("B", base), ("S", term))}
        h3 = mis["S"] <= mis["B"]
        out[gpu] = {"R0": bool(mine) and r0 >= REPLAY_MET_FRACTION * len(mine), "replay_within": (r0, len(mine)),
                    "idle_within_B": (b_in, total), "idle_within_S": (s_in, total), "H1": bool(h1), "H2": h2,
                    "H3": bool(h3), "misordered": mis, "adopt_S": bool(h1 and h2 and h3)}
    return out


def format_replay(rows: list[dict]) -> str:
    """Per (model, layout): rank-rows within for the twin and the replay, and the mean |miss| of each."""
    if not rows:
        return "no records"
    df = pd.DataFrame(rows)
    lines = []
    for (model, pp, ep), g in df.groupby(["model", "pp", "ep"]):
        tw = (g["twin_idle_s"] - g["measured_idle_s"]).abs().mean() * 1e3
        rp = (g["replay_idle_s"] - g["measured_idle_s"]).abs().mean() * 1e3
        lines.append(f"  {model} {prereg_pp4.layout_name(int(pp), int(ep))}: twin {int(g['twin_within'].sum())}/{len(g)} "
                     f"within (mean miss {tw:.1f} ms), replay {int(g['replay_within'].sum())}/{len(g)} ({rp:.1f} ms)")
    lines.append(f"  all: twin {int(df['twin_within'].sum())}/{len(df)}, replay {int(df['replay_within'].sum())}/{len(df)}")
    return "\n".join(lines)


def format_fresh(res: dict) -> str:
    if not res.get("records"):
        return f"s25idle fresh rows: no records yet (calibration/measurements/<gpu>x4/{FRESH_SUBDIR}/)"
    lines = []
    for name in ("B", "S", "X"):
        lines.append(prereg_pp4.format_table(res[name]))
    lines.append("replay of the fresh op durations:")
    lines.append(format_replay(res["replay"]))
    for gpu, v in res["verdict"].items():
        lines.append(f"  verdict {gpu}x4: " + ", ".join(f"{k} {v[k]}" for k in v))
    return "\n".join(lines)


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.idle_terms", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    rp = sub.add_parser("replay", help="seen records: the twin's idle and the replay's beside the measured")
    rp.add_argument("subdirs", nargs="*", default=list(SEEN_SUBDIRS))
    rp.add_argument("--gpu", default=RATIO_GPU, choices=prereg.GPUS)
    rp.add_argument("--only", default="", help="comma list of first,F,B,W,BW,FB: only those ops measured")
    sub.add_parser("ratios", help="term S's ratios from the seen records")
    fr = sub.add_parser("fresh", help="the s25idle campaign's rows judged by the rule")
    fr.add_argument("--json", type=Path, default=None, help="also write the judgement's record (JUDGEMENT_FILE)")
    sub.add_parser("write", help="the predictions file (B and S of every fresh case; refuses a dirty tree)")
    args = ap.parse_args(argv)
    inputs: dict = {}
    if args.cmd == "replay":
        for s in args.subdirs:
            print(f"{args.gpu}x4/{s}:")
            which = frozenset(x for x in args.only.split(",") if x) or None
            print(format_replay(replay_rows(rec.records_root() / f"{args.gpu}x4" / s, args.gpu, inputs, which)))
    elif args.cmd == "ratios":
        for key, table in sorted(seen_ratios(rec.records_root(), inputs=inputs).items()):
            print(key, {f"{k}/{r}{'/first' if f else ''}": round(v, 3) for (k, r, f), v in sorted(table.items())})
    elif args.cmd == "write":
        df = prereg.write_registered(PREDICTIONS_FILE, lambda: registered_predictions(inputs))
        print(f"{PREDICTIONS_FILE}: {len(df)} rows")
    else:
        res = fresh(rec.records_root(), inputs=inputs)
        print(format_fresh(res))
        if args.json is not None and res.get("records"):
            print(f"{write_json_text(args.json, dump_record(judgement_record(res, inputs)) + chr(10))}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main())

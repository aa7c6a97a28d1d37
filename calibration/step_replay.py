"""Replay each timed step of a four-GPU pipeline run with that step's own op durations (session s26pipeop
round 3, docs/notes/s26pipeop3.md): where the twin's schedule misses the measured idle, and where it does not.

calibration.idle_terms' replay runs the twin's schedule simulation on each op's MEDIAN device span over a
configuration's timed steps. At the host-paced EP shapes (pp2ep2 at seq 2048-3072, s26pipeop and s26pipeop2)
that replay put only part of the rank-rows within, which round 2 read as a schedule mechanism the twin lacks.
Here the same simulation runs once per timed step, each op at its own span in that step (the median over the
data-parallel replicas of that step, as the median replay takes it over steps too), and a rank's replayed
idle is the median over the steps of those per-step idles - the measured idle's own statistic
(calibration.pipeline.measured_idle_s: the median over steps of step span less the rank's op seconds).

If the per-step replay meets the measured idle where the median replay does not, the schedule is right step
by step and the miss is the aggregation: a pipeline's idle is a max-plus function of the op durations
(convex), so the idle of median durations understates the median idle when durations move from step to step
(Jensen's inequality). A third replay (`draws`) draws each op's span independently from its own per-step
spans: how much of the per-step replay a noise model without the steps' correlation would recover.

    python -m calibration.step_replay [SUBDIR ...]                 # h200x4 sets; default: DEFAULT_SUBDIRS
    python -m calibration.step_replay --json calibration/s26pipeop3_replay.json   # the committed record
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import idle_terms as it
from calibration import pipeline as pipe
from calibration import records as rec
from calibration.entry import parser, script
from calibration.p2p_waits import COMPUTE_KINDS
from calibration.pipeline_judgement import IDLE_FLOOR_OF_STEP, IDLE_TOL
from calibration.records_io import read_csv, write_json_text
from calibration.whole_step import gpu_spec
from twin.core.specs import get_model

GPU = "h200"
NUM_GPUS = 4
# every committed four-GPU set with pipeline_ops of its timed steps (h200x4)
DEFAULT_SUBDIRS = ("s21pp4", "s21pp4b", "s25idle", "s26pipeop", "s26pipeop_rev", "s26pipeop2", "s26pipeop2_rev")
DRAWS = 64          # independent draws of the `iid` replay
SEED = 0
RECORD_FILE = Path(__file__).resolve().parent / "s26pipeop3_replay.json"
COMMAND = "python -m calibration.step_replay --json calibration/s26pipeop3_replay.json"
REPLAYS = ("median", "step", "iid")


def step_op_s(row: dict, ops: pd.DataFrame) -> dict[tuple[int, int], dict[int, float]]:
    """(pipeline rank, op index) -> {timed step: the op's device span in that step, the median over the
    step's data-parallel replicas (global rank % pp)}, from pipeline_ops rows of one configuration."""
    pp = int(row["pp"])
    mine = pipe.ops_of(pd.Series(row), ops)
    mine = mine[mine["kind"].isin(COMPUTE_KINDS) & mine["rep"].notna()]
    keys = pd.DataFrame({"rep": mine["rep"].astype(int).to_numpy(), "pr": mine["rank"].astype(int).to_numpy() % pp,
                         "k": mine["op_index"].astype(int).to_numpy(),
                         "d": (mine["end_s"] - mine["start_s"]).to_numpy(float)})
    out: dict = {}
    for (rep, pr, k), d in keys.groupby(["rep", "pr", "k"])["d"].median().items():
        out.setdefault((int(pr), int(k)), {})[int(rep)] = float(d)
    return out


def spread(per_step: dict) -> float:
    """The median over a configuration's ops of (std / median) of the op's per-step spans."""
    return float(np.median([np.std(list(v.values())) / np.median(list(v.values())) for v in per_step.values()]))


def replay_config(row: dict, ops: pd.DataFrame, inputs: dict, gpu: str = GPU, draws: int = DRAWS,
                  seed: int = SEED) -> list[dict]:
    """Per measured global rank of one configuration: the measured idle and three replays of the twin's
    schedule (idle_terms.simulate_durations, FB halved as idle_terms' replay): `median` (each op at the
    median over steps of its per-step span), `step` (each timed step at its own spans; the median over
    steps of the replayed idle), `iid` (`draws` steps whose ops each take one of their own per-step spans,
    drawn independently; the median over draws); each within IDLE_TOL / IDLE_FLOOR_OF_STEP or not."""
    _, _, details, hold_s = it.twin_row(row, gpu, inputs)
    per_step = step_op_s(row, ops)
    steps = sorted({s for v in per_step.values() for s in v})

    def idle(durations: dict) -> np.ndarray:
        return np.asarray(it.simulate_durations(row, details, durations, hold_s, fb_half=True).idle_s)

    rng = np.random.default_rng(seed)
    keys = sorted(per_step)
    by_step = [idle({k: per_step[k][s] for k in keys}) for s in steps]
    replayed = {
        "median": idle({k: float(np.median(list(per_step[k].values()))) for k in keys}),
        "step": np.median(by_step, axis=0),
        "iid": np.median([idle({k: float(rng.choice(list(per_step[k].values()))) for k in keys})
                          for _ in range(draws)], axis=0) if draws else None}
    pp, cv, out = int(row["pp"]), spread(per_step), []
    for rank, meas in sorted(pipe.measured_idle_by_rep_s(pipe.ops_of(pd.Series(row), ops)).items()):
        meas_s = float(np.median(meas))      # pipe.measured_idle_s
        tol = max(IDLE_TOL * meas_s, IDLE_FLOOR_OF_STEP * row["time_s"])
        x = {**{k: row[k] for k in ("model", "schedule", "pp", "ep", "num_microbatches", "seq_len")},
             "rank": int(rank), "op_spread": cv, "measured_idle_s": meas_s, "tol_s": float(tol),
             # the measured idle's own step-to-step range, and in how many steps the replay of that step
             # meets that step's idle (the same tolerance)
             "measured_idle_min_s": float(np.min(meas)), "measured_idle_max_s": float(np.max(meas)),
             "steps": len(meas),
             "steps_met": int(sum(abs(r[rank % pp] - m) <= tol for r, m in zip(by_step, meas)))}
        for name, v in replayed.items():
            if v is not None:
                x[f"{name}_idle_s"] = float(v[rank % pp])
                x[f"{name}_within"] = bool(abs(v[rank % pp] - meas_s) <= tol)
        out.append(x)
    return out


FORWARD_KINDS = frozenset({"F", "FB"})    # the ops that carry a forward (FB: a forward, then a backward)


def config_checks(row: dict, ops: pd.DataFrame, inputs: dict, gpu: str = GPU) -> dict:
    """Per configuration, what the schedule could leave out, measured: each timed step's span (send, recv and
    compute ops) against the makespan of that step's replay (relative, per step); how far apart the
    data-parallel replicas (EP peers at ep > 1) start each op (median and P90 over ops and steps); the step's
    tail (step time less the median span: the closing reduction) against the twin's (step less makespan); and
    the twin's makespan against the median replay's, with the share of that gap recovered by replaying only
    the forward-carrying ops (F, FB) or only B, BW and W at their measured spans (the rest at the twin's)."""
    result, step_s, details, hold_s = it.twin_row(row, gpu, inputs)
    schedule, pp = it.schedule_of(row), int(row["pp"])
    per_step = step_op_s(row, ops)
    keys = sorted(per_step)
    mine = pipe.ops_of(pd.Series(row), ops)
    mine = mine[mine["rep"].notna()]
    sched = mine[mine["kind"].isin(COMPUTE_KINDS + ("send", "recv"))]
    spans, rel = [], []
    for s in sorted({x for v in per_step.values() for x in v}):
        d = sched[sched["rep"] == s]
        span = float(d["end_s"].max() - d["start_s"].min())
        made = it.simulate_durations(row, details, {k: per_step[k][s] for k in keys}, hold_s, fb_half=True).makespan_s
        spans.append(span)
        rel.append((span - made) / span)
    comp = mine[mine["kind"].isin(COMPUTE_KINDS)]
    starts = comp.pivot_table(index=[comp["rep"], comp["op_index"], comp["rank"] % pp], columns=comp["rank"] // pp,
                              values="start_s")
    apart = (starts.max(axis=1) - starts.min(axis=1)).dropna().to_numpy(float) if starts.shape[1] > 1 else np.zeros(1)
    meas, twin = it.measured_op_s(row, ops), it.twin_op_s(result)

    def makespan(kinds: frozenset | None) -> float:
        durations = {k: meas[k] if (kinds is None or schedule.programs[k[0]][k[1]].kind in kinds) else v
                     for k, v in twin.items()}
        return it.simulate_durations(row, details, durations, hold_s, fb_half=True).makespan_s

    twin_mk, replay_mk = makespan(frozenset()), makespan(None)
    gap = replay_mk - twin_mk
    share = {name: (makespan(kinds) - twin_mk) / gap if gap > 0 else float("nan")
             for name, kinds in (("forward_share", FORWARD_KINDS), ("backward_share", frozenset({"B", "BW", "W"})))}
    return {**{k: row[k] for k in ("model", "schedule", "pp", "ep", "num_microbatches", "seq_len")},
            "span_less_step_replay_median": float(np.median(rel)), "span_less_step_replay_max": float(np.max(rel)),
            "replica_start_apart_median_s": float(np.median(apart)),
            "replica_start_apart_p90_s": float(np.percentile(apart, 90)),
            "tail_measured_s": float(row["time_s"] - np.median(spans)), "tail_twin_s": float(step_s - result.makespan_s),
            "twin_makespan_s": float(twin_mk), "replay_makespan_s": float(replay_mk), **share}


def config_rows(root: Path | str | None = None, subdirs: tuple = DEFAULT_SUBDIRS, inputs: dict | None = None,
                gpu: str = GPU) -> list[dict]:
    """config_checks of every configuration of `<gpu>x4/<subdir>` for each subdir (with `subdir`)."""
    root = rec.records_root() if root is None else root
    inputs = {} if inputs is None else inputs
    return [{**config_checks(row, ops, inputs, gpu), "subdir": sub} for sub in subdirs
            for row, ops in it.folder_rows(Path(root) / f"{gpu}x{NUM_GPUS}" / sub)]


def format_configs(rows: list[dict]) -> str:
    df = pd.DataFrame(rows)
    out = []
    for (sub, pp, ep), g in df.groupby(["subdir", "pp", "ep"], sort=False):
        out.append(f"{sub:16s} pp{int(pp)}ep{int(ep)}: span - step replay median {g['span_less_step_replay_median'].median():+.2%}"
                   f" (max {g['span_less_step_replay_max'].max():+.2%}); replicas' op starts apart median "
                   f"{g['replica_start_apart_median_s'].median() * 1e3:.2f} ms (P90 up to {g['replica_start_apart_p90_s'].max() * 1e3:.2f});"
                   f" tail measured - twin {(g['tail_measured_s'] - g['tail_twin_s']).median() * 1e3:+.2f} ms; makespan gap "
                   f"{((g['replay_makespan_s'] - g['twin_makespan_s']) / g['replay_makespan_s']).median():.1%}, forward share "
                   f"{g['forward_share'].min():.0%}-{g['forward_share'].max():.0%}")
    return "\n".join(out)


FORWARD_SETS = (("s21pp4", "qwen2moe-mla-slice"), ("s21pp4", "qwen3moe-mla-slice"), ("s26pipeop", "qwen2moe-mla-slice"),
                ("s26pipeop2", "qwen2moe-mla-slice"), ("s26pipeop2", "qwen3moe-mla-slice"))
FIT_SUBDIR = ""     # the four-GPU host rates' own records: calibration/measurements/<gpu>x4/ (v2-lite-slice pp2ep2)


def forward_row(row: dict, ops: pd.DataFrame, inputs: dict, routing: pd.DataFrame | None, gpu: str = GPU) -> dict:
    """One configuration's forwards (F ops): the median measured span over ranks and steps against the twin's
    median F span under balanced routing (prereg_pp4's path) and, with `routing`, with each MoE layer at its
    most loaded EP rank's routed rows (pipeline.ep_layer_rows of the run's own pipeline_routing)."""
    result, _, _, _ = it.twin_row(row, gpu, inputs)
    schedule, meas = it.schedule_of(row), it.measured_op_s(row, ops)
    forwards = [k for k in meas if schedule.programs[k[0]][k[1]].kind == "F"]
    out = {**{k: row[k] for k in ("model", "schedule", "pp", "ep", "num_microbatches", "seq_len")},
           "measured_s": float(np.median([meas[k] for k in forwards])),
           "twin_s": float(np.median([it.twin_op_s(result)[k] for k in forwards]))}
    if routing is not None:
        profile, accumulate, host, hold_s = inputs[gpu]
        rows = pipe.ep_layer_rows(routing, pd.Series(row), get_model(row["model"]).top_k)
        routed, _, _ = pipe.simulate_row(pd.Series(row), gpu_spec(gpu), profile, accumulate, host, None, rows, hold_s)
        out["twin_routed_s"] = float(np.median([it.twin_op_s(routed)[k] for k in forwards]))
    return out


def forward_rows(root: Path | str | None = None, inputs: dict | None = None, gpu: str = GPU) -> list[dict]:
    """forward_row of the 1F1B pp2ep2 configurations of FORWARD_SETS (with routing) and of every configuration
    of the host rates' own fitting folder (FIT_SUBDIR, its rows' split kept)."""
    root = rec.records_root() if root is None else root
    inputs = {} if inputs is None else inputs
    base, out = Path(root) / f"{gpu}x{NUM_GPUS}", []
    for sub, model in FORWARD_SETS:
        routing = read_csv(base / sub / model / "pipeline_routing.csv")
        out += [{**forward_row(row, ops, inputs, routing, gpu), "subdir": sub}
                for row, ops in it.folder_rows(base / sub, model) if row["schedule"] == "1f1b" and int(row["ep"]) > 1]
    steps, ops = read_csv(base / FIT_SUBDIR / "pipeline_step.csv"), read_csv(base / FIT_SUBDIR / "pipeline_ops.csv")
    for _, r in steps[steps["bench"] == "pipeline_step"].iterrows():
        row = {**{k: r[k] for k in it.ROW_KEYS}, "time_s": float(r["time_s"])}
        out.append({**forward_row(row, ops, inputs, None, gpu), "subdir": FIT_SUBDIR or ".", "split": r["split"]})
    return out


def replay_rows(root: Path | str | None = None, subdirs: tuple = DEFAULT_SUBDIRS, inputs: dict | None = None,
                gpu: str = GPU, draws: int = DRAWS) -> list[dict]:
    """replay_config's rank-rows of every configuration of `<gpu>x4/<subdir>` for each subdir (with `subdir`)."""
    root = rec.records_root() if root is None else root
    inputs = {} if inputs is None else inputs
    out = []
    for sub in subdirs:
        for row, ops in it.folder_rows(Path(root) / f"{gpu}x{NUM_GPUS}" / sub):
            out += [{**x, "subdir": sub} for x in replay_config(row, ops, inputs, gpu, draws)]
    return out


def op_table(root: Path | str | None = None, subdirs: tuple = DEFAULT_SUBDIRS, inputs: dict | None = None,
             gpu: str = GPU) -> list[dict]:
    """Per (subdir, model, seq_len, layout, op kind), over every rank's timed compute ops, the medians of: the
    device span, the twin's span of the same op (prereg_pp4's path, idle_terms.twin_row), and the host's lead
    over the device (device time less host time) at the op's start and at its end. A lead near zero at the
    op's end: the host finished issuing it only as the GPU finished running it - the op is host-paced."""
    root = rec.records_root() if root is None else root
    inputs = {} if inputs is None else inputs
    parts = []
    for sub in subdirs:
        for row, ops in it.folder_rows(Path(root) / f"{gpu}x{NUM_GPUS}" / sub):
            pp = int(row["pp"])
            result, _, _, _ = it.twin_row(row, gpu, inputs)
            twin = it.twin_op_s(result)
            m = pipe.ops_of(pd.Series(row), ops)
            m = m[m["kind"].isin(COMPUTE_KINDS) & m["rep"].notna()]
            parts.append(pd.DataFrame({
                "subdir": sub, "model": row["model"], "seq_len": int(row["seq_len"]), "layout": f"pp{pp}ep{int(row['ep'])}",
                "kind": m["kind"].to_numpy(), "device_s": (m["end_s"] - m["start_s"]).to_numpy(float),
                "twin_s": [twin.get((int(r) % pp, int(k)), np.nan) for r, k in zip(m["rank"], m["op_index"])],
                "lead_start_s": (m["start_s"] - m["host_start_s"]).to_numpy(float),
                "lead_end_s": (m["end_s"] - m["host_end_s"]).to_numpy(float)}))
    df = pd.concat(parts, ignore_index=True)
    g = df.groupby(["subdir", "model", "seq_len", "layout", "kind"], sort=False)
    out = g[["device_s", "twin_s", "lead_start_s", "lead_end_s"]].median().join(g.size().rename("ops")).reset_index()
    return out.to_dict("records")


def format_ops(table: list[dict]) -> str:
    df = pd.DataFrame(table)
    for c in ("device_s", "twin_s", "lead_start_s", "lead_end_s"):
        df[c] = (df[c] * 1e3).round(1)
    return df.rename(columns=lambda c: c[:-2] + "_ms" if c.endswith("_s") else c).to_string(index=False)


def summary(rows: list[dict]) -> list[dict]:
    """Per (subdir, layout): rank-rows, and how many each replay puts within."""
    df = pd.DataFrame(rows)
    out = []
    for (sub, pp, ep), g in df.groupby(["subdir", "pp", "ep"], sort=False):
        out.append({"subdir": sub, "layout": f"pp{int(pp)}ep{int(ep)}", "rank_rows": len(g),
                    "op_spread_median": float(g["op_spread"].median()),
                    # rank-rows whose measured idle moves over more than twice the tolerance from step to step
                    "noisy_rows": int(((g["measured_idle_max_s"] - g["measured_idle_min_s"]) > 2 * g["tol_s"]).sum()),
                    "steps": int(g["steps"].sum()), "steps_met": int(g["steps_met"].sum()),
                    **{f"{r}_within": int(g[f"{r}_within"].sum()) for r in REPLAYS if f"{r}_within" in g}})
    return out


def format_summary(summ: list[dict]) -> str:
    lines = [f"{'set':16s} {'layout':7s} {'rows':>4s} {'spread':>7s} {'noisy':>5s} "
             + " ".join(f"{r:>7s}" for r in REPLAYS) + "  steps met"]
    for s in summ:
        lines.append(f"{s['subdir']:16s} {s['layout']:7s} {s['rank_rows']:4d} {s['op_spread_median']:7.3f} "
                     f"{s['noisy_rows']:5d} " + " ".join(f"{s.get(f'{r}_within', '-'):>7}" for r in REPLAYS)
                     + f"  {s['steps_met']}/{s['steps']}")
    return "\n".join(lines)


RECORD_DIGITS = 10   # floats kept to 1e-10 (seconds: 0.1 ns; ratios alike) so the record stays small


def _rounded(x):
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_rounded(v) for v in x]
    return round(x, RECORD_DIGITS) if isinstance(x, float) and math.isfinite(x) else x


def record(rows: list[dict], ops: list[dict], configs: list[dict], forwards: list[dict]) -> dict:
    """What the tests read back (RECORD_FILE)."""
    return _rounded(it._plain({"note": "docs/notes/s26pipeop3.md", "command": COMMAND, "gpu": GPU, "draws": DRAWS, "seed": SEED,
                      "summary": summary(rows), "rows": rows, "ops": ops, "configs": configs, "forwards": forwards}))


def read_record(path: Path = RECORD_FILE) -> dict:
    return it.read_judgement(path)


@script
def main(argv=None) -> int:
    ap = parser("calibration.step_replay", __doc__)
    ap.add_argument("subdirs", nargs="*", default=list(DEFAULT_SUBDIRS),
                    help=f"sets under calibration/measurements/{GPU}x{NUM_GPUS}/ (default: all with op records)")
    ap.add_argument("--draws", type=int, default=DRAWS, help="draws of the iid replay (0: none)")
    ap.add_argument("--json", type=Path, default=None, help="also write the record (the committed one: RECORD_FILE)")
    args = ap.parse_args(argv)
    if args.draws < 0:
        print(f"--draws {args.draws}: a count >= 0", file=sys.stderr)
        return 2
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    base = root / f"{GPU}x{NUM_GPUS}"
    for sub in args.subdirs:
        if not (base / sub).is_dir():
            print(f"subdir {sub!r}: not a set under calibration/measurements/{GPU}x{NUM_GPUS}/", file=sys.stderr)
            return 2
    inputs: dict = {}
    rows = replay_rows(root, subdirs=tuple(args.subdirs), inputs=inputs, draws=args.draws)
    table = op_table(root, subdirs=tuple(args.subdirs), inputs=inputs)
    configs = config_rows(root, subdirs=tuple(args.subdirs), inputs=inputs)
    forwards = forward_rows(root, inputs=inputs)
    print(format_ops(table))
    print(format_configs(configs))
    with pd.option_context("display.width", 200):
        print(pd.DataFrame(forwards).to_string(index=False))
    print(format_summary(summary(rows)))
    if args.json is not None:
        write_json_text(args.json, it.dump_record(record(rows, table, configs, forwards)) + "\n")
        print(f"{args.json}: written")
    return 0


if __name__ == "__main__":
    sys.exit(main())

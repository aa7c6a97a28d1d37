"""Two op-duration terms of the four-GPU pipeline rows, for issue 13's per-rank idle (session s26pipeop,
docs/notes/s26pipeop_rule.md).

s25idle (calibration/idle_terms.py) showed the twin's schedule simulation fed each run's measured op
durations reproduces 276 of 280 committed four-GPU rank-rows' idle: the misses are op durations. Two
of its three causes are read here from the per-op records (pipeline_ops.csv: device and host clocks):

L, the step's lead-in. real/pipeline's step starts after a barrier and a synchronize
(engine.PipelineRunner.step), so a rank whose first op needs no input (a forward of model stage 0:
1F1B's and ZB1P's stage 0, DualPipeV's rank 0, both ends of DualPipe) starts it with the host and the
GPU level: the op runs host-paced, and its host issue is itself slower than the steady ops' (mixtral
seq 2048 pp4 1F1B rank 0, s25idle: host 5.4-7.4 ms to issue the first forward against 4.1-5.9 for the
next ones, the GPU ending 3.9-4.0 ms after the host, 9.7-10.6 ms against 7.5 steady). Ranks whose first
op waits for a receive have their host 7-27 ms ahead when it starts and show no excess. The twin's
host-led simulation gives such a first op 0.0-0.7 ms over its steady ones; measured it is 1.1-3.9 ms
more. L adds to each level-start first op the fitting records' median of (measured excess - the twin's
excess), `lead_in_s`: the fitting records are s21pp4's two deliveries (h200x4; the records S priced its
ratios from), not s25idle's (the held-out set of that rule) nor the fresh ones.

G, each GPU's pace. DualPipe's mirrored ranks hold the same layers and run mirrored programs, so the
twin gives them equal idle; measured, one of a pair idles 8-14 ms and the other ~0. Their op sums differ
by ~1-2% spread over every op kind (s25idle pp4: the rank on GPU 3 slower in both models, F, B, BW and
FB alike), the signature of one GPU running the same work slower, and the faster rank then idles by the
difference at the step's end. G prices each GPU's pace from the run's own probe, a data-parallel
configuration (pp 1, ep 1, dp 4: every GPU runs the whole slice's F and BW on its own tokens) timed
before the pipelines on the same GPUs: pace of global rank g = the median over the probe's compute ops
of (g's span / the mean span of the same op over the four GPUs). A pipeline rank's ops run at the pace
of the slowest GPU among its data-parallel replicas (pp2ep2: the EP peers run their all-to-alls in
lockstep, s22pp4j), normalised to the four GPUs' mean. Without a probe (every committed folder) G is 1.

T = L and G together, behind ADOPT_PIPE_OP_TERMS (off until the rule's fresh judgement says adopt):
the twin's per-op durations (prereg_pp4's path: balanced routing, the host inputs of `<gpu>x4`) times
the rank's pace, plus L on the level-start first ops, the schedule simulated with those durations.

    python -m calibration.pipe_op_terms lead-in            # L's fitting pairs and its seconds
    python -m calibration.pipe_op_terms guards             # B and L on the committed four-GPU sets
    python -m calibration.pipe_op_terms write              # the fresh cases' B and L predictions (before the run)
    python -m calibration.pipe_op_terms fresh [--json calibration/s26pipeop_judgement.json]
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import idle_terms as it
from calibration import prereg
from calibration import prereg_pp4
from calibration import records as rec
from calibration.entry import parser, script
from calibration.p2p_waits import COMPUTE_KINDS
from calibration import pipeline as pipe
from calibration.records_io import glob_csv, read_csv, write_json_text
from calibration.whole_step import gpu_spec

ADOPT_PIPE_OP_TERMS = False   # T = L + G; docs/notes/s26pipeop_rule.md decides it on the fresh rows

# L's fitting records: both s21pp4 deliveries on the one GPU that holds them (h200x4)
LEAD_IN_SUBDIRS = (prereg_pp4.RECORDS_SUBDIR, prereg_pp4.SECOND_SUBDIR)
LEAD_IN_GPU = "h200"
# the committed four-GPU sets the guards read (docs/notes/s26pipeop_rule.md section 5)
GUARD_SUBDIRS = (prereg_pp4.RECORDS_SUBDIR, prereg_pp4.SECOND_SUBDIR, it.FRESH_SUBDIR)

# (model, num_layers, seq_len, {(pp, ep): micro-batch counts}): real/campaigns/s26pipeop.sh's MODELS
# (a test holds them equal); no committed record holds these sequence lengths for these models, nor
# these counts
FRESH_CASES = (("qwen2moe-mla-slice", 8, 2048, {(2, 2): (10,), (4, 1): (10,)}),
               ("mixtral-mla-slice", 8, 3072, {(2, 2): (8,), (4, 1): (10,)}))
FRESH_SUBDIR = "s26pipeop"          # calibration/measurements/<gpu>x4/s26pipeop/<model>/
REVERSED_SUBDIR = "s26pipeop_rev"   # the same models' DualPipe rows with the GPUs in reverse order
SCHEDULES = it.SCHEDULES
PROBE_MICROBATCHES = 4              # the probe: pp 1, ep 1, dp 4, 1F1B at 4 micro-batches
PREDICTIONS_FILE = prereg.PREREG_DIR / "s26pipeop_predictions.csv"   # B and L, written before the run
JUDGEMENT_FILE = Path(__file__).resolve().parent / "s26pipeop_judgement.json"
MIRROR_RESOLVED_OF_STEP = 0.01      # a mirrored pair's idle differs by more than this share of the step
SIGN_RIGHT_FRACTION = 0.75          # D1: G orders at least this share of resolved mirrored pairs
TERMS = ("B", "L", "G", "T")


def starts_level(schedule, rank: int) -> bool:
    """Whether `rank`'s first op needs no input: a forward of model stage 0 (it starts with the step,
    host and GPU level after the step's barrier and synchronize)."""
    op = schedule.programs[rank][0]
    return op.kind == "F" and schedule.stage_of(rank, op.chunk) == 0


def _later_same(schedule, rank: int) -> list[int]:
    """`rank`'s later ops of its first op's kind and stage role (its steady ops of that category)."""
    first = it.category(schedule, rank, 0)
    return [k for k in range(1, len(schedule.programs[rank])) if it.category(schedule, rank, k)[:2] == first[:2]]


def lead_in_pairs(root: Path | str | None = None, gpu: str = LEAD_IN_GPU,
                  subdirs: tuple = LEAD_IN_SUBDIRS, inputs: dict | None = None) -> list[dict]:
    """Per configuration and level-start rank of the records: the first op's measured excess over the
    median of the rank's later ops of its category (median device spans over timed steps and replicas)
    and the twin's same excess (prereg_pp4's path), seconds."""
    root = rec.records_root() if root is None else root
    inputs = {} if inputs is None else inputs
    out = []
    for sub in subdirs:
        for row, ops in it.folder_rows(Path(root) / f"{gpu}x{prereg_pp4.NUM_GPUS}" / sub):
            if int(row["pp"]) < 2:
                continue
            result, _, _, _ = it.twin_row(row, gpu, inputs)
            twin, meas, schedule = it.twin_op_s(result), it.measured_op_s(row, ops), it.schedule_of(row)
            for r in range(int(row["pp"])):
                later = _later_same(schedule, r)
                if not starts_level(schedule, r) or not later or (r, 0) not in meas:
                    continue
                m = meas[r, 0] - float(np.median([meas[r, k] for k in later]))
                t = twin[r, 0] - float(np.median([twin[r, k] for k in later]))
                out.append({"subdir": sub, **{k: row[k] for k in ("model", "schedule", "pp", "ep", "num_microbatches",
                                                                   "seq_len")},
                            "rank": r, "measured_excess_s": m, "twin_excess_s": t, "gap_s": m - t})
    return out


def lead_in_s(root: Path | str | None = None, inputs: dict | None = None) -> float:
    """L: the median over lead_in_pairs of (measured - twin excess), floored at 0. Priced on the h200x4
    fitting records and used for every GPU (an H100 row takes it as a carry)."""
    root = rec.records_root() if root is None else root
    pairs = lead_in_pairs(root, inputs=inputs)
    return max(0.0, float(np.median([p["gap_s"] for p in pairs]))) if pairs else 0.0


def gpu_pace(ops: pd.DataFrame) -> dict[int, float]:
    """{global rank: pace} from the probe's pipeline_ops rows (pp 1, ep 1, PROBE_MICROBATCHES): per
    (timed step, op index) each rank's span over the ranks' mean span of that op, the median per rank;
    {} without probe rows."""
    if ops.empty:
        return {}
    probe = ops[(ops["pp"].astype(int) == 1) & (ops["ep"].astype(int) == 1) & ops["kind"].isin(COMPUTE_KINDS)
                & ops["rep"].notna()]
    if probe.empty:
        return {}
    span = probe.assign(d=probe["end_s"] - probe["start_s"])
    table = span.pivot_table(index=["rep", "op_index"], columns="rank", values="d", aggfunc="first").dropna()
    if table.empty or table.shape[1] < 2:
        return {}
    rel = table.div(table.mean(axis=1), axis=0)
    return {int(g): float(v) for g, v in rel.median().items()}


def rank_pace(pace: dict[int, float], pp: int) -> dict[int, float]:
    """{pipeline rank: the slowest pace among its data-parallel replicas (global rank % pp), over the
    GPUs' mean pace}; {} without a probe."""
    if not pace:
        return {}
    mean = float(np.mean(list(pace.values())))
    return {r: max(v for g, v in pace.items() if g % pp == r) / mean for r in range(pp)}


def folder_paces(folder: Path) -> dict[str, dict[int, float]]:
    """{model: gpu_pace} of each model subfolder of a records folder that holds a probe."""
    out = {}
    for path in glob_csv(folder, "*/pipeline_ops.csv"):
        pace = gpu_pace(read_csv(path))
        if pace:
            out[Path(path).parent.name] = pace
    return out


def term_durations(row: dict, twin: dict, term: str, delta_s: float, pace: dict[int, float] | None) -> dict:
    """The twin's per-op durations under `term`: B as they are; L plus `delta_s` on each level-start
    first op; G times the pipeline rank's pace; T both."""
    schedule = it.schedule_of(row)
    paces = rank_pace(pace or {}, int(row["pp"])) if term in ("G", "T") else {}
    out = {}
    for (r, k), d in twin.items():
        d = d * paces.get(r, 1.0)
        if term in ("L", "T") and k == 0 and starts_level(schedule, r):
            d += delta_s
        out[r, k] = d
    return out


def predict_rows(rows: list[dict], term: str, delta_s: float, paces: dict | None, inputs: dict) -> pd.DataFrame:
    """prereg.predict_ep's columns (predicted_s, predicted_idle_r<k>_s) of four-GPU rows (each with
    `gpu`) under `term`; `paces`: {(gpu, model): gpu_pace} of the run that measured them."""
    out = []
    for r in rows:
        result, step_s, details, hold_s = it.twin_row(r, r["gpu"], inputs)
        if term != "B":
            durations = term_durations(r, it.twin_op_s(result), term, delta_s, (paces or {}).get((r["gpu"], r["model"])))
            result = it.simulate_durations(r, details, durations, hold_s)
            step_s = it.step_of(r, r["gpu"], inputs, result)
        out.append({**r, "predicted_s": float(step_s),
                    **{f"predicted_idle_r{k}_s": float(v) for k, v in enumerate(result.idle_s)}})
    return pd.DataFrame(out)


def case_rows(gpus: tuple = prereg.GPUS, schedules: tuple = SCHEDULES, cases: tuple | None = None) -> list[dict]:
    """One pipeline_step row per (gpu, fresh case, layout, count, schedule), real/pipeline's fields; `cases`
    round 1's FRESH_CASES unless given."""
    n_gpus = prereg_pp4.NUM_GPUS
    return [{"gpu": gpu, "bench": "pipeline_step", "model": model, "schedule": sched, "pp": pp, "ep": ep,
             "dp": n_gpus // pp, "num_gpus": n_gpus, "num_microbatches": n, "micro_batch_seqs": 1,
             "seq_len": seq, "precision": "bf16", "num_layers": layers}
            for gpu in gpus for model, layers, seq, counts in (FRESH_CASES if cases is None else cases)
            for (pp, ep), ns in counts.items() for n in ns for sched in schedules]


def registered_predictions(inputs: dict | None = None) -> pd.DataFrame:
    """Every fresh case (h100 and h200) under B and L (G needs the run's own probe), column `term`."""
    inputs = {} if inputs is None else inputs
    delta = lead_in_s(inputs=inputs)
    rows = case_rows()
    return pd.concat([predict_rows(rows, "B", delta, None, inputs).assign(term="B", lead_in_s=delta),
                      predict_rows(rows, "L", delta, None, inputs).assign(term="L", lead_in_s=delta)],
                     ignore_index=True)


def measured_set(root: Path | str, subdir: str) -> pd.DataFrame:
    """prereg_pp4.measured's pipeline rows (pp > 1) of a records subfolder."""
    meas = prereg_pp4.measured(root, subdir)
    return meas[meas["pp"].astype(int) > 1].reset_index(drop=True) if not meas.empty else meas


def judged(root: Path | str, subdir: str, rows: list[dict], delta_s: float, paces: dict, inputs: dict,
           terms: tuple = TERMS) -> dict:
    """{term: prereg_pp4.compared section} of the rows measured in `subdir`."""
    meas = measured_set(root, subdir)
    if meas.empty:
        return {}
    keys = {tuple(m[k] for k in prereg_pp4.KEY) for _, m in meas.iterrows()}
    mine = [c for c in rows if tuple(c[k] for k in prereg_pp4.KEY) in keys]
    return {t: prereg_pp4.compared(predict_rows(mine, t, delta_s, paces, inputs).assign(code_commit="live"), meas,
                                   f"{subdir} {t}") for t in terms}


def mirrored_pairs(section: dict, gpu: str) -> list[dict]:
    """DualPipe's mirrored pipeline ranks (r, pp-1-r) of a section's rows: measured idle of each (the
    mean over its data-parallel replicas), the predicted idle, the measured difference, resolved where
    it exceeds MIRROR_RESOLVED_OF_STEP of the step, and whether the prediction orders the pair alike."""
    by_cfg: dict = {}
    for i in section["idle"]:
        if i["gpu"] != gpu or i["schedule"] != "dualpipe":
            continue
        key = (i["model"], int(i["pp"]), int(i["ep"]), int(i["num_microbatches"]))
        by_cfg.setdefault(key, {}).setdefault(int(i["rank"]) % int(i["pp"]), []).append(
            (i["measured_idle_s"], i["predicted_idle_s"]))
    steps = {(x["model"], int(x["pp"]), int(x["ep"]), int(x["num_microbatches"])): x["measured_s"]
             for x in section["rows"] if x["gpu"] == gpu and x["schedule"] == "dualpipe"}
    out = []
    for key, ranks in sorted(by_cfg.items()):
        pp = key[1]
        for r in range(pp // 2):
            a, b = ranks.get(r), ranks.get(pp - 1 - r)
            if not a or not b:
                continue
            ma, mb = float(np.mean([x[0] for x in a])), float(np.mean([x[0] for x in b]))
            pa, pb = a[0][1], b[0][1]
            diff = ma - mb
            out.append({"model": key[0], "pp": pp, "ep": key[2], "num_microbatches": key[3], "ranks": [r, pp - 1 - r],
                        "measured_idle_s": [ma, mb], "predicted_idle_s": [pa, pb], "measured_diff_s": diff,
                        "resolved": bool(abs(diff) > MIRROR_RESOLVED_OF_STEP * steps[key]),
                        "ordered": bool(np.sign(pa - pb) == np.sign(diff))})
    return out


def _counts(sec: dict, gpu: str, layout: tuple | None = None) -> tuple[int, int]:
    idle = [i for i in sec["idle"] if i["gpu"] == gpu and (layout is None or (int(i["pp"]), int(i["ep"])) == layout)]
    return sum(i["within"] for i in idle), len(idle)


def _misordered(sec: dict, gpu: str) -> int:
    return sum(1 for p in sec["ranking"] if p["gpu"] == gpu and p["resolved"] and not p["ordered"])


def verdict(sections: dict, reversed_sections: dict) -> dict:
    """Per GPU: H1-H3 of docs/notes/s26pipeop_rule.md section 4 on the fresh set (T against B), and
    D1 / D2 (G's premise) over the fresh and reversed DualPipe rows."""
    base, term = sections["B"], sections["T"]
    out = {}
    for gpu in sorted(base["by_gpu"]):
        b_in, total = _counts(base, gpu)
        t_in, _ = _counts(term, gpu)
        need = b_in + max(3, math.ceil((total - b_in) / 4))
        layouts = {(int(i["pp"]), int(i["ep"])) for i in base["idle"] if i["gpu"] == gpu}
        h1 = t_in >= need and all(_counts(term, gpu, lay)[0] >= _counts(base, gpu, lay)[0] for lay in layouts)
        bs, ts = base["by_gpu"][gpu], term["by_gpu"][gpu]
        h2 = (ts["median_abs_rel_error"] <= bs["median_abs_rel_error"]
              and ts["p90_abs_rel_error"] <= bs["p90_abs_rel_error"] + 0.005)
        mis = {"B": _misordered(base, gpu), "T": _misordered(term, gpu)}
        h3 = mis["T"] <= mis["B"]
        pairs = mirrored_pairs(term, gpu) + (mirrored_pairs(reversed_sections["T"], gpu) if reversed_sections else [])
        resolved = [p for p in pairs if p["resolved"]]
        d1 = bool(resolved) and sum(p["ordered"] for p in resolved) >= SIGN_RIGHT_FRACTION * len(resolved)
        flips = flip_pairs(term, reversed_sections.get("T") if reversed_sections else None, gpu)
        both = [f for f in flips if f["resolved_both"]]
        out[gpu] = {"idle_within_B": (b_in, total), "idle_within_T": (t_in, total), "needed": need, "H1": bool(h1),
                    "H2": bool(h2), "H3": bool(h3), "misordered": mis, "adopt_T": bool(h1 and h2 and h3),
                    "D1": d1, "D1_ordered": (sum(p["ordered"] for p in resolved), len(resolved)),
                    "D2_flipped": (sum(f["flipped"] for f in both), len(both)),
                    "D2": bool(both) and all(f["flipped"] for f in both)}
    return out


def flip_pairs(normal: dict, reverse: dict | None, gpu: str) -> list[dict]:
    """Each DualPipe configuration measured in both GPU orders: the mirrored pair's measured difference
    in each, resolved in both, and whether its sign flipped (the idle follows the GPU, not the rank)."""
    if not reverse:
        return []
    rev = {(p["model"], p["pp"], p["ep"], p["num_microbatches"], tuple(p["ranks"])): p for p in mirrored_pairs(reverse, gpu)}
    out = []
    for p in mirrored_pairs(normal, gpu):
        q = rev.get((p["model"], p["pp"], p["ep"], p["num_microbatches"], tuple(p["ranks"])))
        if q is None:
            continue
        out.append({"model": p["model"], "pp": p["pp"], "ep": p["ep"], "num_microbatches": p["num_microbatches"],
                    "ranks": p["ranks"], "normal_diff_s": p["measured_diff_s"], "reversed_diff_s": q["measured_diff_s"],
                    "resolved_both": bool(p["resolved"] and q["resolved"]),
                    "flipped": bool(np.sign(p["measured_diff_s"]) == -np.sign(q["measured_diff_s"]))})
    return out


def paces_of(root: Path | str, subdir: str) -> dict:
    """{(gpu, model): gpu_pace} of a subfolder's probes, every GPU folder."""
    out = {}
    for gpu in prereg.GPUS:
        for model, pace in folder_paces(Path(root) / f"{gpu}x{prereg_pp4.NUM_GPUS}" / subdir).items():
            out[gpu, model] = pace
    return out


def fresh(root: Path | str | None = None, inputs: dict | None = None) -> dict:
    """The fresh rows judged by the rule: B, L, G, T on the fresh set and the reversed set, the replay
    of the fresh op durations, the mirrored pairs, the verdict. {"records": False} without records."""
    root = rec.records_root() if root is None else root
    inputs = {} if inputs is None else inputs
    delta = lead_in_s(root, inputs)
    paces = {sub: paces_of(root, sub) for sub in (FRESH_SUBDIR, REVERSED_SUBDIR)}
    sections = judged(root, FRESH_SUBDIR, case_rows(), delta, paces[FRESH_SUBDIR], inputs)
    if not sections:
        return {"records": False}
    reverse = judged(root, REVERSED_SUBDIR, case_rows(schedules=("dualpipe",)), delta, paces[REVERSED_SUBDIR], inputs)
    replay = []
    for sub in (FRESH_SUBDIR, REVERSED_SUBDIR):
        for gpu in prereg.GPUS:
            folder = Path(root) / f"{gpu}x{prereg_pp4.NUM_GPUS}" / sub
            for row, ops in it.folder_rows(folder):
                if int(row["pp"]) > 1:
                    replay += [{**x, "gpu": gpu, "subdir": sub} for x in it.replay_config(row, ops, gpu, inputs)]
    return {"records": True, "lead_in_s": delta, "paces": paces, "fresh": sections, "reversed": reverse,
            "replay": replay, "verdict": verdict(sections, reverse)}


def guards(root: Path | str | None = None, inputs: dict | None = None, subdirs: tuple = GUARD_SUBDIRS) -> dict:
    """B and L (G is 1 without a probe: T = L) on the committed four-GPU sets GUARD_SUBDIRS: per set and
    GPU the rank-rows within and the step summary."""
    root = rec.records_root() if root is None else root
    inputs = {} if inputs is None else inputs
    delta = lead_in_s(root, inputs)
    out = {}
    for sub in subdirs:
        meas = measured_set(root, sub)
        if meas.empty:
            continue
        rows = [{**row, "gpu": gpu, "bench": "pipeline_step"} for gpu in prereg.GPUS
                for row, _ in it.folder_rows(Path(root) / f"{gpu}x{prereg_pp4.NUM_GPUS}" / sub) if int(row["pp"]) > 1]
        for term in ("B", "L"):
            sec = prereg_pp4.compared(predict_rows(rows, term, delta, None, inputs).assign(code_commit="live"), meas,
                                      f"{sub} {term}")
            for gpu in sec["by_gpu"]:
                within, total = _counts(sec, gpu)
                out.setdefault(sub, {}).setdefault(gpu, {})[term] = {
                    "idle_within": (within, total), "misordered": _misordered(sec, gpu), **sec["by_gpu"][gpu]}
    return out


def format_section(name: str, sec: dict) -> str:
    lines = []
    for gpu, s in sec["by_gpu"].items():
        w, n = _counts(sec, gpu)
        lines.append(f"  {name} {gpu}: steps median {s['median_abs_rel_error']:.2%} P90 {s['p90_abs_rel_error']:.2%}, "
                     f"idle {w}/{n} within, misordered {_misordered(sec, gpu)}")
    return "\n".join(lines)


# ---- round 2 (docs/notes/s26pipeop2_rule.md): H, each GPU's HOST pace
# s26pipeop's D2 put DualPipe's mirrored asymmetry on the physical GPUs, at equal SM clocks and a flat
# GPU-bound probe: it lives in host-paced ops (qwen2moe pp4 DualPipe: GPU 0's process issues a forward in
# 7.2-8.5 ms where GPU 3's takes 5.8-7.1). H prices each GPU's host pace from a host-paced probe of the
# same run (the data-parallel configuration at a short sequence, where every forward is host-paced) and
# issues each pipeline rank's ops at the twin's host rates times that pace (calibration.pipeline's
# per-rank host path, simulate_row's host_by_rank).
ADOPT_GPU_HOST_PACE = False   # U = L + H; docs/notes/s26pipeop2_rule.md decides it on its fresh rows
FRESH2_CASES = (("qwen3moe-mla-slice", 8, 2048, {(2, 2): (12,), (4, 1): (8,)}),
                ("qwen2moe-mla-slice", 8, 3072, {(2, 2): (6,), (4, 1): (12,)}))
FRESH2_SUBDIR, REVERSED2_SUBDIR = "s26pipeop2", "s26pipeop2_rev"
HOSTPROBE_SUBDIRS = {FRESH2_SUBDIR: "s26pipeop2_probe", REVERSED2_SUBDIR: "s26pipeop2_probe_rev"}
HOSTPROBE_SEQ, HOSTPROBE_MICROBATCHES = 256, 8
HOST_FIXED_KEYS = ("device_gap", "first_op")   # a GPU figure and a factor: not the host's seconds
TERMS2 = ("B", "L", "H", "U")
PREDICTIONS2_FILE = prereg.PREREG_DIR / "s26pipeop2_predictions.csv"
JUDGEMENT2_FILE = Path(__file__).resolve().parent / "s26pipeop2_judgement.json"


def host_pace(ops: pd.DataFrame) -> dict[int, float]:
    """{global rank: host pace}: gpu_pace over the host-paced probe's forwards alone."""
    return gpu_pace(ops[ops["kind"] == "F"]) if not ops.empty else {}


def scaled_host(host: dict, pace: float) -> dict:
    """The twin's host rates with every host-seconds figure times `pace`."""
    return {k: (v if k in HOST_FIXED_KEYS or not isinstance(v, float) else v * pace) for k, v in host.items()}


def predict_rows2(rows: list[dict], term: str, delta_s: float, paces: dict | None, inputs: dict) -> pd.DataFrame:
    """predict_rows' columns under round 2's terms: B; L (as round 1); H: each pipeline rank issues its ops
    at the twin's host rates times its pace (rank_pace of the run's host probe, `paces` {(gpu, model):
    host_pace}); U: H then L on the level-start first ops."""
    out = []
    for r in rows:
        result, step_s, details, hold_s = it.twin_row(r, r["gpu"], inputs)
        pace = rank_pace((paces or {}).get((r["gpu"], r["model"]), {}), int(r["pp"])) if term in ("H", "U") else {}
        if pace:
            profile, accumulate, host, _ = inputs[r["gpu"]]
            by_rank = {k: scaled_host(host, v) for k, v in pace.items()}
            result, step_s, details = pipe.simulate_row(pd.Series(r), gpu_spec(r["gpu"]), profile, accumulate, host,
                                                        by_rank, {}, hold_s)
        if term in ("L", "U"):
            durations = term_durations(r, it.twin_op_s(result), "L", delta_s, None)
            result = it.simulate_durations(r, details, durations, hold_s)
            step_s = it.step_of(r, r["gpu"], inputs, result)
        out.append({**r, "predicted_s": float(step_s),
                    **{f"predicted_idle_r{k}_s": float(v) for k, v in enumerate(result.idle_s)}})
    return pd.DataFrame(out)


def case_rows2(gpus: tuple = prereg.GPUS, schedules: tuple = SCHEDULES) -> list[dict]:
    """case_rows of FRESH2_CASES."""
    return case_rows(gpus, schedules, FRESH2_CASES)


def registered_predictions2(inputs: dict | None = None) -> pd.DataFrame:
    """Every round-2 fresh case (h100 and h200) under B and L (H needs the run's own host probe)."""
    inputs = {} if inputs is None else inputs
    delta = lead_in_s(inputs=inputs)
    rows = case_rows2()
    return pd.concat([predict_rows2(rows, "B", delta, None, inputs).assign(term="B", lead_in_s=delta),
                      predict_rows2(rows, "L", delta, None, inputs).assign(term="L", lead_in_s=delta)],
                     ignore_index=True)


def host_paces_of(root: Path | str, subdir: str) -> dict:
    """{(gpu, model): host_pace} of a round-2 subfolder's host probes (HOSTPROBE_SUBDIRS[subdir])."""
    out = {}
    for gpu in prereg.GPUS:
        for path in glob_csv(Path(root) / f"{gpu}x{prereg_pp4.NUM_GPUS}" / HOSTPROBE_SUBDIRS[subdir], "*/pipeline_ops.csv"):
            pace = host_pace(read_csv(path))
            if pace:
                out[gpu, Path(path).parent.name] = pace
    return out


def judged2(root: Path | str, subdir: str, rows: list[dict], delta_s: float, paces: dict, inputs: dict) -> dict:
    """{term: prereg_pp4.compared section} of round 2's rows measured in `subdir`."""
    meas = measured_set(root, subdir)
    if meas.empty:
        return {}
    keys = {tuple(m[k] for k in prereg_pp4.KEY) for _, m in meas.iterrows()}
    mine = [c for c in rows if tuple(c[k] for k in prereg_pp4.KEY) in keys]
    return {t: prereg_pp4.compared(predict_rows2(mine, t, delta_s, paces, inputs).assign(code_commit="live"), meas,
                                   f"{subdir} {t}") for t in TERMS2}


def verdict2(sections: dict, reversed_sections: dict) -> dict:
    """verdict's H1-H3 and D1 / D2 with U in T's place (docs/notes/s26pipeop2_rule.md section 3)."""
    rename = lambda secs: {**secs, "T": secs["U"]} if secs else secs   # noqa: E731 (one line, read once)
    out = verdict(rename(sections), rename(reversed_sections))
    for v in out.values():
        v["idle_within_U"] = v.pop("idle_within_T")
        v["adopt_U"] = v.pop("adopt_T")
        v["misordered"] = {"B": v["misordered"]["B"], "U": v["misordered"]["T"]}
    return out


def fresh2(root: Path | str | None = None, inputs: dict | None = None) -> dict:
    """Round 2's fresh rows judged by its rule (as `fresh`, terms B, L, H, U)."""
    root = rec.records_root() if root is None else root
    inputs = {} if inputs is None else inputs
    delta = lead_in_s(root, inputs)
    paces = {sub: host_paces_of(root, sub) for sub in (FRESH2_SUBDIR, REVERSED2_SUBDIR)}
    sections = judged2(root, FRESH2_SUBDIR, case_rows2(), delta, paces[FRESH2_SUBDIR], inputs)
    if not sections:
        return {"records": False}
    reverse = judged2(root, REVERSED2_SUBDIR, case_rows2(schedules=("dualpipe",)), delta, paces[REVERSED2_SUBDIR],
                      inputs)
    replay = []
    for sub in (FRESH2_SUBDIR, REVERSED2_SUBDIR):
        for gpu in prereg.GPUS:
            for row, ops in it.folder_rows(Path(root) / f"{gpu}x{prereg_pp4.NUM_GPUS}" / sub):
                if int(row["pp"]) > 1:
                    replay += [{**x, "gpu": gpu, "subdir": sub} for x in it.replay_config(row, ops, gpu, inputs)]
    return {"records": True, "lead_in_s": delta, "paces": paces, "fresh": sections, "reversed": reverse,
            "replay": replay, "verdict": verdict2(sections, reverse)}


def print_fresh(res: dict, paces_label: str) -> None:
    """A fresh delivery's judgement as both rounds print it: L, the paces, each term's sections (fresh and
    reversed GPU order), the replay of the measured op durations and the verdict per card."""
    print(f"L = {res['lead_in_s'] * 1e3:.2f} ms; {paces_label} {res['paces']}")
    for name, secs in (("fresh", res["fresh"]), ("reversed", res["reversed"])):
        print(name)
        for t, sec in secs.items():
            print(format_section(t, sec))
    print("replay of the fresh op durations:")
    print(it.format_replay(res["replay"]))
    for gpu, v in res["verdict"].items():
        print(f"  verdict {gpu}x4: " + ", ".join(f"{k} {v[k]}" for k in v))


@script
def main(argv=None) -> int:
    ap = parser("calibration.pipe_op_terms", __doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("lead-in", help="L's fitting pairs and its seconds")
    sub.add_parser("guards", help="B and L on the committed four-GPU sets")
    sub.add_parser("write", help="the predictions file (B and L of every fresh case; refuses a dirty tree)")
    sub.add_parser("write2", help="round 2's predictions file (B and L; refuses a dirty tree)")
    f2 = sub.add_parser("fresh2", help="the s26pipeop2 campaign's rows judged by its rule")
    f2.add_argument("--json", type=Path, default=None, help="also write its judgement's record (JUDGEMENT2_FILE)")
    fr = sub.add_parser("fresh", help="the s26pipeop campaign's rows judged by the rule")
    fr.add_argument("--json", type=Path, default=None, help="also write the judgement's record (JUDGEMENT_FILE)")
    args = ap.parse_args(argv)
    inputs: dict = {}
    if args.cmd == "lead-in":
        pairs = pd.DataFrame(lead_in_pairs(inputs=inputs))
        with pd.option_context("display.width", 200, "display.max_rows", 200):
            print(pairs.assign(**{c: pairs[c] * 1e3 for c in ("measured_excess_s", "twin_excess_s", "gap_s")})
                  .round(2).to_string())
        print(f"L = {lead_in_s(inputs=inputs) * 1e3:.2f} ms ({len(pairs)} level-start first ops)")
    elif args.cmd == "guards":
        for sub_name, by_gpu in guards(inputs=inputs).items():
            for gpu, terms in by_gpu.items():
                print(f"{gpu}x4/{sub_name}: " + "; ".join(
                    f"{t} idle {v['idle_within'][0]}/{v['idle_within'][1]}, steps {v['median_abs_rel_error']:.2%} / "
                    f"{v['p90_abs_rel_error']:.2%}, misordered {v['misordered']}" for t, v in terms.items()))
    elif args.cmd == "write":
        df = prereg.write_registered(PREDICTIONS_FILE, lambda: registered_predictions(inputs))
        print(f"{PREDICTIONS_FILE}: {len(df)} rows")
    elif args.cmd == "write2":
        df = prereg.write_registered(PREDICTIONS2_FILE, lambda: registered_predictions2(inputs))
        print(f"{PREDICTIONS2_FILE}: {len(df)} rows")
    elif args.cmd == "fresh2":
        res = fresh2(inputs=inputs)
        if not res.get("records"):
            print(f"s26pipeop2 fresh rows: no records yet (calibration/measurements/<gpu>x4/{FRESH2_SUBDIR}/)")
            return 0
        print_fresh(res, "host paces")
        if args.json is not None:
            rec2 = judgement_record(res, "U")
            # round 2's guards: every committed set without a host probe, where U is L
            rec2["guards"] = it._plain(guards(inputs=inputs, subdirs=GUARD_SUBDIRS + (FRESH_SUBDIR,)))
            rec2.update(rule="docs/notes/s26pipeop2_rule.md",
                        command="python -m calibration.pipe_op_terms fresh2 --json calibration/s26pipeop2_judgement.json")
            write_json_text(args.json, it.dump_record(rec2) + "\n")
            print(f"{args.json}: written")
    else:
        res = fresh(inputs=inputs)
        if not res.get("records"):
            print(f"s26pipeop fresh rows: no records yet (calibration/measurements/<gpu>x4/{FRESH_SUBDIR}/)")
            return 0
        print_fresh(res, "paces")
        if args.json is not None:
            write_json_text(args.json, it.dump_record(judgement_record(res)) + "\n")
            print(f"{args.json}: written")
    return 0


def judgement_record(res: dict, term: str = "T") -> dict:
    """The fresh judgement as the tests read it back (JUDGEMENT_FILE; round 2's with `term` U)."""
    gpus = sorted(res["verdict"])
    return it._plain({
        "rule": "docs/notes/s26pipeop_rule.md",
        "command": "python -m calibration.pipe_op_terms fresh --json calibration/s26pipeop_judgement.json",
        "lead_in_s": res["lead_in_s"],
        "paces": {sub: {f"{g} {m}": {str(k): v for k, v in p.items()} for (g, m), p in ps.items()}
                  for sub, ps in res["paces"].items()},
        "fresh": res["fresh"], "reversed": res["reversed"], "replay": res["replay"], "verdict": res["verdict"],
        "mirrored": {g: {"fresh": mirrored_pairs(res["fresh"][term], g),
                         "reversed": mirrored_pairs(res["reversed"][term], g) if res["reversed"] else [],
                         "flips": flip_pairs(res["fresh"][term], res["reversed"].get(term), g)} for g in gpus}})


def read_judgement(path: Path = JUDGEMENT_FILE) -> dict:
    return it.read_judgement(path)


if __name__ == "__main__":
    sys.exit(main())

"""The judgements of a pipeline run's schedule ranking and of each rank's idle, on the records of
two-round folders (real/campaigns/s15rank.sh, s16idle.sh): where calibration.pipeline predicts a
records folder (a case per pipeline_step row: the twin's step and idle beside the measured ones),
this module decides, from those cases and the measured timed steps, whether the twin meets a target
that the measurements' own noise can decide.

  ranking noise  whether a folder's schedule ranking is decidable from its own timed steps at all
                 (ranking_noise: exact rank-sum p of adjacent schedules; records alone, s14dp);
  ranking        every pair of schedules of a configuration judged on both rounds (rule s15rank:
                 Hodges-Lehmann gap with its Moses interval, resolved pairs ordered as measured,
                 unresolved ones with the twin's gap inside the interval; RANKING_FOLDERS);
  idle           each GPU's idle per configuration against the pooled median of both rounds
                 (rule s16idle: within 10% or 1% of the step; IDLE_FOLDERS);
  subfolders     which host-level inputs a ranking or interleaved folder's predictions take
                 (subfolder_inputs_from, rule s18gap), shared with calibration.interleaved (the
                 s17alt interleaved pairs, a judgement module of its own).

Separate from calibration.pipeline so that each module has one job: that one predicts (host rates,
device gaps, op costs, the simulated schedule), this one judges predictions against measured steps
with statistics the prediction never reads. Imports point one way: judgements import the
predictions, never the reverse.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import binom

from calibration.pipeline import CONFIG_KEYS, load, ops_of, predict_folder
from calibration.records_io import csv_exists


RANKING_ALPHA = 0.05   # a measured pair of schedules is resolved where its steps differ at this level


def step_times_by_rep_s(ops: pd.DataFrame) -> list[float]:
    """Each timed step's time of one configuration's pipeline_ops rows, in rep order: its last op's
    end on the shared axis (real/pipeline/bench.py times a step so; pipeline_step's time_s is the
    median of these)."""
    if ops is None or len(ops) == 0:
        return []
    return [float(g["end_s"].max()) for _, g in ops.groupby("rep", sort=True)]


def rank_sum_p(a: list[float], b: list[float]) -> float:
    """The exact two-sided Mann-Whitney p of two sets of step times (1.0 where either is empty):
    how often a random split of the pooled steps orders the two sets at least as far apart. With 5
    steps against 5 the smallest p is 2/252 (0.008); against 1 step it is 2/6 (0.33)."""
    if not a or not b:
        return 1.0
    from scipy.stats import mannwhitneyu   # lazy: only the ranking's noise reads it
    return float(mannwhitneyu(a, b, alternative="two-sided", method="exact").pvalue)


def ranking_noise(folder: Path) -> list[dict]:
    """Whether a records folder's schedule ranking is decidable from its own timed steps (issue 13's
    ranking target; records alone, no twin figure): per configuration (all but the schedule) of the
    pipeline rows (pp > 1) run under more than one schedule, the schedules fastest first by measured
    median, each with its timed steps (step_times_by_rep_s) and their spread (max - min over the
    median), and for each pair adjacent in that order the gap of medians and rank_sum_p of the two
    sets of steps; `resolved` where p < RANKING_ALPHA."""
    steps, ops = load(Path(folder))
    if steps.empty or ops.empty:
        return []
    rows = steps[(steps["pp"].astype(int) > 1) & (steps.get("bench", "pipeline_step") == "pipeline_step")]
    groups: dict = {}
    for _, row in rows.iterrows():
        key = tuple(str(row[k]) for k in CONFIG_KEYS if k != "schedule")
        groups.setdefault(key, []).append(row)
    out = []
    for key, g in groups.items():
        if len(g) < 2:
            continue
        scheds = []
        for row in g:
            times = step_times_by_rep_s(ops_of(row, ops))
            scheds.append({"schedule": str(row["schedule"]), "median_s": float(row["time_s"]), "steps_s": times,
                           "spread_frac": (max(times) - min(times)) / float(row["time_s"]) if times else None})
        scheds.sort(key=lambda x: x["median_s"])
        pairs = []
        for fast, slow in zip(scheds, scheds[1:]):
            p = rank_sum_p(fast["steps_s"], slow["steps_s"])
            pairs.append({"faster": fast["schedule"], "slower": slow["schedule"],
                          "gap_s": slow["median_s"] - fast["median_s"],
                          "gap_frac": slow["median_s"] / fast["median_s"] - 1.0,
                          "p": p, "resolved": p < RANKING_ALPHA})
        out.append({"config": dict(zip([k for k in CONFIG_KEYS if k != "schedule"], key)),
                    "schedules": scheds, "pairs": pairs})
    return out


def format_ranking_noise(groups: list[dict]) -> str:
    """ranking_noise as lines: per configuration the measured order with each schedule's median and
    step range (ms), then each adjacent pair's gap and p."""
    lines = []
    for g in groups:
        head = f"n{g['config']['num_microbatches']}: " + " < ".join(
            f"{s['schedule']} {s['median_s'] * 1e3:.1f} ({min(s['steps_s']) * 1e3:.1f}-{max(s['steps_s']) * 1e3:.1f}, "
            f"{len(s['steps_s'])} steps)" for s in g["schedules"])
        lines.append(head)
        for p in g["pairs"]:
            lines.append(f"    {p['faster']} < {p['slower']}: gap {p['gap_s'] * 1e3:.1f} ms ({p['gap_frac']:.1%}), "
                         f"p {p['p']:.3f} {'resolved' if p['resolved'] else 'NOT resolved'}")
    return "\n".join(lines)


# --- The ranking target judged pair by pair on a two-round folder (docs/notes/s15rank_rule.md) ---
# {multi-GPU folder: its ranking folder (a subfolder holding round_a/, round_b/)}: the first complete
# delivery of real/campaigns/s15rank.sh per 4-GPU host kind; empty until one is committed.
RANKING_FOLDERS: dict[str, str] = {"h200x4": "s15rank_20261127_0408"}
RANKING_LEVEL = 0.95            # the measured gap's interval (Hodges-Lehmann, Moses)
RANKING_MIN_STEPS_A_ROUND = 10  # each round's timed steps a schedule needs to count
RANKING_MIN_STEPS = 20          # and pooled over the rounds


def rank_sum_null_counts(m: int, n: int) -> np.ndarray:
    """How many of the C(m + n, m) orderings of two sets of m and n distinct values give each
    Mann-Whitney U = 0 .. m n (the exact null distribution's counts), by the recurrence
    c(i, j; u) = c(i - 1, j; u - j) + c(i, j - 1; u)."""
    table = [[np.ones(1)] * (n + 1)]   # i = 0: one ordering, U = 0
    for i in range(1, m + 1):
        row = [np.ones(1)]             # j = 0: one ordering, U = 0
        for j in range(1, n + 1):
            c = np.zeros(i * j + 1)
            up = table[i - 1][j]
            c[j:j + len(up)] += up     # the largest value is from the first set: j more pairs it beats
            left = row[j - 1]
            c[:len(left)] += left
            row.append(c)
        table.append(row)
    return table[m][n]


def interval_rank(m: int, n: int, level: float = RANKING_LEVEL) -> int:
    """k of the Moses interval [d_(k), d_(mn + 1 - k)] of the m n sorted differences: the largest k
    with P(U <= k - 1) <= (1 - level) / 2 under the exact null; 0 where no k qualifies (too few
    steps: the interval is unbounded)."""
    counts = rank_sum_null_counts(m, n)
    cdf = np.cumsum(counts) / counts.sum()
    return int(np.sum(cdf <= (1.0 - level) / 2))   # cdf[u] = P(U <= u): k - 1 = the last u that qualifies


def hodges_lehmann_log_gap(a: list[float], b: list[float], level: float = RANKING_LEVEL) -> tuple[float, float, float]:
    """(D, lo, hi): b's step times over a's as a log ratio, the Hodges-Lehmann estimate (the median of
    every ln b_j - ln a_i) and its distribution-free interval at `level` (Moses: the k-th smallest and
    k-th largest difference, interval_rank); (-inf, inf) where the steps are too few for one."""
    d = np.sort(np.subtract.outer(np.log(b), np.log(a)).ravel())
    k = interval_rank(len(a), len(b), level)
    lo, hi = (float(d[k - 1]), float(d[len(d) - k])) if k > 0 else (-np.inf, np.inf)
    return float(np.median(d)), lo, hi


def judge_pair(a_rounds: list[list[float]], b_rounds: list[list[float]], twin_gap: float | None) -> dict:
    """One pair of schedules of a configuration (rule s15rank, steps 1-5): a's and b's timed steps of
    each round, and the twin's gap ln(predicted_b / predicted_a) (None where not predicted).
    decided: every round holds RANKING_MIN_STEPS_A_ROUND steps of each and the pool RANKING_MIN_STEPS;
    resolved: the pooled steps' exact rank-sum p < RANKING_ALPHA and every round's difference of
    medians has the sign of D; met: decided and (resolved and the twin orders the pair the same way,
    or unresolved and its gap lies inside the interval)."""
    a, b = [t for r in a_rounds for t in r], [t for r in b_rounds for t in r]
    decided = (len(a_rounds) == len(b_rounds) >= 1 and len(a) >= RANKING_MIN_STEPS and len(b) >= RANKING_MIN_STEPS
               and all(len(r) >= RANKING_MIN_STEPS_A_ROUND for r in a_rounds + b_rounds))
    out = {"decided": decided, "steps": (len(a), len(b)), "twin_gap": twin_gap, "gap": None, "lo": None, "hi": None,
           "p": None, "rounds_agree": None, "resolved": False, "met": False}
    if not (a and b):
        return out
    gap, lo, hi = hodges_lehmann_log_gap(a, b)
    p = rank_sum_p(a, b)
    agree = all(np.sign(np.median(rb) - np.median(ra)) == np.sign(gap) for ra, rb in zip(a_rounds, b_rounds) if ra and rb)
    resolved = p < RANKING_ALPHA and agree and gap != 0.0
    if twin_gap is None or not decided:
        met = False
    elif resolved:
        met = np.sign(twin_gap) == np.sign(gap)
    else:
        met = lo <= twin_gap <= hi
    # an unbounded end (too few steps for an interval) is None in the result (JSON has no infinity)
    out.update(gap=gap, lo=lo if np.isfinite(lo) else None, hi=hi if np.isfinite(hi) else None, p=p,
               rounds_agree=bool(agree), resolved=bool(resolved), met=bool(met))
    return out


def judge_ranking(steps: dict, predicted: dict) -> list[dict]:
    """Rule s15rank on collected figures: `steps` {configuration: {schedule: [each round's timed
    steps]}}, `predicted` {configuration: {schedule: [each round's twin step time]}}. Per
    configuration every pair of its schedules (judge_pair; a before b in the pooled medians' order,
    the gap b over a), the pooled medians' order and the twin's (mean over rounds of its log step
    time), and `met` where every pair is."""
    out = []
    for config, by_schedule in steps.items():
        pooled = {s: float(np.median([t for r in rounds for t in r])) if any(rounds) else None
                  for s, rounds in by_schedule.items()}
        order = sorted(by_schedule, key=lambda s: np.inf if pooled[s] is None else pooled[s])
        twin_log = {s: float(np.mean(np.log(v))) for s, v in predicted.get(config, {}).items() if v}
        pairs = []
        for i, sa in enumerate(order):
            for sb in order[i + 1:]:
                twin_gap = twin_log[sb] - twin_log[sa] if sa in twin_log and sb in twin_log else None
                pairs.append({"a": sa, "b": sb, **judge_pair(by_schedule[sa], by_schedule[sb], twin_gap)})
        out.append({"config": config, "measured": order, "measured_median_s": pooled,
                    "predicted": sorted(twin_log, key=twin_log.get),
                    "predicted_s": {s: float(np.exp(v)) for s, v in twin_log.items()},
                    "pairs": pairs, "met": bool(pairs) and all(p["met"] for p in pairs)})
    return out


# s18gap (docs/notes/s18gap_rule.md, the rule committed before the held-out figures under it): a ranking
# or interleaved folder (a subfolder of its host's records folder) has no probe, no kernel records and no
# one-GPU folder beside it, so predicted on its own it runs with no device gap (issue() at 0 between
# queued kernels, where the host's probe measures 1.1-1.2 us a launch on the H200 hosts) and
# AccumulateGrad at the profile's fallback rate; with the switch on it takes its host folder's
# host-level inputs (host_inputs' inputs_from), as s16idle's idle rounds and the host folder's own rows do
ADOPT_S18_HOST_FOLDER_INPUTS = True    # adopted by its rule (s18gap: docs/notes/s18gap_rule.md, result there)


def subfolder_inputs_from(folder: Path) -> Path | None:
    """The folder whose host-level inputs (host_inputs: the NCCL sweep, AccumulateGrad rates, device
    gap) a ranking or interleaved folder's predictions take where it has none of its own: the host
    folder it sits in with ADOPT_S18_HOST_FOLDER_INPUTS on, else None (its own only)."""
    return Path(folder).parent if ADOPT_S18_HOST_FOLDER_INPUTS else None


def ranking_rounds(folder: Path) -> list[Path]:
    """A ranking folder's rounds (round_a/, round_b/, ...: subfolders holding pipeline_step.csv)."""
    return [p for p in sorted(Path(folder).glob("round_*")) if csv_exists(p / "pipeline_step.csv")]


def ranking_judgement(folder: Path, gpu: str, profile) -> list[dict]:
    """Rule s15rank on a ranking folder: each round predicted as validation predicts a folder
    (predict_folder: host rates from that round's own fitting split; the host-level inputs its host
    folder's where subfolder_inputs_from gives it, s18gap), each
    configuration's timed steps per schedule and round (step_times_by_rep_s), judged by
    judge_ranking. Configurations are keyed by their number of micro-batches (the rest of the shape
    is one per campaign)."""
    steps: dict = {}
    predicted: dict = {}
    rounds = ranking_rounds(folder)
    host_folder = subfolder_inputs_from(folder)
    for i, rnd in enumerate(rounds):
        for c in predict_folder(rnd, gpu, profile, inputs_from=host_folder):
            row = c["row"]
            if int(row["pp"]) < 2:
                continue
            config, schedule = int(row["num_microbatches"]), str(row["schedule"])
            steps.setdefault(config, {}).setdefault(schedule, [[] for _ in rounds])[i] = \
                step_times_by_rep_s(c["measured_ops"])
            predicted.setdefault(config, {}).setdefault(schedule, []).append(float(c["predicted_s"]))
    return judge_ranking(dict(sorted(steps.items())), predicted)


def format_ranking_judgement(name: str, configs: list[dict]) -> list[str]:
    """judge_ranking's result as lines: per configuration met or not, the pooled medians' order and
    the twin's, then every pair not met: its measured gap D and interval, p, and the twin's gap."""
    lines = []
    for g in configs:
        met = sum(p["met"] for p in g["pairs"])
        lines.append(f"ranking {name} n{g['config']}: {'met' if g['met'] else 'NOT met'} ({met} of {len(g['pairs'])} "
                     f"pairs); measured {' < '.join(g['measured'])}, twin {' < '.join(g['predicted'])}")
        for p in g["pairs"]:
            if p["met"]:
                continue
            why = ("undecided (steps " + "/".join(map(str, p["steps"])) + ")" if not p["decided"] else
                   "resolved, twin orders it the other way" if p["resolved"] else "twin's gap outside the interval")
            twin = f"{p['twin_gap']:+.2%}" if p["twin_gap"] is not None else "-"
            ends = [f"{v:+.2%}" if v is not None else "unbounded" for v in (p["lo"], p["hi"])]
            gap = f"D {p['gap']:+.2%} [{ends[0]}, {ends[1]}], p {p['p']:.3f}" if p["gap"] is not None else "no steps"
            lines.append(f"    {p['b']} over {p['a']}: {gap}, twin {twin}: {why}")
    return lines


# --- Each rank's idle judged on a two-round folder (docs/notes/s16idle_rule.md) ---
# {multi-GPU host folder: its idle folders in order (subfolders holding round_a/, round_b/)}: 4-GPU
# hosts the ranking folder (real/campaigns/s15rank.sh), 2-GPU hosts the first complete delivery of
# real/campaigns/s16idle.sh at 4 and 8 micro-batches, then of its 16-micro-batch set (addendum A); a
# configuration is judged on the first that holds it, and on the host folder where none does
IDLE_FOLDERS: dict[str, tuple[str, ...]] = {"h200x4": ("s15rank_20261127_0408",),
                                            "h200x2": ("s16idle_20261127_0654", "s16idle16_20261127_0729")}
IDLE_TOL = 0.10                 # the target: within 10% of the measured idle
IDLE_FLOOR_OF_STEP = 0.01       # or within 1% of the measured step where that is larger
IDLE_MIN_STEPS_A_ROUND = 10     # each round's timed steps a configuration needs to count
IDLE_MIN_STEPS = 20             # and pooled over the rounds
IDLE_LEVEL = 0.95               # the pooled median's distribution-free interval (reported, not judged)


def median_interval(values: list[float], level: float = IDLE_LEVEL) -> tuple[float | None, float | None]:
    """The distribution-free interval of a median at `level`: the k-th smallest and k-th largest of
    the n values, k the largest with P(Binomial(n, 1/2) <= k - 1) <= (1 - level) / 2; (None, None)
    where the values are too few for one (n <= 5 at 95%)."""
    n = len(values)
    cdf = binom.cdf(np.arange(n + 1), n, 0.5)
    k = int(np.sum(cdf <= (1.0 - level) / 2))   # cdf[j] = P(X <= j): k - 1 = the last j that qualifies
    if k == 0:
        return None, None
    v = np.sort(values)
    return float(v[k - 1]), float(v[n - k])


def judge_idle_gpu(idle_rounds: list[list[float]], step_rounds: list[list[float]],
                   twin_rounds: list[float | None]) -> dict:
    """One GPU of one configuration (rule s16idle, steps 1-4): its idle in each timed step of each
    round, the configuration's step times of each round, and the twin's idle of each round (None
    where not predicted). decided: every round holds IDLE_MIN_STEPS_A_ROUND steps and the pool
    IDLE_MIN_STEPS; measured: the pooled median; twin: the mean over the rounds; met: decided and
    within the band max(IDLE_TOL x measured, IDLE_FLOOR_OF_STEP x the pooled median step).
    Reported beside: each round's median, whether both lie within the band of the pooled median
    (holds_still) and the pooled median's interval."""
    pooled = [v for r in idle_rounds for v in r]
    steps = [t for r in step_rounds for t in r]
    decided = (len(idle_rounds) >= 2 and len(pooled) >= IDLE_MIN_STEPS
               and all(len(r) >= IDLE_MIN_STEPS_A_ROUND for r in idle_rounds))
    out = {"decided": decided, "steps": [len(r) for r in idle_rounds], "measured_s": None, "twin_s": None,
           "band_s": None, "met": False, "round_medians_s": [float(np.median(r)) if r else None for r in idle_rounds],
           "twin_rounds_s": list(twin_rounds), "holds_still": None, "lo_s": None, "hi_s": None}
    if not pooled or not steps:
        return out
    measured = float(np.median(pooled))
    band = max(IDLE_TOL * measured, IDLE_FLOOR_OF_STEP * float(np.median(steps)))
    twin = float(np.mean(twin_rounds)) if twin_rounds and all(t is not None for t in twin_rounds) else None
    lo, hi = median_interval(pooled)
    still = all(m is not None and abs(m - measured) <= band for m in out["round_medians_s"])
    out.update(measured_s=measured, twin_s=twin, band_s=band, holds_still=bool(still), lo_s=lo, hi_s=hi,
               met=bool(decided and twin is not None and abs(twin - measured) <= band))
    return out


def judge_idle(idle: dict, steps: dict, twin: dict, held_out: dict) -> list[dict]:
    """Rule s16idle on collected figures, per configuration: `idle` {configuration: {GPU: [each
    round's idle of each timed step]}}, `steps` {configuration: [each round's step times]}, `twin`
    {configuration: {GPU: [each round's twin idle]}}, `held_out` {configuration: bool}. Each GPU by
    judge_idle_gpu; a configuration is met where all its GPUs are."""
    out = []
    for config, by_gpu in idle.items():
        gpus = {g: judge_idle_gpu(rounds, steps[config], twin.get(config, {}).get(g, [None]))
                for g, rounds in sorted(by_gpu.items())}
        out.append({"config": config, "held_out": bool(held_out.get(config)), "gpus": gpus,
                    "met": bool(gpus) and all(v["met"] for v in gpus.values())})
    return out


def idle_judgement(folder: Path, host_folder: Path, gpu: str, profile) -> list[dict]:
    """Rule s16idle on an idle folder: each round predicted as validation predicts a folder
    (predict_folder: host rates from that round's own fitting split) with the host folder's
    host-level inputs where the round has none (host_inputs), each GPU's idle and each step's time
    per round, judged by judge_idle. Configurations are keyed by CONFIG_KEYS (config_key), so that
    the host folder's rows of the same configuration can be told apart (idle_configs_elsewhere)."""
    idle: dict = {}
    steps: dict = {}
    twin: dict = {}
    held_out: dict = {}
    rounds = ranking_rounds(folder)
    for i, rnd in enumerate(rounds):
        for c in predict_folder(rnd, gpu, profile, inputs_from=Path(host_folder)):
            row, config = c["row"], config_key(c["row"])
            pp = int(row["pp"])
            held_out[config] = str(row.get("split", "holdout")) != "fit"
            steps.setdefault(config, [[] for _ in rounds])[i] = step_times_by_rep_s(c["measured_ops"])
            for g, reps in c["idle_measured_by_rep_s"].items():
                idle.setdefault(config, {}).setdefault(int(g), [[] for _ in rounds])[i] = list(reps)
                if c["idle_simulated_s"]:
                    twin.setdefault(config, {}).setdefault(int(g), []).append(float(c["idle_simulated_s"][int(g) % pp]))
    return judge_idle(idle, steps, twin, held_out)


def host_idle_judgement(host_folder: Path, gpu: str, profile) -> dict | None:
    """Rule s16idle on a host's idle folders (IDLE_FOLDERS, those with rounds): idle_judgement on
    each in order, a configuration judged on the first that holds it (each carries its `folder`),
    and the counts over all; None where the host has none."""
    folders = [f for f in IDLE_FOLDERS.get(Path(host_folder).name, ()) if ranking_rounds(Path(host_folder) / f)]
    if not folders:
        return None
    configs: list[dict] = []
    for f in folders:
        seen = {c["config"] for c in configs}
        configs += [{**c, "folder": f} for c in idle_judgement(Path(host_folder) / f, host_folder, gpu, profile)
                    if c["config"] not in seen]
    return {"folders": folders, "configs": configs, "counts": idle_counts(configs)}


def config_key(row) -> str:
    """A configuration's name from its CONFIG_KEYS (a pipeline_step row or a validation pipeline's
    config), e.g. `v2-lite-slice dualpipe pp2 ep2 n8 b1 s4096 bf16`."""
    return (f"{row['model']} {row['schedule']} pp{int(row['pp'])} ep{int(row['ep'])} n{int(row['num_microbatches'])} "
            f"b{int(row['micro_batch_seqs'])} s{int(row['seq_len'])} {row['precision']}")


def idle_counts(configs: list[dict]) -> dict:
    """GPUs within the band over all of an idle judgement's, and over its held-out configurations'."""
    gpus = [(c["held_out"], v["met"]) for c in configs for v in c["gpus"].values()]
    return {"met": sum(m for _, m in gpus), "total": len(gpus),
            "held_out_met": sum(m for h, m in gpus if h), "held_out_total": sum(1 for h, _ in gpus if h)}


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v * 1e3:.1f}"


def format_idle_judgement(name: str, configs: list[dict]) -> list[str]:
    """judge_idle's result as lines: the counts, then per configuration (and its idle folder, where
    it carries one) met or not and each GPU's twin / measured idle (pooled median, its rounds'
    medians and interval), flagged where missed."""
    n = idle_counts(configs)
    lines = [f"idle {name}: {n['met']} of {n['total']} GPUs within 10% (held out {n['held_out_met']} of "
             f"{n['held_out_total']})"]
    for c in configs:
        where = f" [{c['folder']}]" if "folder" in c else ""
        lines.append(f"    {c['config']}{where}{' (held out)' if c['held_out'] else ''}: {'met' if c['met'] else 'NOT met'}")
        for g, v in c["gpus"].items():
            why = "" if v["met"] else ("  MISS" if v["decided"] else f"  undecided (steps {v['steps']})")
            lines.append(f"        GPU {g}: twin {_ms(v['twin_s'])} / measured {_ms(v['measured_s'])} ms "
                         f"(band {_ms(v['band_s'])}; rounds {' / '.join(_ms(m) for m in v['round_medians_s'])}, "
                         f"95% {_ms(v['lo_s'])}-{_ms(v['hi_s'])}{'' if v['holds_still'] else ', rounds apart'}){why}")
    return lines

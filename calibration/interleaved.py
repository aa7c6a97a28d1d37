"""The ranking target judged on interleaved steps (docs/notes/s17alt_rule.md).

real/campaigns/s17alt.sh times the four schedules of one micro-batch count in turn (real.pipeline
--interleave): cycle c runs one step of each, in row c of a Williams design, so the steps of one cycle
are seconds apart and see the same host pace. Its pipeline_interleaved.csv has one row per timed step,
with the cycle as pair_key. Here each pair of schedules (a, b) is judged on the paired log differences
d_c = ln t_b,c - ln t_a,c of the cycles holding both:
- D, the one-sample Hodges-Lehmann estimate (the median of the Walsh averages (d_i + d_j) / 2, i <= j);
- Tukey's distribution-free 95% interval, from the exact null of the Wilcoxon signed-rank statistic;
- resolved where the interval excludes 0, a tie otherwise;
- met where resolved and the twin's gap g = ln(predicted_b / predicted_a) has D's sign, or where a tie
  holds g inside the interval.
The twin predicts the folder as validation predicts any (calibration.pipeline.predict_folder: host
rates from its own fitting split, the 4-micro-batch rows; 8 is held out), with its host folder's
host-level inputs where ADOPT_S18_HOST_FOLDER_INPUTS (calibration.pipeline_judgement) gives them
(docs/notes/s18gap_rule.md); with
ADOPT_S18_PART_HOST_RATE each part (micro-batch count) at the per-rank host rates of its own host marks,
a measured condition of the part (the host clock's issue marks; never an op's GPU end or a step time:
docs/notes/s18reg_rule.md).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import wilcoxon

import calibration.pipeline as pipe
from calibration.pipeline import predict_folder
from calibration.pipeline_judgement import RANKING_LEVEL, subfolder_inputs_from
from calibration.records_io import csv_exists, read_csv

# {multi-GPU host folder: its interleaved folder (a subfolder holding pipeline_interleaved.csv)}: the
# first delivery of real/campaigns/s17alt.sh per host kind; empty until one is committed
INTERLEAVED_FOLDERS: dict[str, str] = {"h200x4": "s17alt_20261127_0941", "h200x2": "s17alt_20261127_0948"}
# {multi-GPU host folder: further interleaved folders of s17alt's configurations, judged by the same rule
# and reported beside the host's judging folder above (which alone judges the ranking target)}: the
# s18probe runs (real/campaigns/s18probe.sh, s17alt's run with a host-pace probe per cycle;
# docs/notes/s18probe_note.md)
INTERLEAVED_REPEAT_FOLDERS: dict[str, tuple[str, ...]] = {
    "h200x4": ("s18probe_20261127_1249", "s18probe_20261127_1301"),
    "h200x2": ("s18probe_20261127_1252",)}
INTERLEAVED_MIN_CYCLES = 12     # the cycles holding a step of both schedules a pair needs to count
INTERLEAVED_FILE = "pipeline_interleaved.csv"
# the schedules real/campaigns/s17alt.sh interleaves: a configuration holding all of them, every pair
# decided, is judged by this rule in place of the host's judgement before it
INTERLEAVED_SCHEDULES = frozenset({"dualpipe", "dualpipev", "1f1b", "zb1p"})


def signed_rank_null_counts(n: int) -> np.ndarray:
    """How many of the 2^n sign patterns of n distinct |differences| give each Wilcoxon signed-rank
    statistic T+ = 0 .. n(n+1)/2 (the sum of the ranks of the positive ones): the subsets of {1..n}
    by their sum. n = 3: sums 0,1,2,3,3,4,5,6 -> [1, 1, 1, 2, 1, 1, 1]."""
    counts = np.zeros(n * (n + 1) // 2 + 1)
    counts[0] = 1.0
    for r in range(1, n + 1):
        counts[r:] = counts[r:] + counts[:-r].copy()
    return counts


def walsh_interval_rank(n: int, level: float = RANKING_LEVEL) -> int:
    """k of Tukey's interval [w_(k), w_(M+1-k)] of the M = n(n+1)/2 sorted Walsh averages: the largest
    k with P(T+ <= k - 1) <= (1 - level) / 2 under the exact null; 0 where none qualifies (n <= 5 at
    95%: the interval is unbounded). n = 12 at 95%: k = 14 (P(T+ <= 13) = 0.021, P(T+ <= 14) = 0.026)."""
    counts = signed_rank_null_counts(n)
    cdf = np.cumsum(counts) / counts.sum()
    return int(np.sum(cdf <= (1.0 - level) / 2))


def signed_rank_p(d: list[float]) -> float:
    """The exact two-sided Wilcoxon signed-rank p of paired differences d (zeros dropped): scipy's."""
    x = np.asarray([v for v in d if v != 0.0])
    if len(x) == 0:
        return 1.0
    return float(wilcoxon(x, method="exact").pvalue)


def hodges_lehmann_paired(d: list[float], level: float = RANKING_LEVEL) -> tuple[float, float, float]:
    """(D, lo, hi) of paired differences d: the median of the Walsh averages and Tukey's interval at
    `level`; (-inf, inf) for the ends where d is too short for one."""
    x = np.asarray(d, dtype=float)
    i, j = np.triu_indices(len(x))
    walsh = np.sort((x[i] + x[j]) / 2.0)
    k = walsh_interval_rank(len(x), level)
    lo, hi = (float(walsh[k - 1]), float(walsh[len(walsh) - k])) if k > 0 else (-np.inf, np.inf)
    return float(np.median(walsh)), lo, hi


def judge_paired(a_by_cycle: dict, b_by_cycle: dict, twin_gap: float | None) -> dict:
    """One pair (rule s17alt, steps 1-6): a's and b's step times by cycle, and the twin's gap
    ln(predicted_b / predicted_a) (None where not predicted)."""
    cycles = sorted(set(a_by_cycle) & set(b_by_cycle))
    d = [float(np.log(b_by_cycle[c]) - np.log(a_by_cycle[c])) for c in cycles]
    decided = len(d) >= INTERLEAVED_MIN_CYCLES
    out = {"decided": decided, "cycles": len(d), "twin_gap": twin_gap, "gap": None, "lo": None, "hi": None,
           "p": None, "median_d": None, "positive": None, "resolved": False, "tie": False, "met": False}
    if not d:
        return out
    gap, lo, hi = hodges_lehmann_paired(d)
    resolved = lo > 0.0 or hi < 0.0
    if twin_gap is None or not decided:
        met = False
    elif resolved:
        met = twin_gap != 0.0 and np.sign(twin_gap) == np.sign(gap)
    else:
        met = lo <= twin_gap <= hi
    out.update(gap=gap, lo=lo if np.isfinite(lo) else None, hi=hi if np.isfinite(hi) else None,
               p=signed_rank_p(d), median_d=float(np.median(d)), positive=int(sum(v > 0 for v in d)),
               resolved=bool(resolved), tie=not resolved, met=bool(met))
    return out


def judge_interleaved(steps: dict, predicted: dict) -> list[dict]:
    """Rule s17alt on collected figures: `steps` {configuration: {schedule: {cycle: step time}}},
    `predicted` {configuration: {schedule: twin step time}}. Per configuration, every pair of its
    schedules (a before b in the order of their steps' medians, the gap b over a), the measured and
    the twin's order, `met` where every pair is, and `complete` where it holds every schedule of
    INTERLEAVED_SCHEDULES and every pair is decided (the configurations the rule judges)."""
    out = []
    for config, by_schedule in steps.items():
        medians = {s: float(np.median(list(v.values()))) for s, v in by_schedule.items() if v}
        order = sorted(medians, key=medians.get)
        twin = predicted.get(config, {})
        pairs = []
        for i, sa in enumerate(order):
            for sb in order[i + 1:]:
                g = float(np.log(twin[sb] / twin[sa])) if sa in twin and sb in twin else None
                pairs.append({"a": sa, "b": sb, **judge_paired(by_schedule[sa], by_schedule[sb], g)})
        out.append({"config": config, "measured": order, "measured_median_s": medians,
                    "predicted": sorted(twin, key=twin.get), "predicted_s": dict(twin),
                    "pairs": pairs, "met": bool(pairs) and all(p["met"] for p in pairs),
                    "complete": INTERLEAVED_SCHEDULES <= set(medians) and all(p["decided"] for p in pairs)})
    return out


def interleaved_steps_by_cycle(folder: Path) -> dict:
    """{micro-batches: {schedule: {cycle: step time s}}} of an interleaved folder's pipeline rows."""
    path = Path(folder) / INTERLEAVED_FILE
    if not csv_exists(path):
        return {}
    rows = read_csv(path)
    rows = rows[rows["pp"].astype(int) > 1]
    out: dict = {}
    for (n, schedule), g in rows.groupby(["num_microbatches", "schedule"], sort=True):
        out.setdefault(int(n), {})[str(schedule)] = {int(c): float(t) for c, t in zip(g["cycle"], g["time_s"])}
    return out


def interleaved_judgement(folder: Path, gpu: str, profile) -> list[dict]:
    """Rule s17alt on an interleaved folder: its steps paired by cycle, the twin's predictions of its
    pipeline_step rows as validation makes them (predict_folder on the folder; the host-level inputs its
    host folder's where subfolder_inputs_from gives it, s18gap; with ADOPT_S18_PART_HOST_RATE each part
    at the per-rank host rates of its own host marks, s18reg)."""
    steps = interleaved_steps_by_cycle(folder)
    predicted: dict = {}
    for c in predict_folder(Path(folder), gpu, profile, inputs_from=subfolder_inputs_from(folder),
                            part_host=pipe.ADOPT_S18_PART_HOST_RATE):
        row = c["row"]
        if int(row["pp"]) > 1:
            predicted.setdefault(int(row["num_microbatches"]), {})[str(row["schedule"])] = float(c["predicted_s"])
    return judge_interleaved(dict(sorted(steps.items())), predicted)


def format_interleaved_judgement(name: str, configs: list[dict]) -> list[str]:
    """judge_interleaved's result as lines: per configuration met or not, both orders, then every pair:
    D and its interval, resolved or tie, the cycles, p, and the twin's gap."""
    lines = []
    for g in configs:
        met = sum(p["met"] for p in g["pairs"])
        lines.append(f"ranking interleaved {name} n{g['config']}: {'met' if g['met'] else 'NOT met'} ({met} of "
                     f"{len(g['pairs'])} pairs); measured {' < '.join(g['measured'])}, twin {' < '.join(g['predicted'])}")
        for p in g["pairs"]:
            twin = f"{p['twin_gap']:+.2%}" if p["twin_gap"] is not None else "-"
            if p["gap"] is None:
                lines.append(f"    {p['b']} over {p['a']}: no paired steps, twin {twin}: NOT met")
                continue
            ends = [f"{v:+.2%}" if v is not None else "unbounded" for v in (p["lo"], p["hi"])]
            kind = "undecided" if not p["decided"] else "resolved" if p["resolved"] else "tie"
            lines.append(f"    {p['b']} over {p['a']}: D {p['gap']:+.2%} [{ends[0]}, {ends[1]}] {kind}, "
                         f"{p['cycles']} cycles ({p['positive']} > 0), p {p['p']:.3g}, twin {twin}: "
                         f"{'met' if p['met'] else 'NOT met'}")
    return lines

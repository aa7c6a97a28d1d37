"""The evidence tables of docs/notes/s18reg_rule.md (diagnostics).

    PYTHONPATH=. .venv/bin/python benchmarks/s18reg_figures.py rates HOST      (HOST: h200x4 or h200x2)
    PYTHONPATH=. .venv/bin/python benchmarks/s18reg_figures.py insample HOST
    PYTHONPATH=. .venv/bin/python benchmarks/s18reg_figures.py decompose HOST   (held out: after the rule)

`rates`: the host rates (calibration.pipeline.host_rates: us per launch by direction and stage role, and
the host's us between two compute ops) of the interleaved folder's host marks, per part (micro-batch
count), per half of its cycles and per pipeline rank: read from host_start_s / host_end_s (host clock)
and start_s (the stream mark, for the lead at issue only); never end_s or a step time. Also the host's
plain time between any two consecutive ops of a rank (host clock only, no lead filter).
`insample`: the fitting split only (the 4-micro-batch part): the twin's four steps with the part's host
rates and with each half's own, pooled over the ranks and per pipeline rank (host_rates_by_rank), beside
each half's measured median steps.
`decompose`: the held-out part (8 micro-batches; computed after the rule's commit, reported, not judged):
its four twin steps and the DualPipe pair's judgement at the fitting split's rates pooled (the switch off)
and per rank, and at the part's own rates pooled and per rank (the switch on).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

import calibration.pipeline as pipe
import calibration.pipeline_judgement as judgement
from calibration.interleaved import INTERLEAVED_FOLDERS, interleaved_steps_by_cycle, judge_interleaved
from calibration.records import MEASUREMENTS_DIR
from calibration.validate import load_fitted_profile

RATE_KEYS = ("fwd", "fwd@first", "fwd@middle", "fwd@last", "bwd", "wgrad", "between_ops")
FITTING_MICROBATCHES = 4
SPLIT_CYCLE = 12     # the 4xH200 n4 part's host switched state after cycle 11 (s17recv_rule.md)


def _inputs(host: str):
    gpu = host.split("x")[0]
    folder = Path(MEASUREMENTS_DIR) / host / INTERLEAVED_FOLDERS[host]
    profile = load_fitted_profile(gpu, None)[0]   # the committed profile, as validate reads it
    prof, accumulate, gap = pipe.host_inputs(folder, gpu, profile, judgement.subfolder_inputs_from(folder))
    return gpu, folder, prof, accumulate, gap


def _parts(marks: pd.DataFrame) -> dict[str, pd.DataFrame]:
    out = {}
    for n in sorted(marks["num_microbatches"].unique()):
        m = marks[marks["num_microbatches"] == n]
        out[f"n{n} all"] = m
        out[f"n{n} c0-{SPLIT_CYCLE - 1}"] = m[m["rep"] < SPLIT_CYCLE]
        out[f"n{n} c{SPLIT_CYCLE}-"] = m[m["rep"] >= SPLIT_CYCLE]
    return out


def rates(host: str) -> list[str]:
    gpu, folder, prof, accumulate, gap = _inputs(host)
    marks = pipe.host_marks(folder).assign(split="fit")      # every part's marks read as a fitting split
    lines = [f"{host} interleaved {folder.name}: host rates, us ({', '.join(RATE_KEYS)})"]
    for name, m in _parts(marks).items():
        for label, sel in [("both", m)] + [(f"pp{p}", m[m["rank"] % m["pp"] == p]) for p in (0, 1)]:
            r = pipe.host_rates(sel, folder, gpu, prof, accumulate, gap) or {}
            lines.append(f"  {name:9} {label:5} " + " ".join(f"{r.get(k, float('nan')) * 1e6:8.2f}" for k in RATE_KEYS))
    d = marks.sort_values(["num_microbatches", "schedule", "rep", "rank", "op_index"])
    nxt = d.groupby(["num_microbatches", "schedule", "rep", "rank"])["host_start_s"].shift(-1)
    d = d.assign(between_us=(nxt - d["host_end_s"]) * 1e6, pp_rank=d["rank"] % d["pp"],
                 half=np.where(d["rep"] < SPLIT_CYCLE, "first", "second"))
    lines.append("  host clock between any two consecutive ops of a rank, median us (num_microbatches, half x pp rank):")
    lines += ["    " + s for s in d.groupby(["num_microbatches", "half", "pp_rank"])["between_us"].median()
              .unstack().round(1).to_string().splitlines()]
    return lines


def insample(host: str) -> list[str]:
    gpu, folder, prof, accumulate, gap = _inputs(host)
    marks = pipe.host_marks(folder)
    marks = marks[marks["num_microbatches"] == FITTING_MICROBATCHES]
    steps, _ = pipe.load(folder)
    rows = steps[(steps["num_microbatches"] == FITTING_MICROBATCHES) & (steps["pp"] > 1)]
    by_cycle = interleaved_steps_by_cycle(folder)[FITTING_MICROBATCHES]
    halves = {"all": lambda c: True, f"c0-{SPLIT_CYCLE - 1}": lambda c: c < SPLIT_CYCLE,
              f"c{SPLIT_CYCLE}-": lambda c: c >= SPLIT_CYCLE}
    lines = [f"{host} n{FITTING_MICROBATCHES} (fitting split): twin step ms at each half's host rates | measured median ms"]
    for name, keep in halves.items():
        m = marks[[keep(int(c)) for c in marks["rep"]]]
        pooled, by_rank = pipe.host_rates_by_rank(m, folder, gpu, prof, accumulate, gap)
        meas = {str(r["schedule"]): float(np.median([t for c, t in by_cycle[str(r["schedule"])].items() if keep(c)]))
                for _, r in rows.iterrows()}
        for label, ranks in (("pooled", None), ("by rank", by_rank)):
            twin = {str(r["schedule"]): pipe.simulate_row(r, pipe.gpu_spec(gpu), prof, accumulate, pooled, ranks, {},
                                                          0.0)[1] for _, r in rows.iterrows()}
            lines.append(f"  {name:7} {label:7} " + " ".join(f"{s} {twin[s] * 1e3:6.1f} | {meas[s] * 1e3:6.1f}"
                                                             for s in sorted(twin))
                         + f"; ln(DualPipe / DualPipeV) twin {_gap(twin):+.2%}, measured (of medians) {_gap(meas):+.2%}")
    return lines


def _gap(steps: dict) -> float:
    return float(np.log(steps["dualpipe"] / steps["dualpipev"])) if {"dualpipe", "dualpipev"} <= set(steps) else np.nan


HELD_OUT_MICROBATCHES = 8


def decompose(host: str) -> list[str]:
    gpu, folder, prof, accumulate, gap = _inputs(host)
    parts = pipe.part_host_rates(folder, gpu, prof, accumulate, gap)
    steps, _ = pipe.load(folder)
    rows = steps[(steps["num_microbatches"] == HELD_OUT_MICROBATCHES) & (steps["pp"] > 1)]
    measured = interleaved_steps_by_cycle(folder)[HELD_OUT_MICROBATCHES]
    fit, own = parts[FITTING_MICROBATCHES], parts[HELD_OUT_MICROBATCHES]
    variants = {"fitting pooled (off)": (fit[0], None), "fitting per rank": fit,
                "part pooled": (own[0], None), "part per rank (on)": own}
    lines = [f"{host} n{HELD_OUT_MICROBATCHES} (held out): twin step ms; the DualPipe pair's twin gap and pairs met"]
    for name, (pooled, by_rank) in variants.items():
        twin = {str(r["schedule"]): pipe.simulate_row(r, pipe.gpu_spec(gpu), prof, accumulate, pooled, by_rank, {},
                                                      0.0)[1] for _, r in rows.iterrows()}
        (g,) = judge_interleaved({HELD_OUT_MICROBATCHES: measured}, {HELD_OUT_MICROBATCHES: twin})
        pair = next(p for p in g["pairs"] if {p["a"], p["b"]} == {"dualpipe", "dualpipev"})
        lines.append(f"  {name:21} " + " ".join(f"{s} {twin[s] * 1e3:6.1f}" for s in sorted(twin))
                     + f" | {pair['b']} over {pair['a']}: twin {pair['twin_gap']:+.2%} ({'met' if pair['met'] else 'MISS'});"
                     f" pairs met {sum(p['met'] for p in g['pairs'])} of {len(g['pairs'])}")
    return lines


COMMANDS = {"rates": rates, "insample": insample, "decompose": decompose}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in COMMANDS or argv[1] not in INTERLEAVED_FOLDERS:
        print(__doc__)
        return 2
    print("\n".join(COMMANDS[argv[0]](argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

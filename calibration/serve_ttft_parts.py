"""TTFT taken apart, measured against the twin's replay: per run, the median and P99 of the wait
(arrival to the start of the iteration that emits the first token), the first-token step's own
duration, the tail after it (sampling / detokenise until first_token_s) and the whole TTFT.

Measured: serve_requests' first_token_iteration joined to serve_iterations. Twin: one replay of the
recorded requests (calibration.serve_load_validation's scenario, spread seed `--seed`) with its
iteration trace; a request's first-token step is the traced iteration that ends at its first token.
Also the prompt iterations themselves: measured and twin medians of their durations by prompt-token
bin (the twin's prompt step against the engine's, shape for shape as each schedule ran them).
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from pathlib import Path

import numpy as np

from calibration import entry
from calibration.records_io import csv_exists, open_csv
from calibration.serve_engine_fit import base_table
from calibration.serve_load_validation import (scenario_for, sessions, session_engine_name,
                                               sizes_run_before, timed_run_ids)
from twin.core.specs import serve_engines
from twin.serving.simulate import simulate
from twin.serving.workload import from_records

TOKEN_BINS = (0, 128, 256, 512, 1024, 2048, 1 << 30)


def _read(path: Path) -> list[dict]:
    with open_csv(path) as f:
        return list(csv.DictReader(f))


def measured_parts(reqs: list[dict], its: list[dict]) -> dict[str, np.ndarray]:
    """Per request: wait_s, step_s, tail_s, ttft_s, num_chunks (rank 0's iterations; every request of one run)."""
    by_it = {(r["rank"], int(r["iteration"])): r for r in its}
    wait, step, tail, ttft, chunks = [], [], [], [], []
    for r in reqs:
        it = by_it.get((r["rank"], int(r["first_token_iteration"])))
        a, f = float(r["arrival_s"]), float(r["first_token_s"])
        if it is None:
            continue
        s, d = float(it["start_s"]), float(it["duration_s"])
        wait.append(s - a)
        step.append(d)
        tail.append(f - (s + d))
        ttft.append(f - a)
        chunks.append(int(r.get("num_chunks") or 1))
    return {"wait_s": np.array(wait), "step_s": np.array(step), "tail_s": np.array(tail), "ttft_s": np.array(ttft),
            "num_chunks": np.array(chunks)}


def prompt_steps(its: list[dict]) -> list[tuple[int, int, float]]:
    """(prompt tokens, decode rows, duration_s) of every measured iteration carrying prompt tokens."""
    return [(int(r["prefill_tokens"]), int(r["decode_seqs"]), float(r["duration_s"]))
            for r in its if int(r["prefill_tokens"]) > 0]


def twin_parts(run: dict, reqs: list[dict], run_batch_sizes, engine: str, seed: int):
    """One seeded replay: per-request parts (tail 0 by construction) and the traced prompt steps."""
    sc = scenario_for(run, engine=engine)
    rows = sorted(reqs, key=lambda r: float(r["arrival_s"]))
    isl = [int(r["input_len"]) for r in rows]
    osl = [int(r["output_len"]) for r in rows]
    arrival = None if run["arrival"] == "closed" else [float(r["arrival_s"]) for r in rows]
    one = dataclasses.replace(sc, traffic=dataclasses.replace(sc.traffic, seed=seed, trace_iterations=10 ** 7))
    res = simulate(one, requests=from_records(arrival, isl, osl, one.traffic), run_batch_sizes=run_batch_sizes)
    per = res.per_request()
    tr = np.array([(t[2], t[3], t[4], t[5]) for t in res.trace])   # start, dur, decode rows, prompt tokens
    ends = tr[:, 0] + tr[:, 1]
    first, arr = per["first_token_s"], per["arrival_s"]
    k = np.searchsorted(ends, first - 1e-12)
    k = np.clip(k, 0, len(ends) - 1)
    wait = tr[k, 0] - arr
    step = tr[k, 1]
    out = {"wait_s": wait, "step_s": step, "tail_s": first - ends[k], "ttft_s": first - arr}
    steps = [(int(t[3]), int(t[2]), float(t[1])) for t in tr if t[3] > 0]
    return out, steps


def _fig(x: np.ndarray) -> tuple[float, float]:
    return (float(np.median(x)), float(np.percentile(x, 99))) if len(x) else (float("nan"), float("nan"))


def _bin_medians(steps) -> dict[str, tuple[float, int]]:
    out = {}
    for lo, hi in zip(TOKEN_BINS, TOKEN_BINS[1:]):
        d = [s for p, _b, s in steps if lo < p <= hi]
        if d:
            out[f"{lo + 1}-{hi if hi < 1 << 20 else 'inf'}"] = (float(np.median(d)), len(d))
    return out


def folder_parts(d: Path, seed: int, only: str | None = None) -> list[dict]:
    runs = _read(d / "serve_load.csv")
    reqs = _read(d / "serve_requests.csv")
    its = _read(d / "serve_iterations.csv") if csv_exists(d / "serve_iterations.csv") else []
    before = sizes_run_before(runs, its)
    timed = timed_run_ids(its)
    sess = sessions(runs)
    out = []
    for run in runs:
        rid = run["run_id"]
        if only and only not in rid:
            continue
        run = {**run, "engine_timing": rid in timed}
        rq = [r for r in reqs if r["run_id"] == rid]
        ri = [r for r in its if r["run_id"] == rid and r["rank"] == "0"]
        if not ri:
            continue
        meas = measured_parts(rq, ri)
        # a committed folder's session table (twin validate); a fresh set's, the unpinned table of its GPU
        # (serve_host_speed.replay, as every fresh set is judged), with the record's host probe
        engine = session_engine_name(run, sess[rid])
        engine = engine if engine in serve_engines() else base_table(run)
        tw, tsteps = twin_parts(run, rq, before[rid], engine, seed)
        out.append({"folder": d.name, "run_id": rid, "engine": engine, "measured": meas, "twin": tw,
                    "measured_steps": prompt_steps(ri), "twin_steps": tsteps})
    return out


def format_rows(rows: list[dict]) -> list[str]:
    lines = ["run | part: measured P50/P99 -> twin P50/P99 (ms)"]
    for r in rows:
        lines.append(f"{r['folder']}/{r['run_id']} ({r['engine']}); chunked prompts "
                     f"{int((r['measured']['num_chunks'] > 1).sum())} of {len(r['measured']['num_chunks'])}")
        for part in ("wait_s", "step_s", "tail_s", "ttft_s"):
            m50, m99 = _fig(r["measured"][part])
            t50, t99 = _fig(r["twin"][part])
            lines.append(f"  {part[:-2]:5s} {m50 * 1e3:7.2f} / {m99 * 1e3:7.2f} -> {t50 * 1e3:7.2f} / {t99 * 1e3:7.2f}"
                         f"   ({(t50 / m50 - 1) * 100 if m50 > 0 else float('nan'):+6.1f}% / "
                         f"{(t99 / m99 - 1) * 100 if m99 > 0 else float('nan'):+6.1f}%)")
        mb, tb = _bin_medians(r["measured_steps"]), _bin_medians(r["twin_steps"])
        for k in mb:
            if k in tb:
                lines.append(f"  prompt step {k:>9s} tok: measured {mb[k][0] * 1e3:6.2f} ms (n={mb[k][1]}) "
                             f"twin {tb[k][0] * 1e3:6.2f} ms (n={tb[k][1]}) {(tb[k][0] / mb[k][0] - 1) * 100:+6.1f}%")
    return lines


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.serve_ttft_parts", __doc__)
    ap.add_argument("folders", nargs="+", type=entry.records_folder,
                    help="records folders holding serve_load.csv, serve_requests.csv, serve_iterations.csv")
    ap.add_argument("--run", default=None, help="only runs whose id contains this text")
    ap.add_argument("--seed", type=int, default=0, help="the replay's spread seed (default 0)")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)
    for d in args.folders:
        print("\n".join(format_rows(folder_parts(d, args.seed, args.run))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What each engine stall was, from real/serve's --stall-trace records (issue 15, docs/notes/s24stall_rule.md).

A stall is an eager iteration 8 ms or more over the median of its run's eager iterations of the same prefill-token bin
(prefill_tokens // 64); its serve_stalls.csv row (the main thread's counters over the iteration) attributes it to the
first class whose condition holds (STALL_CLASSES, the rule's order). A set is one host's campaign output
(OUTDIR/s24stall/); its parts are the engine processes under it.

    python -m calibration.serve_stall_causes SET_DIR [SET_DIR ...]
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from calibration import entry
from calibration.records_io import csv_exists, read_csv

STALL_MIN_EXCESS_S = 8e-3   # s23srvh's count: 8 ms or more over the median of its kind and size
PREFILL_BIN_TOKENS = 64
SHARE = 0.5                 # a counter explains a stall when it covers half its excess or more
MINFLT_FACTOR = 10.0        # page faults over 10x the run's median eager row
STALL_CLASSES = ("gc", "preempted", "off_cpu", "cuda_alloc", "faults", "on_cpu")
CAUSE_SHARE = 0.8           # one class holding 80% of a stalling host's stalls is the cause
STALLING_HOST_MIN = 5       # stalls over the as-it-comes parts that make a stalling host
AS_IT_COMES_PARTS = ("qwen3moe", "qwen2moe")


def eager_excess(iters: pd.DataFrame) -> pd.DataFrame:
    """The eager iterations with `excess_s`: duration over the median of their run's eager iterations of the same
    prefill-token bin."""
    e = iters[iters["graph_batch"] == 0].copy()
    e["bin"] = e["prefill_tokens"] // PREFILL_BIN_TOKENS
    e["excess_s"] = e["duration_s"] - e.groupby(["run_id", "bin"])["duration_s"].transform("median")
    return e


def attribute(row: dict, excess_s: float, minflt_median: float) -> str:
    """The rule's class of one stall from its counters row (STALL_CLASSES, first that holds)."""
    need = SHARE * excess_s
    if row["gc_s"] >= need:
        return "gc"
    if row["run_delay_s"] + row["cpu_steal_s"] >= need:
        return "preempted"
    if row["span_s"] - row["thread_cpu_s"] - row["run_delay_s"] >= need:
        return "off_cpu"
    if row["cuda_segment_allocs"] + row["cuda_segment_frees"] + row["cuda_alloc_retries"] > 0:
        return "cuda_alloc"
    if row["majflt"] > 0 or row["minflt"] > MINFLT_FACTOR * max(minflt_median, 1.0):
        return "faults"
    return "on_cpu"


def _counters(part: Path) -> pd.DataFrame:
    c = read_csv(part / "serve_stalls.csv")
    for col in ("cuda_segment_allocs", "cuda_segment_frees", "cuda_alloc_retries"):
        c[col] = pd.to_numeric(c[col], errors="coerce").fillna(0)
    return c


def part_stalls(part: Path) -> pd.DataFrame:
    """One engine process's stalls with their counters and class (empty frame if none)."""
    e = eager_excess(read_csv(part / "serve_iterations.csv"))
    c = _counters(part)
    e = e.merge(c, on=["run_id", "rank", "iteration"], how="left", suffixes=("", "_c"))
    minflt_med = e.groupby("run_id")["minflt"].median()
    s = e[e["excess_s"] >= STALL_MIN_EXCESS_S].copy()
    s["cls"] = [attribute(r, r["excess_s"], minflt_med.get(r["run_id"], 0.0)) for r in s.to_dict("records")]
    s["part"] = part.name
    return s


def part_summary(part: Path) -> dict:
    """One part's eager / graph seconds, stalls by class and the counters' totals over its eager iterations."""
    iters = read_csv(part / "serve_iterations.csv")
    stalls = part_stalls(part)
    c = _counters(part)
    eager = iters[iters["graph_batch"] == 0]
    return {"part": part.name, "eager_s": eager["duration_s"].sum(),
            "graph_s": iters.loc[iters["graph_batch"] > 0, "duration_s"].sum(), "stalls": len(stalls),
            **{f"n_{k}": int((stalls["cls"] == k).sum()) for k in STALL_CLASSES},
            "gc_gen2": int((c["gc_max_gen"] == 2).sum()), "gc_s": c["gc_s"].sum(), "gc_max_s": c["gc_s"].max(),
            "run_delay_s": c["run_delay_s"].sum(), "steal_s": c["cpu_steal_s"].sum(), "nivcsw": int(c["nivcsw"].sum()),
            "cuda_allocs": int(c["cuda_segment_allocs"].sum())}


def host_verdict(set_dir: Path) -> dict:
    """The rule's reading of one host's set: stalling or not, the cause found (or None), the freeze's effect."""
    parts = {p.name: p for p in sorted(set_dir.iterdir()) if csv_exists(p / "serve_stalls.csv")}
    stalls = {name: part_stalls(p) for name, p in parts.items()}
    comes = [stalls[n] for n in AS_IT_COMES_PARTS if n in stalls]
    pooled = pd.concat(comes) if comes else pd.DataFrame(columns=["cls"])
    n = len(pooled)
    counts = pooled["cls"].value_counts().to_dict() if n else {}
    top = max(counts, key=counts.get) if counts else None
    cause = top if n >= STALLING_HOST_MIN and counts[top] >= CAUSE_SHARE * n else None
    frozen = stalls.get("qwen3moe_gcfreeze")
    as_comes = stalls.get("qwen3moe")
    freeze_ok = None
    if frozen is not None and as_comes is not None and n >= STALLING_HOST_MIN:
        freeze_ok = bool(len(frozen) <= 0.2 * len(as_comes) and not (frozen["cls"] == "gc").any())
    return {"set": str(set_dir), "stalling": n >= STALLING_HOST_MIN, "stalls": n, "classes": counts, "cause": cause,
            "freeze_stalls": None if frozen is None else len(frozen),
            "as_comes_qwen3moe_stalls": None if as_comes is None else len(as_comes), "freeze_removes": freeze_ok}


VM_WIDE_GAP_S = 2e-3       # a beside-meter gap this long inside a stall's window makes the stall vm_wide
PAUSE_MIN_EXCESS_S = 2e-3  # the smaller events lined up as well: any iteration (eager or graph) this much over its median


def iteration_excess(iters: pd.DataFrame) -> pd.DataFrame:
    """Every iteration with `excess_s` over the median of its run's iterations of the same kind (graph bucket, or
    eager and prefill-token bin)."""
    it = iters.copy()
    it["kind"] = it["graph_batch"].astype(str) + "_" + (it["prefill_tokens"] // PREFILL_BIN_TOKENS).astype(str)
    it["excess_s"] = it["duration_s"] - it.groupby(["run_id", "kind"])["duration_s"].transform("median")
    return it


def _overlaps(starts, ends, gap_t, gap_len) -> list[bool]:
    return [bool(((gap_t < e) & (gap_t + gap_len > s)).any()) for s, e in zip(starts, ends)]


def vm_wide(set_dir: Path) -> list[dict]:
    """Per part with a beside-meter (<part>.gaps.csv): how many stalls (and iterations 2 ms or more over their
    median) had a beside-meter gap of VM_WIDE_GAP_S or more inside their window (CLOCK_MONOTONIC, the run's
    run_t0_monotonic_s), against chance (the share of the meter's span within a window's reach of a gap)."""
    out = []
    for gaps_path in sorted(Path(set_dir).glob("*.gaps.csv*")):
        name = gaps_path.name.split(".gaps.csv")[0]
        part = Path(set_dir) / name
        if not csv_exists(part / "serve_iterations.csv"):
            continue
        try:
            gaps = read_csv(gaps_path)
        except pd.errors.EmptyDataError:   # the meter writes (and flushes) its header with its first gap: none came
            gaps = pd.DataFrame({k: pd.Series(dtype=float) for k in ("cpu", "t_monotonic_s", "gap_s", "thread_cpu_s")})
        big = gaps[gaps["gap_s"] >= VM_WIDE_GAP_S]
        load = read_csv(part / "serve_load.csv")
        t0 = dict(zip(load["run_id"], load["run_t0_monotonic_s"]))
        it = iteration_excess(read_csv(part / "serve_iterations.csv"))
        it["t_start"] = it["run_id"].map(t0) + it["start_s"]
        it["t_end"] = it["t_start"] + it["duration_s"]
        found = part_stalls(part)
        stalls = set(zip(found["run_id"], found["iteration"]))
        it["stall"] = [(r, i) in stalls for r, i in zip(it["run_id"], it["iteration"])]
        it["aligned"] = _overlaps(it["t_start"], it["t_end"], big["t_monotonic_s"].to_numpy(), big["gap_s"].to_numpy())
        span = gaps["t_monotonic_s"].max() - gaps["t_monotonic_s"].min() if len(gaps) > 1 else float("nan")
        pauses = it[it["excess_s"] >= PAUSE_MIN_EXCESS_S]
        chance = lambda d: min(1.0, (big["gap_s"].sum() + len(big) * d) / span) if span and span > 0 else float("nan")  # noqa: E731
        st = it[it["stall"]]
        out.append({"part": name, "meter_gaps": len(gaps), "meter_gaps_2ms": len(big),
                    "meter_gap_s": float(gaps["gap_s"].sum()), "meter_thread_cpu_in_gaps_s": float(gaps["thread_cpu_s"].sum()),
                    "stalls": len(st), "stalls_vm_wide": int(st["aligned"].sum()),
                    "stall_chance": chance(float(st["duration_s"].mean())) if len(st) else float("nan"),
                    "pauses": len(pauses), "pauses_aligned": int(pauses["aligned"].sum()),
                    "pause_chance": chance(float(pauses["duration_s"].mean())) if len(pauses) else float("nan")})
    return out


# (docs/notes/s24stall_rule.md (c)) the fitting material of the clustered pause model: session 23's two stalling
# H100 sets, named there as the next rule's fitting material
CLUSTER_FIT_SETS = ("h100/s23srvh_host2", "h100/s23srvh_host3")
CLUSTER_GAP_S = 0.1        # paused iterations less than this much busy time apart belong to one cluster


def _probe_pause_sizes(folder: Path) -> list[float]:
    sizes = []
    for load in sorted(folder.glob("*/serve_load.csv")):
        for text in read_csv(load, dtype=str).fillna("")["pause_sizes_s"]:
            sizes += [float(x) for x in text.split(";") if x.strip()]
    return sizes


def run_clusters(run: pd.DataFrame, q: float) -> tuple[int, int, list[float]]:
    """One run's pause clusters (iteration_excess rows of one run_id; q: the mean probe pause size): (pauses, pause
    steps inside clusters (pauses less one a cluster), each cluster's busy span first event to last, seconds)."""
    run = run.sort_values("start_s")
    busy_s = (run["duration_s"].cumsum() - run["duration_s"]).to_numpy()   # busy seconds before each iteration
    is_event = (run["excess_s"] >= PAUSE_MIN_EXCESS_S).to_numpy()
    event_pauses = [max(1, round(x / q)) for x in run["excess_s"].to_numpy()[is_event]]
    b = busy_s[is_event]
    pauses, inner, spans_s, start = 0, 0, [], None
    for i, (bi, ki) in enumerate(zip(b, event_pauses)):
        if i == 0 or bi - b[i - 1] >= CLUSTER_GAP_S:
            if start is not None:
                spans_s.append(b[i - 1] - start)
            start = bi
            inner -= 1   # a cluster's first pause has no predecessor in it
        pauses += ki
        inner += ki
    if start is not None:
        spans_s.append(b[-1] - start)
    return pauses, inner, spans_s


def cluster_shape(folders) -> dict:
    """The clustered pause model's two constants from stalling hosts' records (the rule's (c)): events are iterations
    of any kind PAUSE_MIN_EXCESS_S or more over their run's median of the same kind, each holding
    max(1, round(excess / q)) pauses (q: the hosts' mean probe pause size); events under CLUSTER_GAP_S of busy time
    apart (the run's iteration durations summed) form a cluster; m = pauses / clusters, s_in = the clusters' busy
    spans (first event to last) over their pauses less one."""
    sizes = [x for f in folders for x in _probe_pause_sizes(Path(f))]
    q = sum(sizes) / len(sizes)
    pauses = clusters = 0
    span_s = inner = 0.0
    for folder in folders:
        for path in sorted(Path(folder).glob("*/serve_iterations.csv*")):
            it = iteration_excess(read_csv(path))
            for _, run in it.groupby("run_id"):
                run_pauses, run_inner, spans_s = run_clusters(run, q)
                pauses += run_pauses
                inner += run_inner
                clusters += len(spans_s)
                for s in spans_s:   # one at a time, in order: the sum as it was first computed
                    span_s += s
    return {"mean_pause_s": q, "pauses": pauses, "clusters": clusters,
            "cluster_mean_pauses": pauses / clusters, "cluster_spacing_s": span_s / inner if inner > 0 else 0.0}


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.serve_stall_causes", __doc__)
    ap.add_argument("sets", nargs="+", type=entry.folder, metavar="SET_DIR",
                    help="e.g. calibration/measurements/h100/s24stall_host2")
    for d in ap.parse_args(argv).sets:
        with entry.user_inputs("SET_DIR", d, "a set whose parts hold serve_stalls.csv, as real/campaigns/s24stall.sh writes them"):
            parts = [p for p in sorted(d.iterdir()) if csv_exists(p / "serve_stalls.csv")]
            if not parts:   # nothing to read is not a verdict (until s25walk: "== DIR" and exit 0)
                raise ValueError("no part with serve_stalls.csv in it")
            print(f"== {d}")
            for p in parts:
                s = part_summary(p)
                print("  " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in s.items()))
            print("  verdict:", host_verdict(d))
            for row in vm_wide(d):
                print("  beside-meter:", ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

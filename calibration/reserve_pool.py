"""Campaign s32mem's judge (rule docs/notes/s32mem_rule.md): the caching allocator's reserve beyond the live peak,
pooled over every uncapped part of real.fsdp_memory's records per allocator setting, and candidate
calibration.published_runs.ADOPT_RESERVED_PEAK_POOLED (the 18 published reserved peaks compared with
min(count x (1 + f_setting), capacity)); the feasibility finding from the capped parts; diagnostics (the phase that
sets each fresh part's reserved peak, the streams its segments belong to).
- P1: the fresh op_e and full_e parts' fractions within P1_BAND of the committed expandable median, op_n's of the
  committed default median (the fraction is the allocator's, not the workload's);
- M1-M3 on the published comparison with the candidate; G1 (no throughput or count field moves) checked live.

Usage: python -m calibration.reserve_pool [--json FILE]   (e.g. calibration/s32mem_judgement.json)
"""

from __future__ import annotations

from pathlib import Path

from calibration import allocator_reserve as ar
from calibration import entry, published_runs
from calibration import records as rec
from calibration.records_io import glob_csv, read_csv

JUDGEMENT = Path(__file__).resolve().parent / "s32mem_judgement.json"
P1_BAND = 0.05                 # |f_part - committed median| for op_e, op_n, full_e
P1_PARTS = {"op_e": "expandable", "op_n": "expandable_off", "full_e": "expandable"}
M1_WITHIN = 14                 # of 18 published figures within MEMORY_ROW_TARGET
M2_MEDIAN = 0.075              # median |memory error|
M3_ABOVE = published_runs.MEMORY_ROW_TARGET   # no estimate more than this above its published figure
CAPPED = ("cap102_e", "cap102_n", "cap106_n")
PHASES = ("fwd", "bwd", "opt")
# fields of a published row the candidate must leave alone (G1): the throughput figures, the count and the fit
G1_FIELDS = ("predicted", "rel_error", "status", "reason", "step_time_s", "mfu_frac", "bubble_frac",
             "exposed_comm_frac", "memory_per_gpu_bytes", "memory_breakdown_bytes", "memory_capacity_bytes",
             "memory_fits", "predicted_ignoring_memory", "rel_error_ignoring_memory")


def fresh_folder() -> Path | None:
    """The s32mem record folder under the records root (the card that ran decides it), or None."""
    return next((rec.records_root() / f for f, _ in ar.POOL if f.endswith(ar.FRESH)
                 and glob_csv(rec.records_root() / f, "*/fsdp_memory_r*.csv")), None)


def premise(parts: dict, committed: dict) -> dict:
    """P1 on the fresh parts it names; none_e reported."""
    out = {}
    for name, want in {**P1_PARTS, "none_e": "expandable"}.items():
        setting = "default" if want == "expandable_off" else "expandable"
        p = next((p for k, p in parts.items() if p["record"].endswith(ar.FRESH) and p["config"] == f"s32_{name}"), None)
        f = None if p is None else p["reserve_frac"]
        ref = committed[setting]["f"]
        out[name] = {"setting": setting, "f": f, "committed_median": ref,
                     "within": None if f is None else bool(abs(f - ref) <= P1_BAND),
                     "judged": name in P1_PARTS}
    return {"parts": out, "holds": all(v["within"] for v in out.values() if v["judged"])}


def feasibility(df) -> dict:
    """Each capped part: its cap as a multiple of its base part's live peak, its steps' statuses, retries, OOMs and
    steady reserve; the finding the rule states."""
    out = {}
    fresh = df[df["record"].str.endswith(ar.FRESH)]
    for name in CAPPED:
        g = fresh[fresh["config"] == f"s32_{name}"]
        if g.empty:
            out[name] = {"ran": False}
            continue
        ok = g[g["status"] == "ok"]
        out[name] = {"ran": True, "ratio": float(name[3:6]) / 100.0, "memory_fraction": float(g["memory_fraction"].iloc[0]),
                     "steps": int(len(g)), "steps_ok": int(len(ok)), "oom": bool((g["status"] == "oom").any()),
                     "num_alloc_retries": int(g["num_alloc_retries"].max()),
                     "peak_allocated_bytes": float(ok["peak_allocated_bytes"].max()) if len(ok) else None,
                     "peak_reserved_bytes": float(ok["peak_reserved_bytes"].max()) if len(ok) else None,
                     "step_time_s_median": float(ok[ok["step"] >= ar.STEADY_FIRST_STEP]["step_time_s"].median())
                     if len(ok) > 1 else None}
    runs = {k: ("not run" if not v["ran"] else "OOM" if v["oom"] else "ran" if v["steps_ok"] == v["steps"] else
                "stopped") for k, v in out.items()}
    if runs["cap102_e"] == runs["cap102_n"] == "ran":
        finding = "no reserve needed: both settings run at 1.02 x the live peak; feasibility stays on the count"
    else:
        finding = ("not shown: " + ", ".join(f"{k} {v}" for k, v in runs.items())
                   + "; feasibility unchanged here (a later rule)")
    return {"parts": out, "finding": finding}


def phase_of_peak(df) -> dict:
    """For each fresh part's steady steps: the phase whose reserved peak is the step's, and each phase's median live
    and reserved peaks (bytes)."""
    out = {}
    fresh = df[df["record"].str.endswith(ar.FRESH) & (df["status"] == "ok") & (df["step"] >= ar.STEADY_FIRST_STEP)]
    for config, g in fresh.groupby("config"):
        if f"{PHASES[0]}_peak_reserved_bytes" not in g:
            continue
        res = {ph: float(g[f"{ph}_peak_reserved_bytes"].median()) for ph in PHASES}
        out[str(config)] = {"reserved_peak_phase": max(res, key=res.get), "reserved_bytes": res,
                            "allocated_bytes": {ph: float(g[f"{ph}_peak_allocated_bytes"].median()) for ph in PHASES}}
    return out


def segments_by_stream(folder: Path | None) -> dict:
    """Each fresh part's segments at its last step's end: per stream and pool, the reserved, allocated bytes and the
    largest free block."""
    out = {}
    if folder is None:
        return out
    for path in glob_csv(folder, "*/fsdp_segments_r0.csv"):
        df = read_csv(path)
        if df.empty:
            continue
        per = {}
        for (stream, pool), g in df.groupby(["stream", "pool"]):
            per[f"{stream}/{pool}"] = {"segments": int(len(g)), "total_bytes": float(g["total_size_bytes"].sum()),
                                       "allocated_bytes": float(g["allocated_size_bytes"].sum()),
                                       "largest_free_block_bytes": float(g["largest_free_block_bytes"].max())}
        out[str(df["config"].iloc[0])] = per
    return out


def memory_summary(result: dict) -> dict:
    m = result["summary"]["memory"]
    rows = [r for r in result["rows"] if r.get("memory_rel_error") is not None]
    return {"median_abs_rel_error": m["median_abs_rel_error"], "median_rel_error": m["median_rel_error"],
            "num_within_row_target": m["num_within_row_target"], "num_compared": m["num_compared"],
            "num_above_published": len(m["above_published"]),
            "max_rel_error": max(r["memory_rel_error"] for r in rows),
            "min_rel_error": min(r["memory_rel_error"] for r in rows),
            "rows": {r["id"]: {"count_bytes": r["memory_per_gpu_bytes"], "compared_bytes": r["memory_compared_bytes"],
                               "published_bytes": r["published_memory_bytes"], "rel_error": r["memory_rel_error"]}
                     for r in rows}}


def compare_both_ways() -> tuple[dict, dict]:
    """published_runs.compare with the candidate off and on (s27mlm2's B off both times)."""
    saved = (published_runs.ADOPT_RESERVED_PEAK_POOLED, published_runs.ADOPT_ALLOCATOR_RESERVED_PEAK)
    try:
        published_runs.ADOPT_ALLOCATOR_RESERVED_PEAK = False
        published_runs.ADOPT_RESERVED_PEAK_POOLED = False
        off = published_runs.compare()
        published_runs.ADOPT_RESERVED_PEAK_POOLED = True
        on = published_runs.compare()
    finally:
        published_runs.ADOPT_RESERVED_PEAK_POOLED, published_runs.ADOPT_ALLOCATOR_RESERVED_PEAK = saved
    return off, on


def guard_g1(off: dict, on: dict) -> dict:
    """The rows' fields the candidate must not move, and the summary's throughput figures."""
    moved = [f"{a['id']}.{k}" for a, b in zip(off["rows"], on["rows"]) for k in G1_FIELDS if a.get(k) != b.get(k)]
    moved += [f"summary.{k}" for k in off["summary"] if k != "memory" and off["summary"][k] != on["summary"][k]]
    return {"moved": moved, "holds": not moved}


def judge() -> dict:
    df = ar.pool_rows()
    if df is None:
        raise FileNotFoundError(f"no record of real.fsdp_memory under {rec.records_root()}")
    parts = ar.pooled_parts(df)
    committed = ar.pooled_fractions({k: p for k, p in parts.items() if not p["record"].endswith(ar.FRESH)})
    pooled = ar.pooled_fractions(parts)
    p1 = premise(parts, committed)
    off, on = compare_both_ways()
    without, with_c = memory_summary(off), memory_summary(on)
    m1 = with_c["num_within_row_target"] >= M1_WITHIN
    m2 = with_c["median_abs_rel_error"] <= M2_MEDIAN
    m3 = with_c["max_rel_error"] <= M3_ABOVE
    g1 = guard_g1(off, on)
    return {"rule": "docs/notes/s32mem_rule.md", "parts": parts,
            "committed_fractions": {k: v["f"] for k, v in committed.items()},
            "pooled_fractions": {k: v["f"] for k, v in pooled.items()},
            "pooled_parts": {k: sorted(v["parts"]) for k, v in pooled.items()},
            "P1": p1, "published_without": without, "published_with": with_c, "G1": g1,
            "criteria": {"P1": bool(p1["holds"]), "M1": bool(m1), "M2": bool(m2), "M3": bool(m3), "G1": bool(g1["holds"])},
            "adopt": bool(p1["holds"] and m1 and m2 and m3 and g1["holds"]),
            "feasibility": feasibility(df), "phase_of_reserved_peak": phase_of_peak(df),
            "segments": segments_by_stream(fresh_folder())}


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.reserve_pool", __doc__)
    ap.add_argument("--json", type=Path, default=None, help="write the judgement here")
    args = ap.parse_args(argv)
    return entry.print_json(args.json, judge(), sort_keys=True)


if __name__ == "__main__":
    raise SystemExit(main())

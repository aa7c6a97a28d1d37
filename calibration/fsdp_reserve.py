"""The caching allocator's reserved peak beside the live-tensor peak in torchtitan's FSDP2 step, from
real.fsdp_memory's records (campaign s27mlm2, rule docs/notes/s27mlm2_rule.md), and the rule's checks:
- A1/A2 (candidate twin.costs.memory.ADOPT_FSDP_NO_BF16_SHARD): a rank's bytes at a steady step's start
  (FP32 parameter shards and Adam's two moments) against the twin's 12 B and 14 B a shard parameter;
- the fraction f = (peak reserved - peak allocated) / peak allocated per allocator setting (the median
  over steady steps and ranks of the 32-block part, the 16-block part where that one did not finish),
  and B1 (the 16- and 32-block fractions agree) for candidate
  calibration.published_runs.ADOPT_ALLOCATOR_RESERVED_PEAK;
- diagnostic D: the twin's count of each measured configuration against its measured allocated peak.
B2/B3 (the held-out published figures) are judged by `judge`, which runs published_runs both ways.

Usage: python -m calibration.fsdp_reserve [--json FILE]   (e.g. calibration/s27mlm2_judgement.json)
"""

from __future__ import annotations

from pathlib import Path


from calibration import allocator_reserve, entry, published_runs
from calibration import records as rec
from calibration.allocator_reserve import GIB, part_fractions, setting_fractions, steady_rows
from twin.core.scenario import from_dict
from twin.costs import memory
from twin.training.step import simulate_step

JUDGEMENT = Path(__file__).resolve().parent / "s27mlm2_judgement.json"
A1_BAND = (0.97, 1.03)    # measured start bytes / (12 B x shard parameters)
A2_BELOW = 0.95           # measured start bytes < 0.95 x (14 B x shard parameters)
B3_ABOVE = 0.05


def twin_count(layers: int, gpu: str = "h200") -> dict:
    """The twin's count of the measured configuration: the torchtitan 8B FSDP row's plan (Table 1) at
    FSDP 2 on two GPUs, local batch 2, sequence 8,192, `layers` blocks."""
    runs, _ = published_runs.load_runs()
    run = next(r for r in runs if r.id == "tt-8b-fsdp8")
    raw = {"name": f"s27mlm2-{layers}", "model": {"name": run.model, "num_layers": layers},
           "cluster": {"gpu": gpu, "num_gpus": 2}, "plan": dict(run.plan),
           "workload": {"seq_len": run.seq_len, "global_batch_seqs": 4}}
    step = simulate_step(from_dict(raw, "s27mlm2"), record_events=False)
    b = {k: float(v) for k, v in step.memory_breakdown_bytes.items()}
    return {"breakdown_bytes": b, "total_bytes": float(sum(b.values()))}


def check_a(parts: dict, gpu: str = "h200") -> dict:
    """A1/A2 on every part that finished steady steps."""
    rows = {}
    for config, p in parts.items():
        count = twin_count(p["layers"], gpu)["breakdown_bytes"]
        shard_params = count["optimizer"] / 12.0
        measured = p["start_allocated_bytes"]
        ratio12 = measured / (12.0 * shard_params)
        rows[config] = {"shard_params": shard_params, "start_allocated_bytes": measured, "ratio_to_12B": ratio12,
                        "ratio_to_14B": measured / ((12.0 + memory.WEIGHT_BYTES) * shard_params),
                        "A1": bool(A1_BAND[0] <= ratio12 <= A1_BAND[1]),
                        "A2": bool(measured < A2_BELOW * (12.0 + memory.WEIGHT_BYTES) * shard_params)}
    return {"parts": rows, "adopt": bool(rows) and all(r["A1"] and r["A2"] for r in rows.values())}


def diagnostic_d(parts: dict, gpu: str = "h200") -> dict:
    out = {}
    for config, p in parts.items():
        c = twin_count(p["layers"], gpu)
        out[config] = {"counted_bytes": c["total_bytes"], "peak_allocated_bytes": p["peak_allocated_bytes"],
                       "count_rel_error": c["total_bytes"] / p["peak_allocated_bytes"] - 1.0,
                       "breakdown_gib": {k: round(v / GIB, 3) for k, v in c["breakdown_bytes"].items()}}
    return out


def _memory_summary(result: dict) -> dict:
    m = result["summary"]["memory"]
    rows = [r for r in result["rows"] if r.get("memory_rel_error") is not None]
    return {"median_abs_rel_error": m["median_abs_rel_error"], "median_rel_error": m["median_rel_error"],
            "num_within_row_target": m["num_within_row_target"], "num_compared": m["num_compared"],
            "max_rel_error": max(r["memory_rel_error"] for r in rows),
            "rows": {r["id"]: r["memory_rel_error"] for r in rows}}


def judge(path: Path | str | None = None) -> dict:
    """The rule's checks from the committed record (or `path`) and the published comparison each way."""
    df = steady_rows(path)
    if df is None:
        raise FileNotFoundError(f"no s27mlm2 record under {rec.records_root()} (one of "
                                f"{', '.join(r.as_posix() for r in allocator_reserve.RECORDS)})")
    gpu = "h200" if "H200" in str(df["gpu_name"].iloc[0]) else "h100"
    parts = part_fractions(df)
    a = check_a(parts, gpu)
    settings = setting_fractions(parts)
    saved = (memory.ADOPT_FSDP_NO_BF16_SHARD, published_runs.ADOPT_ALLOCATOR_RESERVED_PEAK)
    allocator_reserve.RECORD_OVERRIDE = None if path is None else Path(path)
    try:
        memory.ADOPT_FSDP_NO_BF16_SHARD = a["adopt"]
        d = diagnostic_d(parts, gpu)
        published_runs.ADOPT_ALLOCATOR_RESERVED_PEAK = False
        without = _memory_summary(published_runs.compare(path=published_runs.RUNS_FILE))
        published_runs.ADOPT_ALLOCATOR_RESERVED_PEAK = True
        with_b = _memory_summary(published_runs.compare(path=published_runs.RUNS_FILE))
    finally:
        memory.ADOPT_FSDP_NO_BF16_SHARD, published_runs.ADOPT_ALLOCATOR_RESERVED_PEAK = saved
        allocator_reserve.RECORD_OVERRIDE = None
    b2 = (with_b["median_abs_rel_error"] < without["median_abs_rel_error"]
          and with_b["num_within_row_target"] >= without["num_within_row_target"])
    b3 = with_b["max_rel_error"] <= B3_ABOVE
    return {"rule": "docs/notes/s27mlm2_rule.md", "gpu": gpu, "parts": parts, "A": a, "settings": settings,
            "D": d, "published_without_B": without, "published_with_B": with_b,
            "B": {"B1_any": any(s["B1"] for s in settings.values()), "B2": bool(b2), "B3": bool(b3),
                  "adopt": bool(any(s["B1"] for s in settings.values()) and b2 and b3)}}


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.fsdp_reserve", __doc__)
    ap.add_argument("--json", type=Path, default=None, help="write the judgement here")
    args = ap.parse_args(argv)
    return entry.print_json(args.json, judge(), sort_keys=True)


if __name__ == "__main__":
    raise SystemExit(main())

"""The device memory a training process holds outside torch's caching allocator, from
real.runtime_memory's records (rule docs/notes/s26mem2_rule.md): the figure the rule takes
(OUTSIDE_ALLOCATOR_BYTES: the largest `outside_bytes` at stage `steady` over the ranks) and its C1
checks of a valid record.

Usage: python -m calibration.runtime_memory [CSV] [--json FILE]   (default: the committed record;
--json writes the judgement, e.g. calibration/s26mem2_judgement.json)
"""

from __future__ import annotations

import math
from pathlib import Path

from calibration import entry
from calibration import records as rec
from calibration.records_io import csv_exists, read_csv

# real.runtime_memory's stages, in the order each rank records them
STAGES = ("nvml_before_cuda", "context", "block_fwd_bwd", "nccl_world", "nccl_groups", "nccl_p2p", "steady")
# the committed record: the campaign's card decides the folder (h200x2 or h100x2)
RECORDS = tuple(Path(gpu) / "runtime_memory.csv" for gpu in ("h200x2", "h100x2"))   # under the records root
GIB = 2 ** 30
EMPTY_GPU_BYTES = GIB            # C1: NVML's used memory before the process's context
CUDART_NVML_AGREE_BYTES = 256 * 2 ** 20   # C1: the two readings of used memory at `steady`


def committed_record() -> Path | None:
    """The first of RECORDS under the records root in use (calibration.records.records_root)."""
    return next((p for p in (rec.records_root() / r for r in RECORDS) if csv_exists(p)), None)


def judge(path: Path | str, rule: str = "s26mem3") -> dict:
    """The rule's figure and its C1 checks from one record: `rule` 's26mem2' (docs/notes/s26mem2_rule.md:
    NVML's used memory below 1 GiB before CUDA, and within 256 MiB of cudart's at `steady`) or 's26mem3'
    (its re-decision, docs/notes/s26mem3_rule.md: NVML's used memory grown since before CUDA within
    256 MiB of cudart's at `steady`, i.e. no other process on the GPU: NVML counts the driver's reserve,
    cudart does not)."""
    df = read_csv(path)
    ranks = sorted(df["rank"].unique())
    stages_ok = all(tuple(df[df["rank"] == r]["stage"]) == STAGES for r in ranks) and len(ranks) >= 2
    at = {(int(r.rank), r.stage): r for r in df.itertuples()}
    steady = {r: float(at[r, "steady"].outside_bytes) for r in ranks}
    checks = {
        "all_stages_on_every_rank": bool(stages_ok),
        "steady_at_least_context": all(steady[r] >= float(at[r, "context"].outside_bytes) for r in ranks),
    }
    if rule == "s26mem2":
        checks["empty_gpu_before_cuda"] = all(float(at[r, "nvml_before_cuda"].nvml_used_bytes) < EMPTY_GPU_BYTES
                                              for r in ranks)
        checks["cudart_and_nvml_agree"] = all(
            not math.isnan(float(at[r, "steady"].nvml_used_bytes))
            and abs(float(at[r, "steady"].cudart_used_bytes) - float(at[r, "steady"].nvml_used_bytes)) <= CUDART_NVML_AGREE_BYTES
            for r in ranks)
    elif rule == "s26mem3":
        grown = {r: float(at[r, "steady"].nvml_used_bytes) - float(at[r, "nvml_before_cuda"].nvml_used_bytes) for r in ranks}
        checks["no_other_process_on_the_gpu"] = all(
            not math.isnan(grown[r]) and abs(grown[r] - float(at[r, "steady"].cudart_used_bytes)) <= CUDART_NVML_AGREE_BYTES
            for r in ranks)
    else:
        raise ValueError(f"rule: got {rule!r}; allowed: 's26mem2', 's26mem3'")
    return {"rule": rule, "record": Path(path).name, "gpu_name": str(df["gpu_name"].iloc[0]),
            "outside_allocator_bytes": max(steady.values()),
            "outside_by_stage_gib": {s: round(max(float(at[r, s].outside_bytes) for r in ranks) / GIB, 3)
                                     for s in STAGES[1:]},
            "c1": checks, "c1_holds": all(checks.values())}


@entry.script
def main(argv=None) -> int:
    ap = entry.parser("calibration.runtime_memory", __doc__)
    ap.add_argument("csv", nargs="?", type=entry.csv_file, help="a runtime_memory.csv (default: the committed one)")
    ap.add_argument("--json", type=Path, help="write the judgement to this file")
    ap.add_argument("--rule", choices=("s26mem2", "s26mem3"), default="s26mem3", help="the rule whose checks apply")
    args = ap.parse_args(argv)
    path = args.csv or committed_record()
    if path is None:
        print("no committed runtime_memory record")
        return 0
    with entry.user_inputs("CSV", args.csv, "a real.runtime_memory record (runtime_memory.csv)"):
        out = judge(path, args.rule)
    return entry.print_json(args.json, out)


if __name__ == "__main__":
    raise SystemExit(main())

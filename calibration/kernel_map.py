"""Which GPU kernels each flat-size weight launches at each row count M, per GPU kind, and what a kernel's
first launch costs a process (issue 15, s17srv; docs/notes/s17srv_rule.md).

The map: the s16srv2 campaign's kernel names (calibration/measurements/<gpu>/s16srv2/kmap/kernelmap.csv:
real/serve/kernelmap.py, every 2-D weight of v3-slice-2l as F.linear at M = 1..2048 under torch.profiler,
each call's kernels, ';'-separated). Only real/serve's flat-size weights are kept (FLAT_WEIGHTS: they run at
M = a rank's flat batch size); each weight's kernel set is written as segments along M (a segment starts
where the set changes), kernels by an id shared by every weight of the map (kernels are shared across
weights). twin.serving.first_launch reads it (twin/data/kernel_map.toml).

The cost: the s16srv campaign's sweeps (calibration/measurements/h100/s16srv/{asc,desc,shuf}/shapeprobe.csv,
fit-split rows: every 2-D weight at every M, first and repeat call's host time, three orders, each a fresh
process), replayed in their own call order against the H100 map: a call launching exactly one kernel its
process had not launched, its excess (first - repeat) over its weight's median excess on calls launching
none (the per-size cuBLASLt look-ups), pooled over the three orders, median: FIRST_LAUNCH_SOURCE.

`python -m calibration.kernel_map` rewrites twin/data/kernel_map.toml and prints the measured cost.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration.kernel_regions import FLAT_WEIGHTS
from calibration.records_io import csv_exists, read_csv
from twin.core import atomic

# gpu kind (twin hardware name) -> its kernel map's records (the lead's repeat on a second H100 host,
# h100/s16srv2_repeat, is identical call for call: the map is the library's, not the host's)
MAPS = {"h100": Path("h100") / "s16srv2" / "kmap" / "kernelmap.csv",
        "h200": Path("h200") / "s16srv2_0919" / "kmap" / "kernelmap.csv"}
SWEEPS = tuple(Path("h100") / "s16srv" / order / "shapeprobe.csv" for order in ("asc", "desc", "shuf"))
SWEEP_MAP_GPU = "h100"   # the sweeps ran on an H100: their calls' kernels are the H100 map's
OUT = Path(__file__).resolve().parents[1] / "twin" / "data" / "kernel_map.toml"


def is_flat(weight: str) -> bool:
    return any(f in weight for f in FLAT_WEIGHTS)


def call_kernels(gpu: str, root: Path | None = None) -> dict[tuple[str, int], tuple[str, ...]]:
    """(weight, M) -> the kernel names its call launches, every weight of the map's records."""
    root = rec.records_root() if root is None else root
    d = read_csv(Path(root) / MAPS[gpu])
    return {(w, int(m)): tuple(str(k).split(";")) for w, m, k in zip(d.weight, d.m, d.kernels)}


def available_maps(root: Path | None = None) -> list[str]:
    """The gpu kinds whose kernel map is committed."""
    root = rec.records_root() if root is None else root
    return [g for g, p in MAPS.items() if csv_exists(Path(root) / p)]


def segments(calls: dict[tuple[str, int], tuple[str, ...]]) -> tuple[dict[str, list[tuple[int, list[int]]]], int]:
    """Per flat weight, [(first M, sorted kernel ids)] where its kernel set changes along M; and the number
    of distinct kernels (ids index the sorted names of the flat weights' kernels)."""
    flat = {key: ks for key, ks in calls.items() if is_flat(key[0])}
    ids = {name: i for i, name in enumerate(sorted({k for ks in flat.values() for k in ks}))}
    out: dict[str, list[tuple[int, list[int]]]] = {}
    for (w, m) in sorted(flat):
        kernel_ids = sorted({ids[k] for k in flat[(w, m)]})
        seg = out.setdefault(w, [])
        if not seg or seg[-1][1] != kernel_ids:
            seg.append((m, kernel_ids))
    return out, len(ids)


def first_launch_excess(root: Path | None = None) -> pd.DataFrame:
    """Every sweep call with the kernels it launched first in its process (`new_kernels`) and its excess
    over its weight's median excess where it launched none (`excess_s`), the three orders stacked."""
    root = rec.records_root() if root is None else root
    calls = call_kernels(SWEEP_MAP_GPU, root)
    parts = []
    for path in SWEEPS:
        d = read_csv(Path(root) / path)
        d = d[d.split == "fit"].sort_values("order")
        launched: set[str] = set()
        fresh = []
        for w, m in zip(d.weight, d.m):
            ks = set(calls[(w, int(m))])
            fresh.append(len(ks - launched))
            launched |= ks
        d = d.assign(new_kernels=fresh, raw_excess_s=d.first_s - d.repeat_s)
        lookups = d[d.new_kernels == 0].groupby("weight").raw_excess_s.median()
        parts.append(d.assign(excess_s=d.raw_excess_s - d.weight.map(lookups), lookup_s=d.weight.map(lookups)))
    return pd.concat(parts, ignore_index=True)


def first_launch_s(root: Path | None = None) -> float:
    """A kernel's first launch (s): the median excess of the sweeps' calls launching exactly one new kernel (under
    `root`, default the records root in use, calibration.records.records_root)."""
    return _first_launch_s(Path(rec.records_root() if root is None else root).resolve())


@functools.cache
def _first_launch_s(root: Path) -> float:   # keyed on the resolved root: one entry per records root
    d = first_launch_excess(root)
    return float(np.median(d.excess_s[d.new_kernels == 1]))


def lookup_s(root: Path | None = None) -> float:
    """The cuBLASLt look-ups of an exact new size (diagnostic, not used by the fit): the flat weights' median
    excess where no kernel is new, summed, median over the three orders."""
    root = rec.records_root() if root is None else root
    d = first_launch_excess(root)
    d = d[d.weight.map(is_flat) & (d.new_kernels == 0)]
    return float(np.median([g.groupby("weight").raw_excess_s.median().sum() for _, g in d.groupby("size_order")]))


# (s17srv campaign, diagnostic: no fit reads it) passes of every 2-D weight launched back to back per M
# (real/serve/shapeprobe.py --together), per GPU and order
PASSES = {(gpu, part): Path(gpu) / "s17srv" / part / "shapeprobe.csv" for gpu in ("h100", "h200")
          for part in ("tshuf", "tasc")}


def pass_excess(gpu: str, part: str = "tshuf", root: Path | None = None) -> pd.DataFrame:
    """The campaign's passes in their order, each with the kernels it launched first in its process (every
    weight's at M, the GPU's map: `new_kernels`) and its excess (first - repeat) over the median excess of the
    passes launching none (`excess_s`: the kernels' part, the look-ups taken out)."""
    root = rec.records_root() if root is None else root
    calls = call_kernels(gpu, root)
    weights = sorted({w for w, _ in calls})
    d = read_csv(Path(root) / PASSES[(gpu, part)]).sort_values("order")
    launched: set[str] = set()
    fresh = []
    for m in d.m:
        ks = set().union(*(calls[(w, int(m))] for w in weights))
        fresh.append(len(ks - launched))
        launched |= ks
    d = d.assign(new_kernels=fresh, raw_excess_s=d.first_s - d.repeat_s)
    return d.assign(excess_s=d.raw_excess_s - float(d.raw_excess_s[d.new_kernels == 0].median()))


def write_toml(maps: dict[str, tuple[dict, int]], path: Path = OUT) -> None:
    lines = ["# The GPU kernels each real/serve flat-size weight launches at each row count M (twin.serving.first_launch):",
             "# per gpu kind and weight, segments [first M, [kernel ids]] where the kernel set changes along M (ids",
             "# shared by the weights of one gpu's map). From the s16srv2 campaign's kernel names by",
             "# calibration/kernel_map.py. Regenerate: python -m calibration.kernel_map", ""]
    for gpu, (segs, n) in maps.items():
        lines += [f"[{gpu}]", f'source = "calibration/measurements/{MAPS[gpu].as_posix()}"', f"num_kernels = {n}"]
        for w, seg in sorted(segs.items()):
            body = ", ".join(f"[{m}, [{', '.join(map(str, ks))}]]" for m, ks in seg)
            lines.append(f'"{w}" = [{body}]')
        lines.append("")
    atomic.write_text(path, "\n".join(lines))


@entry.script
def main(argv: list[str] | None = None) -> int:
    entry.parser("calibration.kernel_map", __doc__).parse_args(argv)   # --help before the rewrite below
    root = rec.records_root()   # --records DIR (calibration.entry) or calibration/measurements
    maps = {gpu: segments(call_kernels(gpu, root)) for gpu in available_maps(root)}
    if not maps:   # s28prod: an empty map was written over the committed one
        print(f"error: no kernel map records ({', '.join(map(str, MAPS.values()))}) under {root}; "
              f"{OUT.name} left as it is", file=sys.stderr)
        return 2
    write_toml(maps)
    for gpu, (segs, n) in maps.items():
        print(f"{gpu}: {len(segs)} flat weights, {n} kernels, {sum(map(len, segs.values()))} segments")
    print(f"first launch {first_launch_s(root) * 1e3:.3f} ms per kernel; exact new size's look-ups "
          f"{lookup_s(root) * 1e3:.3f} ms -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

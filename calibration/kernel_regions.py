"""Where along M each 2-D weight's GEMM first launches a kernel the process had not run (issue 15, s16srv):
the region starts the twin's first-launch feature reads (twin/data/kernel_regions.toml,
twin.serving.first_launch), from the s16srv campaign's ascending sweep (calibration/measurements/h100/s16srv/
asc/shapeprobe.csv: every weight of v3-slice-2l as F.linear at M = 1..2048 in one fresh process, first and
repeat call's host time).

A first call whose excess over its repeat exceeds the weight's median excess (the per-size cuBLASLt
look-ups, 134-262 us) by SPIKE_S launched a kernel for the first time (~2.2-2.9 ms each; 334-336 of them for
thresholds 0.5-1.5 ms, in every order). Ascending, such a call starts a region of M whose calls share that
kernel until the next spike; real/serve's flat-size weights (FLAT_WEIGHTS: the attention projections, the
dense FFN, the gate and the shared expert run at M = the rank's flat batch size) are the ones kept.

`python -m calibration.kernel_regions` rewrites twin/data/kernel_regions.toml.
"""

from __future__ import annotations

from pathlib import Path

from calibration import entry
from calibration import records as rec
from calibration.records_io import read_csv
from twin.core import atomic

SWEEP = Path("h100") / "s16srv" / "asc" / "shapeprobe.csv"
OUT = Path(__file__).resolve().parents[1] / "twin" / "data" / "kernel_regions.toml"
SPIKE_S = 1e-3   # over the weight's median first-call excess: a kernel's first launch (0.5-1.5 ms give 334-336)
# the weights real/serve runs at M = a rank's flat batch size (prefill tokens + decode rows); the LM head
# (M = logits rows) and wkv_b (M = a chunk's context) run at other M
FLAT_WEIGHTS = ("attn.wq_a", "attn.wq_b", "attn.wkv_a", "attn.wo", "ffn.w13_2FD", "ffn.w2_DF", "ffn.gate",
                "ffn.shared.w13", "ffn.shared.w2")


def region_starts(root: Path | None = None) -> dict[str, list[int]]:
    """weight -> the M of its ascending sweep's first-launch spikes (sorted), for FLAT_WEIGHTS."""
    root = rec.records_root() if root is None else root
    d = read_csv(Path(root) / SWEEP)
    d = d[d.size_order == "ascending"]
    excess = d.first_s - d.repeat_s
    d = d.assign(spike=excess > excess.groupby(d.weight).transform("median") + SPIKE_S)
    return {w: sorted(int(m) for m in g.loc[g.spike, "m"]) for w, g in d.groupby("weight")
            if any(f in w for f in FLAT_WEIGHTS)}


def write_toml(starts: dict[str, list[int]], path: Path = OUT) -> None:
    lines = ["# Region starts of each flat-size weight's first-launched GEMM kernels along M (twin.serving.first_launch),",
             f"# from calibration/measurements/{SWEEP.as_posix()} (s16srv campaign, one H100) by",
             "# calibration/kernel_regions.py (a first call over the weight's median excess + 1 ms). Regenerate:",
             "# python -m calibration.kernel_regions", "", "[region_starts]"]
    lines += [f'"{w}" = [{", ".join(map(str, s))}]' for w, s in sorted(starts.items())]
    atomic.write_text(path, "\n".join(lines) + "\n")


@entry.script
def main(argv: list[str] | None = None) -> None:
    entry.parser("calibration.kernel_regions", __doc__).parse_args(argv)   # --help before the rewrite below
    starts = region_starts(rec.records_root())   # --records DIR (calibration.entry) or calibration/measurements
    write_toml(starts)
    print(f"{len(starts)} weights, {sum(map(len, starts.values()))} region starts -> {OUT}")


if __name__ == "__main__":
    main()

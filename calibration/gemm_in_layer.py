"""In-layer against alone speeds per kernel class, with the SM clock (s14gl, issue 13), from a
real/campaigns/s14gl.sh folder (gl_layer.csv, gl_ops.csv[.gz]; real/bench/gemm_in_layer.py).
Diagnostics only: nothing fits or validates against these rows.

    python -m calibration.gemm_in_layer FOLDER

Each in-layer aten call (op and input shapes, as the torch profiler keys it) is joined to the same
call alone, as a short eager burst and as gemm.csv's CUDA-graph loop. Per layer, precision and kernel
class, `ratio_*` = the class's in-layer seconds over the same calls' alone seconds (each call
weighted by its calls per layer repetition: a ratio below 1 means the class runs faster inside the
layer), beside the median NVML SM clocks sampled while the layer, the bursts and the loops ran.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from calibration import entry
from calibration.records_io import read_csv

JOIN_KEY = ["config", "precision", "direction", "op", "input_shapes"]
ALONE_KINDS = ("alone_burst", "alone_graph")


def paired_calls(ops: pd.DataFrame) -> pd.DataFrame:
    """One row per in-layer call that was also timed alone: its layer seconds per call, calls per
    layer repetition, clock, and the burst's and the loop's seconds per call and clocks."""
    layer = ops[ops["where"] == "layer"].drop_duplicates(JOIN_KEY)
    keep = ["layer", "model", "op_class", "calls", "time_s", "sampled_sm_clock_mhz"]
    out = layer[JOIN_KEY + keep].rename(columns={"time_s": "layer_s", "sampled_sm_clock_mhz": "layer_mhz"})
    for kind in ALONE_KINDS:
        tag = kind.split("_")[1]
        alone = ops[ops["where"] == kind].drop_duplicates(JOIN_KEY)[JOIN_KEY + ["time_s", "sampled_sm_clock_mhz"]]
        alone = alone.rename(columns={"time_s": f"{tag}_s", "sampled_sm_clock_mhz": f"{tag}_mhz"})
        out = out.merge(alone, on=JOIN_KEY, how="inner")
    return out


def class_ratios(pairs: pd.DataFrame) -> pd.DataFrame:
    """Per (layer, precision, op_class): the calls-weighted in-layer / alone ratio for the burst and
    for the loop, the paired calls' count and in-layer seconds, and the median clocks of each."""
    p = pairs.assign(w_layer=pairs["layer_s"] * pairs["calls"], w_burst=pairs["burst_s"] * pairs["calls"],
                     w_graph=pairs["graph_s"] * pairs["calls"])
    g = p.groupby(["layer", "precision", "op_class"])
    out = pd.DataFrame({
        "calls": g.size(),
        "layer_s": g["w_layer"].sum(),
        "ratio_burst": g["w_layer"].sum() / g["w_burst"].sum(),
        "ratio_graph": g["w_layer"].sum() / g["w_graph"].sum(),
        "layer_mhz": g["layer_mhz"].median(),
        "burst_mhz": g["burst_mhz"].median(),
        "graph_mhz": g["graph_mhz"].median(),
    })
    return out.reset_index()


# s15gl (docs/notes/s15gl_rule.md): the twin's in-layer kernel classes (Profile.in_layer keys) and the
# measured op classes each pools; every other measured class is memory-bound
GEMM_CLASS_OF = {"grouped_gemm": "grouped_gemm", "dense_gemm": "gemm", "fp8_gemm": "gemm"}
# a class with less paired in-layer time than this (seconds, summed over its calls per repetition of
# every configuration) is no evidence: factor 1 (FP8 dense GEMMs: 4 calls, 0.19 ms)
MIN_CLASS_LAYER_S = 1e-3


def family(precision: str) -> str:
    """'fp8' for every FP8 label (fp8-blockwise, ...), else 'bf16'."""
    return "fp8" if str(precision).startswith("fp8") else "bf16"


def identified(pairs: pd.DataFrame) -> pd.DataFrame:
    """The pairs whose input shapes name a tensor: an op over a tensor list (aten::cat, shapes
    '[[], []]') joins every such call of a direction to every other, a mispairing."""
    return pairs[pairs["input_shapes"].map(lambda s: bool(re.search(r"\d", str(s))))]


def in_layer_factors(pairs: pd.DataFrame) -> dict[str, float]:
    """Profile.in_layer from paired calls (paired_calls): per twin class, the calls-weighted in-layer
    seconds over the same calls' seconds alone in the CUDA-graph loop, over both layers (MoE, MLA)
    and all configurations: `gemm/<family>` and `grouped_gemm/<family>` from the GEMM classes,
    `memory` from every other class of the BF16 layers (the FP8 layers' memory time is mostly
    real/'s eager quantization passes, costed by the refitted quant_bytes_per_elem). Identified
    calls only; a class under MIN_CLASS_LAYER_S of in-layer time is left out (factor 1)."""
    p = identified(pairs)
    fam = p["precision"].map(family)
    gemm_cls = p["op_class"].map(GEMM_CLASS_OF)
    key = (gemm_cls + "/" + fam).where(gemm_cls.notna(), ("memory/" + fam))
    p = p.assign(key=key, w_layer=p["layer_s"] * p["calls"], w_graph=p["graph_s"] * p["calls"])
    out = {}
    for k, g in p.groupby("key"):
        if k == "memory/fp8" or g["w_layer"].sum() < MIN_CLASS_LAYER_S:
            continue
        out["memory" if k == "memory/bf16" else k] = float(g["w_layer"].sum() / g["w_graph"].sum())
    return out


def read_folder(folder: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    folder = Path(folder)
    return read_csv(folder / "gl_layer.csv"), read_csv(folder / "gl_ops.csv")


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.gemm_in_layer", __doc__)
    ap.add_argument("folder", type=entry.records_folder, metavar="FOLDER", help="an s14gl folder (gl_layer.csv, gl_ops.csv)")
    args = ap.parse_args(argv)
    with entry.user_inputs("FOLDER", args.folder, "an s14gl folder (gl_layer.csv, gl_ops.csv)"):
        layer, ops = read_folder(args.folder)
        head = f"GPU {layer['gpu_name'].iloc[0]}, torch {layer['torch_version'].iloc[0]}"
        cols = ["config", "precision", "direction", "time_s", "sampled_sm_clock_mhz"]
        table, paired = layer[cols].to_string(index=False), paired_calls(ops)
    print(head)
    print(table)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 200):
        print(class_ratios(paired).to_string(index=False))
    print("in-layer factors (s15gl):", {k: round(v, 3) for k, v in in_layer_factors(paired).items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

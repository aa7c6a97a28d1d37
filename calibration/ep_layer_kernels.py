"""The EP2 MoE layer's kernels against the twin's kernel classes (s14epl, docs/notes/s14epl_rule.md),
from a real/campaigns/s14epl.sh folder (ep.csv: fitting-split EP layer rows; ep_kernels.csv[.gz]:
the profiled kernels per rank; ep_grouped.csv: the forward grouped GEMMs alone). Diagnostics only.

    python -m calibration.ep_layer_kernels FOLDER GPU [FLAG=0|1 ...]

Prints each ep row's measured and twin seconds (calibration.whole_step.predict_ep_row, flags as
committed or as named), each profiled call's kernel seconds per class (ranks 0 / 1) beside the twin's
(ep_moe_ops' component seconds; the backward's without its setup forward), the seconds non-NCCL
kernels ran beside an NCCL kernel, and the grouped GEMMs alone (CUDA graph) beside the same rows'
in-layer kernels, with the NVML clocks sampled while each ran.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import pandas as pd

import calibration.pipeline as pipe
import calibration.whole_step as ws
from calibration import entry
from calibration import records as rec
from calibration.fit import PROFILES_DIR
from calibration.predict import gpu_spec
from calibration.records_io import csv_exists, read_csv
from calibration.validate import load_fitted_profile
from twin.core.specs import get_model

CLASSES = ("grouped_gemm", "gemm", "memory", "nccl")

# s16epa (docs/notes/s16epa_rule.md): the token-side kernels that tell which sorts and row gathers a
# profiled MoE layer call ran (cub launches one histogram kernel per radix argsort; tensor[index] on
# the rows of a 2-D tensor is torch's vectorized_gather_kernel)
TOKEN_SIDE_KERNELS = {
    "argsorts": "DeviceRadixSortHistogramKernel",
    "row_gathers": "vectorized_gather_kernel",
    "index_copy": "index_copy_kernel",
    "index_put": "indexing_backward_kernel",
    "nccl": "ncclDevKernel",
}


# s22a2a: torch's profiler mirrors each NCCL collective's record_param_comms range onto the GPU
# timeline as a user annotation `nccl:<collective>` (device type CUDA, so real/bench/ep_kernels.py's
# kernel_table keeps it as a kernel row) spanning the ncclDevKernel it wraps with the same seconds;
# summed with the kernel, it doubled the nccl class. The records carry no event-kind field, so the
# annotation is told by its name (as calibration.ep_tail drops it from the probe's kernel events).
ANNOTATION_PREFIX = "nccl:"


def device_kernels(kernels: pd.DataFrame) -> pd.DataFrame:
    """The kernel rows of an ep_kernels table, without the profiler's `nccl:` annotation rows."""
    return kernels[~kernels["kernel"].astype(str).str.startswith(ANNOTATION_PREFIX)]


def kernel_class(name: str) -> str:
    """pipeline.kernel_component, and the BF16 grouped kernel's truncated CUTLASS name."""
    return "grouped_gemm" if "groupproblem" in str(name).lower() else pipe.kernel_component(str(name))


def twin_classes(spec, tokens: int, rows_in: float, precision: str, direction: str, gpu, profile) -> dict:
    f, b = ws.ep_moe_ops(spec, tokens, 2, rows_in, precision, gpu, profile)
    e = f if direction == "fwd" else b
    out = dict(e.component_s)
    for c, v in e.w_component_s.items():
        out[c] = out.get(c, 0.0) + v
    out["memory"] = out.get("memory", 0.0) + out.pop("launch", 0.0) + out.pop("fixed", 0.0)
    return out


def class_table(kernels: pd.DataFrame, gpu, profile) -> pd.DataFrame:
    """One row per profiled call (bench, precision, tokens, skew): measured seconds per class and
    rank, the twin's, and the non-NCCL kernels' seconds beside an NCCL kernel."""
    k = device_kernels(kernels)
    k = k.assign(component=k["kernel"].map(kernel_class))
    rows = []
    for (bench, prec, T, E, skew), g in k.groupby(["bench", "precision", "tokens_per_rank", "num_experts", "skew"]):
        spec = dataclasses.replace(get_model("v3-slice-1l"), num_routed_experts=int(E))
        tw = twin_classes(spec, int(T), float(g["max_rank_rows"].iloc[0]), prec, bench.rsplit("_", 1)[-1], gpu, profile)
        row = {"bench": bench, "precision": prec, "tokens": int(T), "experts": int(E), "skew": float(skew),
               "clock_mhz": float(g["sampled_sm_clock_mhz"].median()),
               "beside_nccl_s": float(g.loc[g["component"] != "nccl", "nccl_overlap_s"].sum())}
        for c in CLASSES:
            for r in (0, 1):
                row[f"{c}_r{r}_s"] = float(g.loc[(g["rank"] == r) & (g["component"] == c), "time_s"].sum())
            row[f"{c}_twin_s"] = tw.get(c, 0.0)
        rows.append(row)
    return pd.DataFrame(rows)


def token_side_counts(kernels: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """Calls per profiled layer call of each TOKEN_SIDE_KERNELS family, one row per `keys` group
    (e.g. bench, precision, tokens_per_rank, skew, rank of ep_kernels.csv; config, precision of a
    one-GPU kernels.csv)."""
    rows = []
    for key, g in kernels.groupby(keys):
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,)))
        for family, name in TOKEN_SIDE_KERNELS.items():
            row[family] = int(g.loc[g["kernel"].astype(str).str.contains(name, regex=False), "calls"].sum())
        rows.append(row)
    return pd.DataFrame(rows)


def grouped_alone_vs_layer(grouped: pd.DataFrame, classes: pd.DataFrame) -> pd.DataFrame:
    """Per configuration and rank (BF16): the two forward grouped GEMMs alone (CUDA graph, and the
    profiler's kernel seconds back to back) against the same rank's in-layer grouped kernels."""
    alone = grouped.groupby(["tokens_per_rank", "skew", "rank"]).agg(
        graph_s=("time_s", "sum"), profiled_s=("profiled_kernel_s", "sum"),
        clock_mhz=("profiled_sm_clock_mhz", "median")).reset_index()
    fwd = classes[(classes["bench"] == "moe_layer_ep_fwd") & (classes["precision"] == "bf16")]
    out = []
    for _, a in alone.iterrows():
        f = fwd[(fwd["tokens"] == a["tokens_per_rank"]) & (fwd["skew"] == a["skew"])]
        if f.empty:
            continue
        f = f.iloc[0]
        out.append({"tokens": int(a["tokens_per_rank"]), "skew": a["skew"], "rank": int(a["rank"]),
                    "alone_graph_s": a["graph_s"], "alone_profiled_s": a["profiled_s"],
                    "alone_clock_mhz": a["clock_mhz"], "in_layer_s": f[f"grouped_gemm_r{int(a['rank'])}_s"],
                    "in_layer_clock_mhz": f["clock_mhz"], "twin_s": f["grouped_gemm_twin_s"]})
    return pd.DataFrame(out)


def _flag(text: str) -> tuple[str, bool]:
    """FLAG=0|1, FLAG one of calibration.whole_step's switches."""
    name, _, value = text.partition("=")
    if value not in ("0", "1") or not hasattr(ws, name):
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: NAME=0 or NAME=1, NAME a switch of calibration.whole_step")
    return name, value == "1"


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.ep_layer_kernels", __doc__)
    ap.add_argument("folder", type=entry.records_folder, metavar="FOLDER", help="an s14epl folder (ep.csv, ep_kernels.csv)")
    ap.add_argument("gpu", type=entry.gpu_name, metavar="GPU")
    ap.add_argument("flags", type=_flag, nargs="*", metavar="FLAG=0|1")
    args = ap.parse_args(argv)
    for name, on in args.flags:
        setattr(ws, name, on)
    with entry.user_inputs("FOLDER", args.folder, "an s14epl folder (ep.csv, ep_kernels.csv)"):
        return _report(args.folder, args.gpu)


def _report(folder: Path, gpu_name: str) -> int:
    profile, _ = load_fitted_profile(gpu_name, rec.load_records(gpu_name), PROFILES_DIR)
    profile = ws.with_measured_collectives(profile, rec.records_root() / f"{gpu_name}x2")
    gpu = gpu_spec(gpu_name)
    ep = read_csv(folder / "ep.csv")
    print("== ep rows (split fit): measured / twin ms")
    for _, r in ep.iterrows():
        p = ws.predict_ep_row(r, gpu, profile)
        print(f"  {r['bench']:18s} {r['precision']:14s} T{int(r['tokens_per_rank']):6d} e{int(r['num_experts']):<3d} "
              f"skew{r['skew']:g} "
              f"{r['time_s'] * 1e3:8.3f} / {p * 1e3:8.3f} ({p / r['time_s'] - 1:+.1%})")
    classes = class_table(read_csv(folder / "ep_kernels.csv"), gpu, profile)
    print("== kernel seconds per class, ms: rank 0 / rank 1 / twin")
    for _, c in classes.iterrows():
        parts = " | ".join(f"{k} {c[k + '_r0_s'] * 1e3:.2f}/{c[k + '_r1_s'] * 1e3:.2f}/{c[k + '_twin_s'] * 1e3:.2f}"
                           for k in CLASSES)
        print(f"  {c['bench']:18s} {c['precision']:14s} T{c['tokens']:6d} e{c['experts']:<3d} skew{c['skew']:g} "
              f"{c['clock_mhz']:.0f} MHz | "
              f"{parts} | beside NCCL {c['beside_nccl_s'] * 1e3:.2f}")
    print("== token-side kernels per profiled call (calls)")
    counts = token_side_counts(read_csv(folder / "ep_kernels.csv"),
                               ["bench", "precision", "tokens_per_rank", "num_experts", "skew", "rank"])
    print(counts.to_string(index=False))
    if csv_exists(folder / "ep_grouped.csv"):   # s14epl's folders; s21ep2's have none
        print("== forward grouped GEMMs alone vs in the layer (BF16), ms")
        print(grouped_alone_vs_layer(read_csv(folder / "ep_grouped.csv"), classes).round(5).to_string(index=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

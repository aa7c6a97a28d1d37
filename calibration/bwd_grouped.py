"""The MoE backward's grouped GEMMs in the layer, per layout, against the twin's costing (s15gg,
docs/notes/s15gg_rule.md). Fitting-split kernel records only: the s14epl EP2 layer kernels
(<gpu>x2/s14epl_*/ep_kernels.csv, every row `fit`) and the one-GPU MoE layer kernels
(<gpu>/kernels.csv, configurations whose moe_layer rows are in the fitting split).

torch._grouped_mm runs three CUTLASS configurations in a BF16 MoE layer (real/model.py expert_ffn;
the FP8 layers' backward runs the same BF16 kernels): the forward's (x W, also the dgrad's layout in
operand order but another template), the data gradient's (dY W^T) and the weight gradient's
(X^T dY, contracted over the group's rows). Each shows 2 calls a layer (two GEMMs of each kind).
The profiler's names are cut in the middle, so a template is told apart by its tail
(`TMA_STOREE<tag>`) and its role by where it runs: the forward's is the one in the fwd profile; of
the backward's two, the weight gradient's is the one whose time grows as the rows per group fall
(at 64 rows a group: 5.1 against 4.2 ms on H100), as the wgrad records alone do.

    python -m calibration.bwd_grouped GPU
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration.records_io import csv_exists, glob_csv, read_csv
from calibration.split import is_held_out
from twin.core.specs import get_gpu, get_model
from twin.costs import compute
from twin.costs.profile import PROFILES, profile_from_json

LAYOUTS = ("fwd", "dgrad", "wgrad")
BACKWARD_LAYOUTS = ("dgrad", "wgrad")
# records folders (under calibration/measurements) of the GPUs whose layers were profiled
GPU_FOLDERS = ("h100", "h200")
_TAG = re.compile(r"TMA_STOREE(S[0-9A-Z]+)_")


def template_tag(kernel: str) -> str | None:
    """The tail tag of a BF16 CUTLASS grouped kernel (`S24`, `S26`, `S2A`), None for other kernels."""
    name = str(kernel)
    if "GroupProblem" not in name or "prepare_grouped" in name:
        return None
    m = _TAG.search(name)
    return m.group(1) if m else None


def twin_layout_s(spec, rows_per_group: float, groups: int, gpu, profile) -> dict:
    """The twin's seconds of each layout's two grouped GEMMs (calibration.predict._moe_ops: the
    forward's w13 and w2, the backward's d(h) / dx and dW2 / dW13), balanced groups."""
    D, F = spec.hidden_size, spec.moe_intermediate_size
    padded = [np.ceil(rows_per_group / 16.0) * 16.0] * groups   # GROUP_ALIGN padding

    def t(r, n, k, transposed=False):
        return compute.grouped_gemm_time_s(r, n, k, "bf16", gpu, profile, transposed=transposed)
    return {"fwd": t(padded, 2 * F, D) + t(padded, D, F),
            "dgrad": t(padded, F, D) + t(padded, D, 2 * F),
            "wgrad": t(padded, F, D, True) + t(padded, 2 * F, D, True)}


def _roles(tags_fwd: set, tags_bwd: dict) -> dict:
    """{tag: layout}: the forward's tag; of the backward's others, wgrad the slower per call."""
    roles = {t: "fwd" for t in tags_fwd}
    rest = sorted((t for t in tags_bwd if t not in tags_fwd), key=lambda t: tags_bwd[t])
    if len(rest) == 2:
        roles[rest[0]], roles[rest[1]] = "dgrad", "wgrad"
    return roles


def ep_layer_rows(gpu_name: str, gpu, profile) -> list[dict]:
    """Per s14epl folder, tokens and precision (balanced routing, skew 0): measured (mean of the
    two ranks) and twin seconds of each layout's kernels."""
    out = []
    for path in glob_csv(rec.records_root() / f"{gpu_name}x2", "s14epl_*/ep_kernels.csv"):
        k = read_csv(path)
        k = k[(k["skew"] == 0) & (k["split"] == "fit")].assign(tag=k["kernel"].map(template_tag)).dropna(subset=["tag"])
        for (prec, T), g in k.groupby(["precision", "tokens_per_rank"]):
            spec = dataclasses.replace(get_model("v3-slice-1l"), num_routed_experts=int(g["num_experts"].iloc[0]) // 2)
            local = spec.num_routed_experts
            tw = twin_layout_s(spec, float(g["max_rank_rows"].iloc[0]) / local, local, gpu, profile)
            fwd, bwd = g[g["bench"] == "moe_layer_ep_fwd"], g[g["bench"] == "moe_layer_ep_bwd"]
            roles = _roles(set(fwd["tag"]), bwd.groupby("tag")["time_s"].mean().to_dict())
            meas = {roles[t]: s.groupby("rank")["time_s"].sum().mean() for t, s in g.groupby("tag") if t in roles}
            out.append({"source": f"EP2 T{int(T)} {prec}", "rows_per_group": float(g["max_rank_rows"].iloc[0]) / local,
                        **{f"{L}_meas_s": meas.get(L, np.nan) for L in LAYOUTS}, **{f"{L}_twin_s": tw[L] for L in LAYOUTS}})
    return out


_CONFIG = re.compile(r"moe_layer (\S+) t(\d+) e(\d+) skew(\S+) (fwd|bwd)")


def one_gpu_rows(gpu_name: str, gpu, profile) -> list[dict]:
    """The one-GPU MoE layers' profiled kernels (kernels.csv), configurations in the fitting split."""
    path = rec.records_root() / gpu_name / "kernels.csv"
    if not csv_exists(path):
        return []
    k = read_csv(path)
    k = k[k["config"].astype(str).str.startswith("moe_layer")].assign(tag=k["kernel"].map(template_tag)).dropna(subset=["tag"])
    parsed = k["config"].str.extract(_CONFIG)
    k = k.assign(model=parsed[0], tokens=parsed[1].astype(int), experts=parsed[2].astype(int),
                 skew=parsed[3].astype(float), direction=parsed[4])
    out = []
    for (model, T, E, skew, prec), g in k.groupby(["model", "tokens", "experts", "skew", "precision"]):
        held = is_held_out({"bench": "moe_layer_fwd", "num_experts": E, "skew": skew, "model": model})
        if held or skew != 0:
            continue
        spec = get_model(model)
        spec = dataclasses.replace(spec, num_routed_experts=E)
        fwd, bwd = g[g["direction"] == "fwd"], g[g["direction"] == "bwd"]
        roles = _roles(set(fwd["tag"]), bwd.groupby("tag")["time_s"].mean().to_dict())
        meas = {roles[t]: s["time_s"].sum() for t, s in bwd.groupby("tag") if t in roles and roles[t] != "fwd"}
        meas["fwd"] = fwd["time_s"].sum()
        rows = T * spec.top_k / E
        tw = twin_layout_s(spec, rows, E, gpu, profile)
        out.append({"source": f"1GPU {model} T{T} E{E} {prec}", "rows_per_group": rows,
                    **{f"{L}_meas_s": meas.get(L, np.nan) for L in LAYOUTS}, **{f"{L}_twin_s": tw[L] for L in LAYOUTS}})
    return out


def committed_profile(gpu_name: str):
    """The calibrated profile of a records folder's GPU that calibration.validate predicts the records with: the
    profiles folder in use's <gpu>.json (calibration.records.profiles_dir, `twin validate --profiles DIR`), else
    the committed twin/data/profiles/<gpu>.json."""
    folder = rec.profiles_dir()
    if folder is not None and (folder / f"{gpu_name}.json").is_file():
        return profile_from_json(json.loads((folder / f"{gpu_name}.json").read_text()))
    with PROFILES.joinpath(f"{gpu_name}.json").open() as fh:
        return profile_from_json(json.load(fh))


def layout_table(gpu_name: str) -> pd.DataFrame:
    """Per fitting BF16 layer: each layout's measured and twin seconds, their ratio, and the
    backward layouts' ratio over the forward's in the same layer."""
    profile, gpu = committed_profile(gpu_name), get_gpu(gpu_name)
    rows = ep_layer_rows(gpu_name, gpu, profile) + one_gpu_rows(gpu_name, gpu, profile)
    t = pd.DataFrame([r for r in rows if r["source"].endswith(" bf16")])
    if t.empty:
        return t
    for L in LAYOUTS:
        t[f"{L}_ratio"] = t[f"{L}_meas_s"] / t[f"{L}_twin_s"]
    for L in ("dgrad", "wgrad"):
        t[f"{L}_vs_fwd"] = t[f"{L}_ratio"] / t["fwd_ratio"]
    return t


def gpu_folder(gpu_name: str) -> str | None:
    """Catalog GPU name ("NVIDIA H100 SXM5 80GB") -> its records folder ("h100"); None if none."""
    low = gpu_name.lower()
    return next((k for k in GPU_FOLDERS if k in low), None)


def layout_factors(gpu_name: str) -> dict:
    """{"dgrad": f, "wgrad": f} of this GPU: the median over its fitting BF16 layers of the
    layout's measured / twin seconds over the forward's in the same layer; {} without records (under
    the records root in use, calibration.records.records_root), the twin's seconds under the profile in use
    (calibration.records.profiles_dir)."""
    return _layout_factors(gpu_name, rec.records_root(), rec.profiles_dir())


@functools.cache
def _layout_factors(gpu_name: str, root: Path, profiles: Path | None) -> dict:
    folder = gpu_folder(gpu_name)
    if folder is None:
        return {}
    t = layout_table(folder)
    if t.empty:
        return {}
    return {L: float(np.median(t[f"{L}_vs_fwd"].dropna())) for L in BACKWARD_LAYOUTS}


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.parser("calibration.bwd_grouped", __doc__)
    ap.add_argument("gpus", nargs="*", type=entry.gpu_name, default=["h100", "h200"], metavar="GPU",
                    help="GPUs whose layouts to print (default h100 h200)")
    args = ap.parse_args(argv)
    pd.set_option("display.width", 250)
    for g in args.gpus:
        print(g)
        print(layout_table(g).round(4).to_string(index=False))
        print("factors", {k: round(v, 4) for k, v in layout_factors(g).items()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

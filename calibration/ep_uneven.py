"""The MoE layer's grouped GEMMs on uneven rows per expert, profiled against the twin, layout by layout
(s22epq, docs/notes/s22epq_rule.md: s14epl's open item, "R's backward on uneven rows").

R (calibration.pipeline.ADOPT_EP_ROUTED_ROWS) prices each EP layer at its most loaded rank's measured
rows per local expert; s14epl and s22pp4j refused it partly on a kernel-class clause (the EP2 steps'
backward grouped-GEMM class, twin / profiled, further from the PP2 steps' median with R than without).
This module asks the kernels directly. The s14epl campaign profiled the EP2 layer (v3-slice-1l, 32
experts, 16 a rank) at skew 0 (exactly balanced) and skew 1 (Zipf routing) on each rank of 2xH200 and
2xH100 (fitting split: <gpu>x2/s14epl_*/ep_kernels.csv). Each rank's local experts received known rows
(the bench's routing, replayed on the CPU by the caller: real/bench/moe_layer.skewed_routing with
s14epl's generator order, S14EPL_DRAWS; calibration may not import real/). Per rank and layout (the
forward's, the data gradient's, the weight gradient's two grouped GEMMs: calibration.bwd_grouped's
roles), the profiled seconds against the twin's (compute.grouped_gemm_time_s on the same rows per
expert, GROUP_ALIGN-padded, the backward layouts at their measured factors, as calibration.predict
_moe_ops costs them), and the change from skew 0 to skew 1 on the same rank: the unevenness alone, with
the twin-wide in-layer GEMM offset divided out. tests/calibration/test_ep_uneven.py replays the routing
and holds the figures (docs/notes/s22epq_rule.md, part 1).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from calibration import records as rec
from calibration.bwd_grouped import _roles, committed_profile, layout_factors, template_tag
from calibration.records_io import glob_csv, read_csv
from twin.core.specs import get_gpu, get_model
from twin.costs import compute

# real/bench/ep_kernels.py bench_ep_kernels: v3-slice-1l at 32 routed experts, top-8, two ranks, each
# rank's torch.Generator seeded with its rank and drawn for (tokens, skew) in this order (a skew-0
# case draws nothing: round-robin routing)
S14EPL_EXPERTS, S14EPL_TOP_K, S14EPL_WORLD = 32, 8, 2
S14EPL_DRAWS = ((2048, 0.0), (2048, 1.0), (8192, 0.0), (8192, 1.0))
GROUP_ALIGN = 16.0   # real/model.py expert_ffn pads each expert's rows to a multiple of 16
LAYOUTS = ("fwd", "dgrad", "wgrad")


def local_counts(counts_by_rank: dict, rank: int) -> np.ndarray:
    """Rows each local expert of `rank` receives: the world's routed counts per expert (summed over the
    ranks' own routings, `counts_by_rank[r]` of length E) at [rank El, (rank+1) El)."""
    total = np.sum([np.asarray(c, float) for c in counts_by_rank.values()], axis=0)
    El = len(total) // len(counts_by_rank)
    return total[rank * El:(rank + 1) * El]


def twin_layouts_s(counts, spec, gpu, profile, factors: dict) -> dict:
    """The twin's seconds of each layout's two BF16 grouped GEMMs on `counts` rows per local expert."""
    D, F = spec.hidden_size, spec.moe_intermediate_size
    rows = np.ceil(np.asarray(counts, float) / GROUP_ALIGN) * GROUP_ALIGN

    def t(n, k, transposed=False):
        return compute.grouped_gemm_time_s(rows, n, k, "bf16", gpu, profile, transposed=transposed)
    return {"fwd": t(2 * F, D) + t(D, F),
            "dgrad": (t(F, D) + t(D, 2 * F)) * factors.get("dgrad", 1.0),
            "wgrad": (t(F, D, True) + t(2 * F, D, True)) * factors.get("wgrad", 1.0)}


def layout_rows(gpu_name: str, counts: dict) -> pd.DataFrame:
    """Per (tokens, skew, rank, layout) of the BF16 s14epl records of `gpu_name` (h100 | h200): rows
    received, their coefficient of variation over the local experts, profiled and twin seconds.
    `counts`: {(tokens, skew): {rank: that rank's routed rows per global expert}} (the replay)."""
    profile, gpu = committed_profile(gpu_name), get_gpu(gpu_name)
    factors = layout_factors(gpu.name)
    spec = dataclasses.replace(get_model("v3-slice-1l"), num_routed_experts=S14EPL_EXPERTS // S14EPL_WORLD)
    out = []
    for path in glob_csv(rec.records_root() / f"{gpu_name}x2", "s14epl_*/ep_kernels.csv"):
        k = read_csv(path)
        k = k[k["precision"] == "bf16"].assign(tag=lambda d: d["kernel"].map(template_tag)).dropna(subset=["tag"])
        for (T, skew), g in k.groupby(["tokens_per_rank", "skew"]):
            fwd, bwd = g[g["bench"] == "moe_layer_ep_fwd"], g[g["bench"] == "moe_layer_ep_bwd"]
            roles = _roles(set(fwd["tag"]), bwd.groupby("tag")["time_s"].mean().to_dict())
            for rank in sorted(g["rank"].unique()):
                c = local_counts(counts[(int(T), float(skew))], int(rank))
                twin = twin_layouts_s(c, spec, gpu, profile, factors)
                mine = g[g["rank"] == rank]
                for tag, s in mine.groupby("tag"):
                    layout = roles.get(tag)
                    if layout is None:
                        continue
                    out.append({"gpu": gpu_name, "tokens": int(T), "skew": float(skew), "rank": int(rank),
                                "rows": float(c.sum()), "rows_cv": float(c.std() / c.mean()),
                                "max_rank_rows": float(g["max_rank_rows"].iloc[0]), "layout": layout,
                                "measured_s": float(s["time_s"].sum()), "twin_s": float(twin[layout])})
    return pd.DataFrame(out)


def uneven_change(rows: pd.DataFrame) -> pd.DataFrame:
    """Per (gpu, tokens, rank, layout): skew-1 seconds over skew-0 seconds on the same rank, profiled
    and twin, and twin / profiled of that change (1: the twin prices the unevenness as the kernels
    run it; > 1: it overshoots)."""
    key = ["gpu", "tokens", "rank", "layout"]
    even = rows[rows["skew"] == 0][key + ["measured_s", "twin_s", "rows"]]
    skewed = rows[rows["skew"] != 0]
    both = skewed.merge(even, on=key, suffixes=("", "_even"))
    both["measured_change"] = both["measured_s"] / both["measured_s_even"]
    both["twin_change"] = both["twin_s"] / both["twin_s_even"]
    both["rows_change"] = both["rows"] / both["rows_even"]
    both["twin_over_measured"] = both["twin_change"] / both["measured_change"]
    return both[key + ["rows_cv", "rows_change", "measured_change", "twin_change", "twin_over_measured"]]

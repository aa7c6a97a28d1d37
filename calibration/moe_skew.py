"""MoE layer time under skewed routing: the twin against real/ measurements (moe_layer.csv).

Each measured row is one DeepSeekMoE layer on one GPU with every expert local (ep = 1), routing
injected with Zipf(skew) popularity and top_k distinct experts per token. The recorded row gives
only the largest expert's count; the per-expert counts are re-drawn here with the same routing
law (numpy, seeded; the re-drawn maximum is reported next to the recorded one).

How does one grouped-GEMM kernel over uneven groups behave? Three hypotheses for the rows the
grouped GEMM effectively processes, as a multiple of balanced (ExpertLoad.gemm_rows_frac):
  max     every group as long as the largest (groups x max rows; what a per-expert straggler
          model predicts)
  total   the total rows (uneven groups cost no more than even ones)
  padded  total rows plus the extra tile padding of uneven groups: sum_e ceil(c_e / 128) * 128
          against the balanced sum (M tiles of 128 rows; a nearly empty expert still costs a tile)
The hypothesis is chosen on the fitting skews (0.5, 1.0) by median |error| of the skew effect
t(skew) / t(0); the largest skew (1.5) is held out and reported. Absolute errors depend on the
calibrated profile (owned by calibration/) and are reported beside the skew-effect errors.
"""

from __future__ import annotations

import csv
import dataclasses
import math

import numpy as np

from calibration import records as rec
from calibration.predict import gpu_spec, profile_for_label, twin_precision
from calibration.records_io import open_csv
from twin.core.specs import get_model
from twin.costs import compute
from twin.costs.flops import ALL_TO_ALL_KINDS, ExpertLoad, moe_ops
from twin.costs.profile import load_profile
from twin.moe.load import gumbel_topk_counts, zipf_weights

TILE_M = 128
HYPOTHESES = ("max", "total", "padded")
FIT_SKEWS = (0.5, 1.0)
HELD_OUT_SKEWS = (1.5,)


def expert_counts(tokens: int, num_experts: int, top_k: int, skew: float, seed: int = 0) -> np.ndarray:
    """Per-expert rows of the benchmark's routing law (real/bench/moe_layer.py skewed_routing):
    round-robin for skew 0, else Zipf(skew) popularity (twin.moe.load.zipf_weights) with top_k
    distinct experts per token, drawn by twin.moe.load.gumbel_topk_counts."""
    if skew == 0:
        return np.bincount(np.arange(tokens * top_k) % num_experts, minlength=num_experts).astype(np.float64)
    rng = np.random.default_rng(seed)
    return gumbel_topk_counts(np.log(zipf_weights(num_experts, skew)), top_k, tokens, rng)


def gemm_rows_frac(counts_E: np.ndarray, hypothesis: str) -> float:
    mean = counts_E.mean()
    if hypothesis == "max":
        return float(counts_E.max() / mean)
    if hypothesis == "total":
        return 1.0
    if hypothesis == "padded":
        e = counts_E.shape[0]
        padded = np.sum(np.ceil(counts_E / TILE_M) * TILE_M)
        balanced = e * math.ceil(mean / TILE_M) * TILE_M
        return float((counts_E.sum() + padded - balanced) / counts_E.sum())
    raise ValueError(hypothesis)


def _spec(model: str, num_experts: int):
    return dataclasses.replace(get_model(model), num_routed_experts=num_experts)


def predict_row_s(row: dict, gpu_name: str, hypothesis: str, profile=None) -> float:
    gpu = gpu_spec(gpu_name)
    profile = profile or load_profile(gpu.calibrated_as)
    label = row["precision"]
    prof = profile_for_label(profile, label)
    t, e, k, skew = int(row["tokens"]), int(row["num_experts"]), int(row["top_k"]), float(row["skew"])
    counts = expert_counts(t, e, k, skew)
    load = ExpertLoad(1.0, gemm_rows_frac(counts, hypothesis), 1.0)
    ops = moe_ops(_spec(row["model"], e), t, 1, gpu.gpus_per_node, 1, load)
    phases = ("fwd",) if row["bench"].endswith("_fwd") else ("bwd_input", "bwd_weight")
    return sum(compute.op_time_s(op, ph, twin_precision(label), gpu, prof)
               for op in ops if op.kind not in ALL_TO_ALL_KINDS for ph in phases)


def read_rows(gpu: str, precision: str = "bf16") -> list[dict]:
    with open_csv(rec.records_root() / gpu / "moe_layer.csv") as fh:
        return [r for r in csv.DictReader(fh) if r["precision"] == precision]


def validate(gpu: str, precision: str = "bf16") -> dict:
    """Per-hypothesis errors on fitting and held-out skews; the chosen hypothesis."""
    rows = read_rows(gpu, precision)
    key = lambda r: (r["bench"], r["model"], r["num_experts"], r["tokens"])  # noqa: E731
    base = {key(r): float(r["time_s"]) for r in rows if float(r["skew"]) == 0}
    out = {"gpu": gpu, "precision": precision, "hypotheses": {}}
    for hyp in HYPOTHESES:
        pred = {}
        recs = []
        for r in rows:
            pred[(key(r), float(r["skew"]))] = predict_row_s(r, gpu, hyp)
        for r in rows:
            s = float(r["skew"])
            if s == 0:
                continue
            p, p0 = pred[(key(r), s)], pred[(key(r), 0.0)]
            meas, meas0 = float(r["time_s"]), base[key(r)]
            recs.append({"skew": s, "abs_err": p / meas - 1.0, "effect_err": (p / p0) / (meas / meas0) - 1.0,
                         "recorded_max": int(r["max_expert_tokens"]),
                         "redrawn_max": int(expert_counts(int(r["tokens"]), int(r["num_experts"]), int(r["top_k"]), s).max())})
        def med(sel, f):
            v = [abs(x[f]) for x in recs if x["skew"] in sel]
            return float(np.median(v)) if v else float("nan")

        def frac_within(sel, f, tol=0.10):
            v = [abs(x[f]) <= tol for x in recs if x["skew"] in sel]
            return float(np.mean(v)) if v else float("nan")
        out["hypotheses"][hyp] = {
            "fit_median_abs_effect_err": med(FIT_SKEWS, "effect_err"),
            "held_out_median_abs_effect_err": med(HELD_OUT_SKEWS, "effect_err"),
            "held_out_frac_within_10pct_effect": frac_within(HELD_OUT_SKEWS, "effect_err"),
            "fit_median_abs_err": med(FIT_SKEWS, "abs_err"),
            "held_out_median_abs_err": med(HELD_OUT_SKEWS, "abs_err"),
            "held_out_frac_within_10pct": frac_within(HELD_OUT_SKEWS, "abs_err"),
            "held_out_max_abs_effect_err": float(max(abs(x["effect_err"]) for x in recs if x["skew"] in HELD_OUT_SKEWS)),
            "redrawn_vs_recorded_max_median_rel": float(np.median([abs(x["redrawn_max"] / x["recorded_max"] - 1) for x in recs])),
        }
    out["chosen"] = min(HYPOTHESES, key=lambda h: out["hypotheses"][h]["fit_median_abs_effect_err"])
    return out

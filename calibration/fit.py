"""Fit a GPU's efficiency profile to its measurement records (fitting split only).

Least squares on log time: residual_i = log(predicted_i) - log(measured_i), where predicted_i is
the twin's own cost function (`calibration.predict.predict_s` -> `twin.costs.compute`) evaluated
with the candidate profile. All curves of a GPU are fitted jointly because the shared terms
(memory_eff, gemm_memory_eff, launch_s, grouped_setup_s) enter every row of their kind.

Fitted: per precision label GemmCurve(e_max, m_half, n_half, k_half) for dense and grouped GEMMs
(with the tile-wave model per curve where it fits clearly better), SeqCurve(e_max, s_half[, rows_half]) for
attention fwd and bwd, memory_eff (elementwise kernels), gemm_memory_eff (GEMM operand
streaming), gemm_overlap_p (how compute and memory times of a GEMM combine), launch_s (the device-side cost per kernel, seen in CUDA-graph-timed rows),
grouped_setup_s (torch's per-call grouped-GEMM argument kernel) and host_s for the op classes of
per-repetition-timed primitives (stage 1); the topk select cost from the topk rows (fit_topk);
quant_bytes_per_elem, gather_eff and transpose_eff (stage 2, the
fitting split's MoE/MLA layers with the primitive curves fixed). host_s of op classes no
primitive row times is held at HOST_S_INITIAL. Not fitted but measured: `sustained`, the
burst/sustained time ratios (sustained_ratios). Curves without fitting
data keep the default profile's values and are listed under provenance["not_fitted"].
The fit writes data (twin/data/profiles/<gpu>.json, package data the twin reads, and beside them
fit_inputs.json, the records each profile's fit read: FIT_INPUTS_FILE); it never edits code.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import hashlib
import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import records as rec
from calibration import gemm_in_layer, sm_reserve
from calibration.async_tp import partials_reduce_terms
from calibration.decode_gemm import decode_terms, with_decode_terms
from calibration.dense_block import attention_kernel_terms, eager_elementwise_eff
from calibration.dense_dropout import attention_dropout_kernel_terms, attention_dropout_prob_terms, attention_dropout_terms
from calibration.grouped_clock import time_weighted_median
from calibration.nccl import collectives_terms
from calibration.layer_gaps import eager_terms
from calibration.predict import (BF16_GEMM_CURVES, FP8_PREFERENCE, clock_factor, clock_family, gpu_spec, predict_s,
                                 row_kernel, timing_of, with_bf16_speed)
from calibration.predict_vec import PrimitivePredictor
from calibration.split import split
from calibration.records_io import csv_exists, csv_sha256, glob_csv, read_csv, read_scope, record_key
from twin.costs import compute
from twin.costs.profile import PROFILES, GemmCurve, Profile, SeqCurve, default_profile
from twin.core.atomic import write_text
from twin.core.specs import GPUSpec

PROFILES_DIR = Path(str(PROFILES))  # package data of the twin: twin/data/profiles


def least_squares(*args, **kwargs):
    """scipy.optimize.least_squares, imported here on the first fit: scipy.optimize costs about a
    second of import that every `twin` command paid while only `twin fit` uses it."""
    # lazy: scipy.optimize is heavy and only a fit needs it
    from scipy.optimize import least_squares as solve

    return solve(*args, **kwargs)


GEMM_FIELDS = ("e_max", "m_half", "n_half", "k_half")
SEQ_FIELDS = ("e_max", "s_half")
# SeqCurve.rows_half (the causal tail of calls of few head-rows, batch x heads x seq) is fitted for a
# direction only where its fitting rows' head-rows span at least this factor: attention.csv's first
# grid held 16,384 or 8,192 tokens a call (fitting head-rows 197K-2.1M, a factor 10.7, its small end
# only 16 heads at 2 x 6,144 and 5 x 3,072 tokens), too narrow to tell the tail from s_half and the
# heads; the s12mla grid (real/campaigns/s12mla.sh) reaches down to 32K
ROWS_SPAN_MIN = 16.0
ROWS_HALF_BOUNDS = (0.0, 1e7)
ROWS_HALF_INITIAL = 1e4
E_MAX_BOUNDS = (0.02, 1.0)
HALF_BOUNDS = (0.0, 1e5)
MEMORY_EFF_BOUNDS = (0.05, 1.0)
LAUNCH_S_BOUNDS = (0.0, 1e-4)
GROUPED_SETUP_S_BOUNDS = (0.0, 1e-4)
GROUPED_SETUP_S_INITIAL = 3e-6
GEMM_OVERLAP_P_BOUNDS = (1.0, 30.0)   # 1: compute and memory times add; 30: ~max()
GEMM_OVERLAP_P_INITIAL = 4.0
HOST_S_BOUNDS = (0.0, 5e-4)
HOST_S_INITIAL = 2e-5  # eager PyTorch dispatch per op, assumed (typical for these hosts), not measured in isolation
QUANT_BYTES_BOUNDS = (4.0, 200.0)
GATHER_EFF_BOUNDS = (0.05, 1.0)
MIN_POINTS_PER_PARAM = 2  # a curve is fitted only with at least 2 fitting points per parameter

# s14gemm (docs/notes/s14gemm_rule.md): fit the GEMM curves at the SM clock GEMMs run at inside the
# fitting layers, not at the power-limited clock of gemm.csv's CUDA-graph loops (large rows 1,500-1,650
# MHz against a layer-time-weighted 1,695-1,725 for BF16 layers); stage 2 is refitted after them.
# Profiles fitted so go to twin/data/profiles_gemm_layer_clock (twin.costs.profile.ADOPT_GEMM_LAYER_CLOCK)
ADOPT_GEMM_LAYER_CLOCK = False
LAYER_CLOCK_BENCHES = ("moe_layer_fwd", "moe_layer_bwd", "mla_layer_fwd", "mla_layer_bwd")
# its candidate L2 (same note): stage 1 as before, then the BF16 GEMM curves at one class-level
# in-layer speed-up (bf16_layer_speedup), stage 2 refitted after; profiles to profiles_gemm_layer_speed
ADOPT_GEMM_LAYER_SPEED = False
# s15gl's candidate G (docs/notes/s15gl_rule.md): the measured in-layer / alone kernel-class factors of
# s14gl's campaign (in_layer_terms) on the profile before stage 2, stage 2 refitted under them;
# profiles fitted so go to twin/data/profiles_in_layer (twin.costs.profile.ADOPT_IN_LAYER_FACTORS)
ADOPT_IN_LAYER_FACTORS = False
IN_LAYER_FOLDERS = "s14gl_*"   # <gpu>/ folders of real/campaigns/s14gl.sh (gl_layer.csv, gl_ops.csv)
# s15gl2's candidate G2 (docs/notes/s15gl2_rule.md): G's factors (the GEMM ones on the compute time
# only, Profile.in_layer_gemm_compute_only), gather_eff and quant_bytes_per_elem fitted on the alone
# memory rows of the fitting split (<gpu>/memory_alone.csv, real/campaigns/s15gl2.sh) instead of the
# layers, stage 2 fitting transpose_eff only; profiles go to twin/data/profiles_in_layer_alone
# (twin.costs.profile.ADOPT_IN_LAYER_ALONE_TERMS)
ADOPT_IN_LAYER_ALONE_TERMS = False
MEMORY_ALONE_FILE = "memory_alone.csv"
# memory_alone ops the twin costs through Eager.gather / Eager.strided (gather_eff), and through
# Eager.quant (quant_bytes_per_elem): calibration.predict._memory_ops
GATHER_EFF_OPS = ("swiglu", "silu_strided", "mul_strided", "index_gather", "index_copy", "index_put_acc")
QUANT_OPS = ("fp8_quant_1x128", "fp8_quant_rowwise")


def _param_layout(fit_rows: pd.DataFrame) -> list[tuple[str, str, str]]:
    """[(table, key, field)]: the parameters the fitting rows can inform."""
    layout = []
    for table in ("gemm", "grouped_gemm"):
        counts = fit_rows.loc[fit_rows.table == table, "kernel"].value_counts()
        for label in sorted(counts.index):
            if counts[label] >= MIN_POINTS_PER_PARAM * len(GEMM_FIELDS):
                layout += [(table, label, f) for f in GEMM_FIELDS]
    for d in ("fwd", "bwd"):
        if (fit_rows.bench == f"attn_{d}").sum() >= MIN_POINTS_PER_PARAM * len(SEQ_FIELDS):
            layout += [("attention", d, f) for f in seq_fields(fit_rows[fit_rows.bench == f"attn_{d}"])]
    layout += [("memory_eff", "", "")]
    if (fit_rows.table != "").any():
        layout += [("gemm_memory_eff", "", ""), ("gemm_overlap_p", "", "")]
    recs = fit_rows.to_dict("records")
    # the device-side cost per kernel is visible only where host dispatch is not timed
    if any(timing_of(r) != "per_rep_events" for r in recs):
        layout.append(("launch_s", "", ""))
    if any(r["table"] == "grouped_gemm" for r in recs):
        layout.append(("grouped_setup_s", "", ""))
    # host dispatch time per eager op class seen in the per-repetition primitive rows
    for cls in sorted(set().union(*[row_host_classes(r) for r in recs])):
        layout.append(("host_s", cls, ""))
    return layout


def seq_fields(attn_rows: pd.DataFrame) -> tuple[str, ...]:
    """The SeqCurve fields one direction's fitting rows can inform: rows_half only where their
    head-rows (batch x heads x seq) span ROWS_SPAN_MIN and there are points enough for three."""
    head_rows = attn_rows["batch"] * attn_rows["num_heads"] * attn_rows["seq_len"]
    if (len(attn_rows) >= MIN_POINTS_PER_PARAM * (len(SEQ_FIELDS) + 1)
            and head_rows.max() >= ROWS_SPAN_MIN * head_rows.min()):
        return (*SEQ_FIELDS, "rows_half")
    return SEQ_FIELDS


def row_host_classes(r) -> set:
    """host_s classes a primitive record's timing depends on: none under CUDA graphs, its op's
    class otherwise (an attention backward also waits on its untimed forward's dispatch)."""
    if timing_of(r) == "cuda_graph":
        return set()
    return {host_class(r)} | ({"attn_fwd"} if r["bench"] == "attn_bwd" else set())


def host_class(r) -> str:
    """The profile.host_s class of a primitive record's op (calibration.predict.Eager)."""
    b = r["bench"]
    if b in GEMM_TABLE:
        return f"{GEMM_TABLE[b]}.{r['precision']}"
    if b in ("attn_fwd", "attn_bwd"):
        return b
    return "op"


def _initial(base: Profile, table: str, key: str, field: str) -> float:
    if table == "memory_eff":
        return base.memory_eff
    if table == "gemm_memory_eff":
        return base.gemm_streaming_eff
    if table == "gemm_overlap_p":
        return base.gemm_overlap_p or GEMM_OVERLAP_P_INITIAL
    if table == "launch_s":
        return base.launch_s
    if table == "grouped_setup_s":
        return base.grouped_setup_s or GROUPED_SETUP_S_INITIAL
    if table == "host_s":
        return HOST_S_INITIAL
    curves = getattr(base, table)
    curve = curves.get(key) or curves["fp8" if key.startswith("fp8") else "bf16"]
    if field == "rows_half":
        return curve.rows_half or ROWS_HALF_INITIAL
    return getattr(curve, field)


def _bounds(table: str, field: str) -> tuple[float, float]:
    if table in ("memory_eff", "gemm_memory_eff"):
        return MEMORY_EFF_BOUNDS
    if table == "launch_s":
        return LAUNCH_S_BOUNDS
    if table == "grouped_setup_s":
        return GROUPED_SETUP_S_BOUNDS
    if table == "gemm_overlap_p":
        return GEMM_OVERLAP_P_BOUNDS
    if table == "host_s":
        return HOST_S_BOUNDS
    if field == "rows_half":
        return ROWS_HALF_BOUNDS
    return E_MAX_BOUNDS if field == "e_max" else HALF_BOUNDS


def build_profile(gpu: str, x, layout, base: Profile, calibrated: bool = True, provenance: dict | None = None,
                  quant_bytes_per_elem: float | None = None, gather_eff: float = 1.0,
                  group_row_tile: int | None = None, wave_tiles: dict | None = None,
                  transpose_eff: float | None = None) -> Profile:
    """A Profile of real/'s stack (unfused eager FP8 quantization) from a parameter vector; curves
    not in the layout come from `base`. `wave_tiles`: {(table, label): tile} of the curves that run
    the tile-wave model (choose_wave_tiles)."""
    vals: dict = {}
    memory_eff, launch_s, setup_s = base.memory_eff, base.launch_s, base.grouped_setup_s
    gemm_memory_eff, overlap_p = base.gemm_memory_eff, base.gemm_overlap_p
    host_s = dict(base.host_s)
    waves = wave_tiles or {}
    for v, (table, key, field) in zip(x, layout):
        if table == "memory_eff":
            memory_eff = float(v)
        elif table == "launch_s":
            launch_s = float(v)
        elif table == "grouped_setup_s":
            setup_s = float(v)
        elif table == "gemm_memory_eff":
            gemm_memory_eff = float(v)
        elif table == "gemm_overlap_p":
            overlap_p = float(v)
        elif table == "host_s":
            host_s[key] = float(v)
        else:
            vals.setdefault((table, key), {})[field] = float(v)
    gemm, grouped = dict(base.gemm), dict(base.grouped_gemm)
    attention = dict(base.attention)
    for (table, key), f in vals.items():
        if table == "attention":
            attention[key] = SeqCurve(**f)
        else:
            (gemm if table == "gemm" else grouped)[key] = GemmCurve(**f, wave_tile=waves.get((table, key), 0))
    # the twin's `fp8` is the kernel V3 runs: blockwise if measured, else rowwise, else tensor-wise
    for curves in (gemm, grouped):
        for label in FP8_PREFERENCE[:-1]:
            if label in curves and (curves is gemm and ("gemm", label) in vals or curves is grouped and ("grouped_gemm", label) in vals):
                curves["fp8"] = curves[label]
                if curves is grouped and ("grouped_gemm", compute.wgrad_curve(label)) in vals:   # its weight-gradient form
                    curves[compute.wgrad_curve("fp8")] = curves[compute.wgrad_curve(label)]
                break
    qb = base.quant_bytes_per_elem if quant_bytes_per_elem is None else quant_bytes_per_elem
    return Profile(gpu, gemm, grouped, attention, memory_eff, launch_s, calibrated, provenance or {},
                   fp8_quant_fused=False, quant_bytes_per_elem=qb or QUANT_BYTES_INITIAL, host_s=host_s,
                   gather_eff=gather_eff, wave_tile=0,
                   transpose_eff=base.transpose_eff if transpose_eff is None else transpose_eff, cat_eff=base.cat_eff,
                   grouped_setup_s=setup_s, gemm_memory_eff=gemm_memory_eff,
                   gemm_overlap_p=overlap_p, topk=dict(base.topk),
                   group_row_tile=base.group_row_tile if group_row_tile is None else group_row_tile,
                   in_layer=dict(base.in_layer), in_layer_gemm_compute_only=base.in_layer_gemm_compute_only)


# tile-wave model (twin.costs.compute.wave_factor), 128 x 128 output tiles, chosen per curve: one
# tile size for every kernel was tried 2026-11-24 and hurt (held-out gemm P90 16.8% -> 33.3% on the
# H100) because cuBLAS (BF16, FP8 tensor-wise) splits K or streams tiles at small m while torch's
# CUTLASS row-wise FP8 kernels run one long tile per SM (an m=128, n=2112, k=7168 row-wise GEMM
# takes 19 us, one 128-tile k-loop at the per-SM peak). `choose_wave_tiles` keeps it where it fits.
WAVE_TILE_CANDIDATE = 128
WAVE_CHOICE_MARGIN = 0.8   # the wave model must cut a curve's fitting cost by 20% to be kept

# real/fp8.py quantize_*: 4-6 full passes over the values in BF16/FP32 (~33-39 bytes per element
# by count); the starting value of the fit
QUANT_BYTES_INITIAL = 36.0


def layer_gemm_clock_mhz(df: pd.DataFrame, held: pd.Series | None = None) -> dict:
    """{family: MHz}: per precision family, the layer-time-weighted median SM clock of the fitting
    split's one-GPU layer records (LAYER_CLOCK_BENCHES; one NVML reading each). Weighted by time
    because a GEMM curve's error costs a layer in proportion to its time. {} without such rows."""
    held = split(df) if held is None else held   # `held`: the held-out mask (split), for tests
    if "sm_clock_mhz" not in df.columns:
        return {}
    layers = df[(~held.to_numpy()) & df.bench.isin(LAYER_CLOCK_BENCHES).to_numpy() & (df.sm_clock_mhz > 0).to_numpy()]
    return {family: time_weighted_median(g.sm_clock_mhz, g.time_s)
            for family, g in layers.groupby(layers.precision.map(clock_family))}


def bf16_layer_speedup(df: pd.DataFrame) -> tuple[float, float, float]:
    """(speed-up, layer clock, records' clock) of the BF16 GEMM curves inside layers (L2): the
    layer-time-weighted median SM clock of the fitting BF16 layer rows (layer_gemm_clock_mhz) over
    the time-weighted median clock of the fitting BF16 GEMM records (gemm.csv's CUDA-graph loops):
    class medians, so one NVML reading's sampling noise averages out. (1, 0, 0) without clocks."""
    layer = layer_gemm_clock_mhz(df).get("bf16")
    rows = fit_rows(df)
    rows = rows[rows.bench.isin(list(GEMM_TABLE)) & (rows.precision == "bf16") & (rows.get("sm_clock_mhz", 0) > 0)]
    if not layer or rows.empty:
        return 1.0, 0.0, 0.0
    loop = time_weighted_median(rows.sm_clock_mhz, rows.time_s)
    return max(1.0, layer / loop), layer, loop


def at_curve_clock(rows: pd.DataFrame, clocks: dict) -> pd.DataFrame:
    """The GEMM rows' time_s moved to the curves' clock (clock_factor); other rows unchanged."""
    if not clocks or "sm_clock_mhz" not in rows.columns:
        return rows
    rows = rows.copy()
    gemm = rows.bench.isin(list(GEMM_TABLE))
    rows.loc[gemm, "time_s"] = [t * clock_factor(p, c, clocks) for t, p, c in
                                zip(rows.time_s[gemm], rows.precision[gemm], rows.sm_clock_mhz[gemm])]
    return rows


def fit_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows the fit may use: primitive benches of the fitting split."""
    held = split(df)
    rows = df[(~held) & df.bench.isin(rec.PRIMITIVE_BENCHES)].reset_index(drop=True)
    # the profile table and GEMM curve each row is timed with (kernel configuration of grouped FP8
    # rows, the weight-gradient form of grouped rows)
    rows["table"] = [GEMM_TABLE.get(b, "") for b in rows.bench]
    rows["kernel"] = [row_kernel(r) if r["bench"] in GEMM_TABLE else "" for r in rows.to_dict("records")]
    return rows


# record bench -> the profile table of its GEMM curve
GEMM_TABLE = {"gemm": "gemm", "grouped_gemm": "grouped_gemm", "grouped_gemm_wgrad": "grouped_gemm"}


GROUP_ROW_TILES = (0, 128, 256)  # candidate grouped-GEMM row tiles (compute.padded_group_rows)
SCREEN_NFEV = 150   # residual evaluations of a row-tile screen (its cost only ranks the tiles)


def fit_profile(df: pd.DataFrame, gpu: str, base: Profile | None = None,
                alone_rows: pd.DataFrame | None = None) -> tuple[Profile, dict]:
    """Fit a profile to the fitting split of one GPU's records -> (profile, fit statistics).
    The grouped GEMMs' row tile is a discrete choice: the fit runs once per candidate in
    GROUP_ROW_TILES (where the records hold grouped GEMMs) and keeps the lowest fitting-split
    residual (soft_l1 cost)."""
    base = base or default_profile()
    has_grouped = bool((df.bench == "grouped_gemm").any())
    tiles = GROUP_ROW_TILES if has_grouped else (base.group_row_tile,)
    # screen the row tiles on the stage-1 fit alone, then fit the chosen one in full
    screens = {t: _fit_profile(df, gpu, dataclasses.replace(base, group_row_tile=t), screen=True)[1]
               for t in tiles} if len(tiles) > 1 else {}
    costs = {t: r["cost"] for t, r in screens.items()} or {tiles[0]: None}
    tile = min(costs, key=lambda t: costs[t] if costs[t] is not None else 0.0)
    x_start = screens[tile]["x"] if screens else None   # the full fit continues from the screen's solution
    prof, stats = _fit_profile(df, gpu, dataclasses.replace(base, group_row_tile=tile), x_start=x_start,
                               alone_rows=alone_rows)
    stats["group_row_tile"] = tile
    stats["group_row_tile_cost"] = {str(t): c for t, c in costs.items()}
    return prof, stats


def _fit_profile(df: pd.DataFrame, gpu: str, base: Profile, screen: bool = False,
                 x_start=None, alone_rows: pd.DataFrame | None = None) -> tuple[Profile, dict]:
    """The fit at one group_row_tile. `screen`: stage 1 alone (no tile-wave choice, at most
    SCREEN_NFEV evaluations), for comparing row tiles by cost (fit_profile); `x_start`: the
    stage-1 starting point (a screen's solution). `alone_rows`: memory_alone rows (G2, s15gl2):
    gather_eff and quant_bytes_per_elem fitted on them (alone_memory_terms), not on the layers."""
    rows, topk_rows, cat_rows, layout = _select_primitive_rows(df, gpu)
    if ADOPT_GEMM_LAYER_CLOCK:   # stage 1 at the in-layer clock (s14gemm)
        rows = at_curve_clock(rows, layer_gemm_clock_mhz(df))
    problem = _PrimitiveProblem.build(gpu, rows, layout, base)
    if screen:
        return _screen_row_tile(problem)
    sol, waves = _fit_primitive_curves(problem, x_start)            # stage 1: curves, shared terms
    side = _fit_side_terms(problem, sol.x, topk_rows, cat_rows)     # topk, cat_eff
    speed = bf16_layer_speedup(df)[0] if ADOPT_GEMM_LAYER_SPEED else 1.0   # L2 (s14gemm)
    held_terms = None
    if alone_rows is not None:   # G2 (s15gl2): the two shared memory terms from the alone rows
        held_terms = alone_memory_terms(alone_rows, build_profile(gpu, sol.x, problem.layout, side, wave_tiles=waves),
                                        problem.spec)
    layers, n_comp = _fit_layers(df, problem, sol.x, waves, side, speed, held_terms)   # stage 2
    prof, stats = _assemble_profile(problem, sol, waves, side, layers, n_comp)
    if speed == 1.0:
        return prof, stats
    return dataclasses.replace(with_bf16_speed(prof, speed), bf16_layer_speedup=speed), stats


def _select_primitive_rows(df: pd.DataFrame, gpu: str):
    """Stage-1 rows and the parameters they inform -> (rows, topk_rows, cat_rows, layout).
    From the fitting split's primitive records (fit_rows): the `topk*` and `mla_qk_cat` memory
    rows are set aside (fitted on their own by fit_topk and fit_cat_eff), and rows of GEMM or
    attention curves with too few points to fit (_param_layout) are left out."""
    rows = fit_rows(df)
    layout = _param_layout(rows)
    informed = {(t, k) for t, k, _ in layout}
    ops = rows["op"].astype(str) if "op" in rows.columns else pd.Series([""] * len(rows))
    is_topk = (rows.bench == "memory") & ops.str.startswith("topk")   # fitted on their own (fit_topk)
    is_cat = (rows.bench == "memory") & (ops == "mla_qk_cat")          # measured on their own (fit_cat_eff)
    topk_rows, cat_rows = rows[is_topk], rows[is_cat]
    keep = [(t != "" and (t, p) in informed) or (b.startswith("attn_") and ("attention", b[5:]) in informed)
            or (b == "memory" and not tk and not ct)
            for b, t, p, tk, ct in zip(rows.bench, rows.table, rows.kernel, is_topk, is_cat)]
    rows = rows[keep].reset_index(drop=True)  # rows of curves too thin to fit are left out
    if rows.empty:
        raise ValueError(f"{gpu}: no fitting rows (primitive benches outside the held-out families)")
    return rows, topk_rows, cat_rows, layout


def _jac_sparsity(records: list[dict], layout) -> np.ndarray:
    """Which parameters each stage-1 row depends on: its own GEMM or attention curve (an attention
    backward also its untimed forward's), memory_eff, launch_s where fitted, grouped_setup_s
    (grouped rows), gemm_memory_eff and gemm_overlap_p (GEMM rows), and its host_s classes."""
    index = {p: i for i, p in enumerate(layout)}
    sparsity = np.zeros((len(records), len(layout)), dtype=int)
    for i, r in enumerate(records):
        b, t = r["bench"], r["table"]
        if t:
            for f in GEMM_FIELDS:
                sparsity[i, index[(t, r["kernel"], f)]] = 1
        elif b in ("attn_fwd", "attn_bwd"):
            for f in (*SEQ_FIELDS, "rows_half"):
                if ("attention", b[5:], f) in index:
                    sparsity[i, index[("attention", b[5:], f)]] = 1
        if b == "attn_bwd":  # the timed backward starts behind its untimed forward
            for f in (*SEQ_FIELDS, "rows_half"):
                if ("attention", "fwd", f) in index:
                    sparsity[i, index[("attention", "fwd", f)]] = 1
        sparsity[i, index[("memory_eff", "", "")]] = 1
        if ("launch_s", "", "") in index:
            sparsity[i, index[("launch_s", "", "")]] = 1
        if t == "grouped_gemm":
            sparsity[i, index[("grouped_setup_s", "", "")]] = 1
        if t:
            sparsity[i, index[("gemm_memory_eff", "", "")]] = 1
            sparsity[i, index[("gemm_overlap_p", "", "")]] = 1
        for cls in row_host_classes(r):
            sparsity[i, index[("host_s", cls, "")]] = 1
    return sparsity


@dataclasses.dataclass(frozen=True, eq=False)
class _PrimitiveProblem:
    """Stage 1 as a least-squares problem: log residuals of the primitive rows' predicted time
    (the twin's cost functions under build_profile(x)) against their measured time, x laid out as
    `layout`, with its start, bounds, scales and Jacobian sparsity."""
    gpu: str
    spec: GPUSpec
    base: Profile
    layout: list
    records: list[dict]
    log_meas: np.ndarray
    x0: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    x_scale: np.ndarray
    sparsity: np.ndarray
    # the rows' predict_s in arrays, bit for bit (calibration.predict_vec); False: row by row
    # (benchmarks/fit_speed.py times the two)
    vectorized: bool = True
    _predictors: dict = dataclasses.field(default_factory=dict, init=False, repr=False)   # by rows_idx

    @classmethod
    def build(cls, gpu: str, rows: pd.DataFrame, layout, base: Profile) -> _PrimitiveProblem:
        """Start at the base profile's values (a zero half-point starts at 10), clipped to bounds."""
        x0 = np.array([_initial(base, *p) for p in layout], dtype=float)
        lo = np.array([_bounds(t, f)[0] for t, _, f in layout])
        hi = np.array([_bounds(t, f)[1] for t, _, f in layout])
        x0 = np.clip(np.where((x0 == 0) & (hi > 1), 10.0, x0), lo, hi)
        x_scale = np.array([1e-5 if t in ("launch_s", "host_s", "grouped_setup_s")
                            else (1.0 if f in ("e_max", "") else 300.0) for t, _, f in layout])
        records = rows.to_dict("records")
        return cls(gpu, gpu_spec(gpu), base, layout, records, np.log(rows["time_s"].to_numpy(float)),
                   x0, lo, hi, x_scale, _jac_sparsity(records, layout))

    def residuals(self, x, waves=None, rows_idx=None) -> np.ndarray:
        """log(predicted) - log(measured) of all rows, or of the rows `rows_idx`."""
        prof = build_profile(self.gpu, x, self.layout, self.base, wave_tiles=waves)
        recs = self.records if rows_idx is None else [self.records[i] for i in rows_idx]
        if self.vectorized:
            key = None if rows_idx is None else tuple(rows_idx)
            if key not in self._predictors:
                self._predictors[key] = PrimitivePredictor(recs, self.spec)
            pred = self._predictors[key].predict(prof)
        else:
            pred = np.array([predict_s(r, self.spec, prof) for r in recs])
        return np.log(pred) - (self.log_meas if rows_idx is None else self.log_meas[rows_idx])

    def solve(self, x_first, waves, max_nfev=400):
        """scipy least_squares from `x_first` with the curves in `waves` on the tile-wave model."""
        return least_squares(lambda x: self.residuals(x, waves), x_first, bounds=(self.lo, self.hi),
                             x_scale=self.x_scale, jac_sparsity=self.sparsity, loss="soft_l1", f_scale=0.1,
                             max_nfev=max_nfev)


def _screen_row_tile(problem: _PrimitiveProblem) -> tuple[Profile, dict]:
    """Stage 1 alone from the base profile, at most SCREEN_NFEV evaluations, no tile-wave choice:
    its cost ranks one group_row_tile against the others (fit_profile) -> (profile, {cost, x})."""
    sol = problem.solve(problem.x0, {}, SCREEN_NFEV)
    return build_profile(problem.gpu, sol.x, problem.layout, problem.base), {"cost": float(sol.cost), "x": sol.x}


def _fit_primitive_curves(problem: _PrimitiveProblem, x_start=None):
    """Stage 1 from the primitive rows -> (least_squares solution, wave tiles): every GEMM and
    attention curve jointly with the shared terms (memory_eff, gemm_memory_eff, gemm_overlap_p,
    launch_s, grouped_setup_s, host_s), from `x_start` (a screen's solution) or the base profile;
    then the tile-wave model per GEMM curve where it fits clearly better (choose_wave_tiles), and
    if any curve takes it, the joint fit again with those wave tiles."""
    x_first = problem.x0 if x_start is None else np.clip(x_start, problem.lo, problem.hi)
    sol = problem.solve(x_first, {})
    waves = choose_wave_tiles(problem.records, problem.layout, sol.x, problem.lo, problem.hi, problem.residuals)
    if waves:
        sol = problem.solve(sol.x, waves)
    return sol, waves


def _fit_side_terms(problem: _PrimitiveProblem, x, topk_rows: pd.DataFrame, cat_rows: pd.DataFrame) -> Profile:
    """The base profile with the terms measured beside stage 1, against the stage-1 profile (no
    wave tiles): the topk select cost from the topk rows (fit_topk, from its launch_s) and cat_eff
    from the `mla_qk_cat` rows (fit_cat_eff, at its memory_eff and launch_s)."""
    stage1 = build_profile(problem.gpu, x, problem.layout, problem.base)
    return dataclasses.replace(problem.base, topk=fit_topk(topk_rows, stage1.launch_s),
                               cat_eff=fit_cat_eff(cat_rows, stage1, problem.spec))


def _not_fitted(base: Profile, layout) -> list[str]:
    """Curves of `base` the fitting rows could not inform (they keep the base values); `fp8` of a
    GEMM table is not fitted when none of its FP8 kernels is."""
    fitted = {(t, k) for t, k, _ in layout}
    not_fitted = ([f"gemm.{k}" for k in base.gemm if ("gemm", k) not in fitted and k != "fp8"]
                  + [f"grouped_gemm.{k}" for k in base.grouped_gemm if ("grouped_gemm", k) not in fitted and k != "fp8"]
                  + [f"attention.{d}" for d in base.attention if ("attention", d) not in fitted])
    for table in ("gemm", "grouped_gemm"):
        if not any((table, lab) in fitted for lab in FP8_PREFERENCE[:-1]):
            not_fitted.append(f"{table}.fp8")
    return not_fitted


def _assemble_profile(problem: _PrimitiveProblem, sol, waves: dict, side: Profile, layers: tuple,
                      n_comp: int) -> tuple[Profile, dict]:
    """The fitted profile and its fit statistics: stage 1's parameters and wave tiles on `side`
    (the base with topk and cat_eff), stage 2's quant_bytes_per_elem, gather_eff and
    transpose_eff, and the host_s classes only the layers inform (held, _fit_layers)."""
    quant_b, gather_eff, transpose_eff, host2 = layers
    base = side
    if host2:  # host classes only the layers inform (primitives timed without the host)
        base = dataclasses.replace(base, host_s={**base.host_s, **host2})
    res = problem.residuals(sol.x, waves)
    stats = {"quant_bytes_per_elem": quant_b, "gather_eff": gather_eff, "transpose_eff": transpose_eff,
             "cat_eff": base.cat_eff,
             "num_composed_fit_points": n_comp,
             "host_s_from_layers": host2,
             "num_fit_points": int(len(problem.records)),
             "rms_log_residual": float(np.sqrt(np.mean(res ** 2))),
             "median_abs_rel_error_fit": float(np.median(np.abs(np.expm1(res)))),
             "cost": float(sol.cost), "optimizer_status": int(sol.status), "optimizer_message": str(sol.message),
             "parameters": {".".join(x for x in p if x): float(v) for p, v in zip(problem.layout, sol.x)},
             "wave_tiles": {f"{t}.{k}": v for (t, k), v in waves.items()},
             "not_fitted": _not_fitted(base, problem.layout)}
    return build_profile(problem.gpu, sol.x, problem.layout, base, quant_bytes_per_elem=quant_b,
                         gather_eff=gather_eff, transpose_eff=transpose_eff, wave_tiles=waves), stats


def fit_cat_eff(rows: pd.DataFrame, profile: Profile, gpu: GPUSpec) -> float:
    """Profile.cat_eff from the fitting split's `mla_qk_cat` memory rows (two torch.cat kernels over
    strided split views, real/bench.py bench_memory): the median over rows of their achieved
    bandwidth, net of two launches, as a fraction of streaming bandwidth (HBM x memory_eff).
    0.0 (= gather_eff) without rows."""
    if rows.empty:
        return 0.0
    busy_s = (rows["time_s"] - 2 * profile.launch_s).clip(lower=1e-9)
    eff = rows["bytes_moved"] / busy_s / (gpu.hbm_bytes_per_s * profile.memory_eff)
    return float(min(1.0, eff.median()))


def fit_topk(rows: pd.DataFrame, launch_s: float) -> dict:
    """Profile.topk {fixed_s, row_s, elem_s} from bench_topk rows (time = fixed_s + rows * (row_s +
    elem_s * width), least squares on log time); {} with fewer than 6 rows. fixed_s starts at
    launch_s: torch.topk launches several kernels."""
    if len(rows) < 6:
        return {}
    n, w = rows.tokens.to_numpy(float), rows.width.to_numpy(float)
    log_t = np.log(rows.time_s.to_numpy(float))

    def res(q):
        return np.log(q[0] + n * (q[1] + q[2] * w)) - log_t

    sol = least_squares(res, [max(launch_s, 1e-6), 1e-9, 1e-10], bounds=([0, 0, 0], [1e-3, 1e-6, 1e-7]),
                        x_scale=[1e-5, 1e-9, 1e-10], loss="soft_l1", f_scale=0.1)
    return {"fixed_s": float(sol.x[0]), "row_s": float(sol.x[1]), "elem_s": float(sol.x[2])}


def soft_l1_cost(res: np.ndarray, f_scale: float = 0.1) -> float:
    """scipy least_squares' soft_l1 cost of residuals (what the fit minimizes)."""
    z = (res / f_scale) ** 2
    return float(0.5 * f_scale ** 2 * np.sum(2.0 * (np.sqrt(1.0 + z) - 1.0)))


def choose_wave_tiles(records, layout, x, lo, hi, residuals) -> dict:
    """{(table, label): WAVE_TILE_CANDIDATE} for the GEMM curves whose own fitting rows are fitted
    clearly better (WAVE_CHOICE_MARGIN) with the tile-wave model: each curve's four parameters are
    refitted with the wave model on, every shared parameter held at the joint solution `x`."""
    chosen = {}
    curves = sorted({(t, k) for t, k, _ in layout if t in ("gemm", "grouped_gemm")})
    for table, label in curves:
        rows_idx = [i for i, r in enumerate(records) if r["table"] == table and r["kernel"] == label]
        idx = [j for j, (t, k, _) in enumerate(layout) if (t, k) == (table, label)]
        waves = {(table, label): WAVE_TILE_CANDIDATE}

        def sub(p, idx=idx, rows_idx=rows_idx, waves=waves):
            xx = np.array(x, dtype=float)
            xx[idx] = p
            return residuals(xx, waves, rows_idx)

        off_cost = soft_l1_cost(residuals(x, {}, rows_idx))
        fit = least_squares(sub, np.asarray(x, float)[idx], bounds=(lo[idx], hi[idx]),
                            x_scale=[1.0, 300.0, 300.0, 300.0], loss="soft_l1", f_scale=0.1, max_nfev=200)
        if soft_l1_cost(sub(fit.x)) < WAVE_CHOICE_MARGIN * off_cost:
            chosen[(table, label)] = WAVE_TILE_CANDIDATE
    return chosen


class _SeenKeys(dict):
    """A host_s dict that notes which op classes a prediction asks for."""

    def __init__(self, *a):
        super().__init__(*a)
        self.seen = set()

    def get(self, key, default=None):
        self.seen.add(key)
        return super().get(key, default)


def _fit_layers(df: pd.DataFrame, problem: _PrimitiveProblem, x, waves: dict,
                base: Profile, bf16_speed: float = 1.0,
                held_terms: tuple[float, float] | None = None) -> tuple[tuple[float, float, float, dict], int]:
    """Stage 2 from the MoE and MLA layer records of the fitting split, every primitive curve held
    at stage 1's solution (`x`, `waves`; `base`: the base profile with the side terms): what
    real/'s eager layers do beyond the primitives. Fitted: the achieved cost of unfused FP8
    quantization (quant_bytes_per_elem, bytes per element at the fitted memory roofline), the
    bandwidth of row gather/scatter kernels relative to streaming ones (gather_eff) and of
    transposed-view copies (transpose_eff, FP8 backward operands). The host dispatch time of the
    op classes stage 1 could not see (primitives timed in CUDA graphs exclude the host) is held at
    HOST_S_INITIAL, not fitted: the layers are mostly GPU-bound, so a fitted host time only soaks
    up their GPU-side residuals (2026-11-24: it drifted to 37 us on the H100 and over-predicted
    the host-bound V2-Lite MLA layers by 40-90%).
    `bf16_speed`: the BF16 GEMM curves' in-layer speed-up (L2, s14gemm; 1: as fitted).
    `held_terms`: (quant_bytes_per_elem, gather_eff) measured elsewhere (G2: alone_memory_terms),
    held while only transpose_eff is fitted.
    Returns ((quant_bytes_per_elem, gather_eff, transpose_eff, {host class: s}), rows used)."""
    gpu, spec, layout = problem.gpu, problem.spec, problem.layout
    prof = build_profile(gpu, x, layout, base, wave_tiles=waves)
    held = split(df)
    comp = df[(~held) & df.bench.isin(COMPOSED_BENCHES)]
    if len(comp) < 2 * MIN_POINTS_PER_PARAM:
        if held_terms:
            return (held_terms[0], held_terms[1], prof.transpose_eff, {}), 0
        return (prof.quant_bytes_per_elem, prof.gather_eff, prof.transpose_eff, {}), 0
    records = comp.to_dict("records")
    log_meas = np.log(comp["time_s"].to_numpy(float))
    probe = dataclasses.replace(prof, host_s=_SeenKeys(prof.host_s))
    for r in records:
        predict_s(r, spec, probe)
    fitted_host = {k for t, k, _ in layout if t == "host_s"}
    classes = sorted(probe.host_s.seen - fitted_host)

    host = {c: HOST_S_INITIAL for c in classes}
    b = dataclasses.replace(base, host_s={**base.host_s, **host})

    def residuals(q):
        p = build_profile(gpu, x, layout, b, quant_bytes_per_elem=float(q[0]), gather_eff=float(q[1]),
                          transpose_eff=float(q[2]), wave_tiles=waves)
        p = with_bf16_speed(p, bf16_speed) if bf16_speed != 1.0 else p
        return np.log([predict_s(r, spec, p) for r in records]) - log_meas

    lo, hi = GATHER_EFF_BOUNDS
    if held_terms:   # G2: transpose_eff alone, the other two held
        quant_b, gather_eff = held_terms
        sol = least_squares(lambda q: residuals([quant_b, gather_eff, q[0]]), [0.5], bounds=([lo], [hi]),
                            x_scale=[0.1], loss="soft_l1", f_scale=0.1)
        return (float(quant_b), float(gather_eff), float(sol.x[0]), host), len(records)
    sol = least_squares(residuals, [QUANT_BYTES_INITIAL, 0.8, 0.5],
                        bounds=([QUANT_BYTES_BOUNDS[0], lo, lo], [QUANT_BYTES_BOUNDS[1], hi, hi]),
                        x_scale=[10.0, 0.1, 0.1], loss="soft_l1", f_scale=0.1)
    return (float(sol.x[0]), float(sol.x[1]), float(sol.x[2]), host), len(records)


def memory_alone_rows(gpu: str, root: Path | str | None = None) -> pd.DataFrame:
    """The fitting-split rows of <gpu>/memory_alone.csv (real/campaigns/s15gl2.sh), numeric columns
    as numbers; empty without the file."""
    root = rec.records_root() if root is None else root
    path = Path(root) / gpu / MEMORY_ALONE_FILE
    if not csv_exists(path):
        return pd.DataFrame(columns=["bench", "op", "tokens", "width", "bytes_moved", "time_s"])
    df = read_csv(path)
    for c in ("tokens", "width", "bytes_moved", "time_s"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    df["op"] = df["op"].astype(str)
    df = df[df["time_s"].notna() & (df["time_s"] > 0)].reset_index(drop=True)
    return df[~split(df)].reset_index(drop=True) if len(df) else df


def fit_one_term(rows: pd.DataFrame, profile: Profile, spec: GPUSpec, field: str, initial: float,
                 bounds: tuple[float, float], x_scale: float) -> float:
    """One profile term (`field`) by least squares (soft_l1, f_scale 0.1) on the log times of
    `rows`, everything else of `profile` held."""
    records = rows.to_dict("records")
    log_meas = np.log(rows["time_s"].to_numpy(float))

    def residuals(q):
        p = dataclasses.replace(profile, **{field: float(q[0])})
        return np.log([predict_s(r, spec, p) for r in records]) - log_meas

    sol = least_squares(residuals, [initial], bounds=([bounds[0]], [bounds[1]]), x_scale=[x_scale],
                        loss="soft_l1", f_scale=0.1)
    return float(sol.x[0])


def alone_memory_terms(rows: pd.DataFrame, profile: Profile, spec: GPUSpec) -> tuple[float, float]:
    """G2 (docs/notes/s15gl2_rule.md): (quant_bytes_per_elem, gather_eff) from the memory_alone rows,
    each a one-parameter fit over the rows the twin costs with it (QUANT_OPS, GATHER_EFF_OPS), the
    stage-1 profile alone (predict_s drops in-layer factors for these rows). Raises ValueError
    without such rows (no fallback to the layers: that is G)."""
    quant, gather = rows[rows["op"].isin(QUANT_OPS)], rows[rows["op"].isin(GATHER_EFF_OPS)]
    if quant.empty or gather.empty:
        raise ValueError(f"{profile.gpu}: G2 needs fitting-split memory_alone rows of {QUANT_OPS} and "
                         f"{GATHER_EFF_OPS} ({MEMORY_ALONE_FILE}, real/campaigns/s15gl2.sh); found "
                         f"{len(quant)} and {len(gather)}")
    quant_b = fit_one_term(quant, profile, spec, "quant_bytes_per_elem", QUANT_BYTES_INITIAL, QUANT_BYTES_BOUNDS, 10.0)
    gather_eff = fit_one_term(gather, profile, spec, "gather_eff", 0.5, GATHER_EFF_BOUNDS, 0.1)
    return quant_b, gather_eff


COMPOSED_BENCHES = ("moe_layer_fwd", "moe_layer_bwd", "mla_layer_fwd", "mla_layer_bwd")


def git_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def records_digest(files: dict[str, str]) -> str:
    """One sha256 over a GPU folder's record files' sha256s (a profile's provenance `records_sha256`)."""
    return hashlib.sha256("".join(f"{k}:{v}\n" for k, v in sorted(files.items())).encode()).hexdigest()


def provenance(df: pd.DataFrame, gpu: str, stats: dict, root: Path | str | None = None) -> dict:
    root = rec.records_root() if root is None else root
    files = rec.records_sha256(gpu, root)
    env = rec.environment(df)
    return {
        "records_sha256": records_digest(files),
        "record_files_sha256": files,
        "git_commit": git_commit(),
        "fitted_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "gpu": gpu,
        "gpu_name": env.get("gpu_name", ""),
        "torch_version": env.get("torch_version", ""),
        "cuda_version": env.get("cuda_version", ""),
        "num_fit_points": stats["num_fit_points"],
        "rms_log_residual": stats["rms_log_residual"],
        "method": "scipy least_squares (soft_l1, f_scale 0.1) on log time, twin roofline; split: calibration/split.py. "
                  "Stage 1: primitive curves (grouped FP8: one curve per torch kernel configuration, "
                  "calibration.predict.grouped_kernel), memory_eff, launch_s (CUDA-graph rows), grouped_setup_s "
                  "(grouped rows), gemm_memory_eff and gemm_overlap_p (GEMM rows), host_s per op class of per-repetition "
                  "primitives; topk fixed/row/element cost from the topk rows (fit_topk); the tile-wave model kept per "
                  "curve where it cuts that curve's cost by 20% (choose_wave_tiles); group_row_tile chosen among "
                  "0/128/256 by the stage-1 cost without the wave choice; stage 2: quant_bytes_per_elem, gather_eff and transpose_eff from the fitting split's "
                  "MoE/MLA layer records, curves fixed; host_s of op classes no primitive row times is held at 20 us "
                  "(assumed, not fitted); sustained: burst/sustained time ratios per kernel class "
                  "from sustained.csv (sustained_ratios), not fitted; fp8_stack: DeepSeek-stack terms measured in "
                  "fp8_stack.csv (fp8_stack_terms: 1x128 x 1x128 weight-gradient GEMM speed, cast-kernel bandwidths), not fitted; "
                  "sm_reserve: medians of sm_reserve.csv's untold GEMMs beside held SMs (sm_reserve_terms), not fitted; "
                  "the same file validates the SM-share slowdown of told GEMMs (calibration/sm_reserve.py)",
        "stack": "real/ in eager PyTorch: fp8_quant_fused false (operands quantized by eager ops on every call), "
                 "host_s = host dispatch per op as per-repetition CUDA events see it (layers); launch_s = device-side "
                 "cost per kernel, fitted from CUDA-graph-timed kernels (records' timing column). "
                 "load_profile() simulates DeepSeek's stack with this silicon (fp8_quant_fused true: single-pass cast "
                 "kernels at the fp8_stack bandwidths, V3-recipe weight-gradient GEMMs)",
        "quant_bytes_per_elem": stats.get("quant_bytes_per_elem"),
        "gather_eff": stats.get("gather_eff"),
        "transpose_eff": stats.get("transpose_eff"),
        "num_composed_fit_points": stats.get("num_composed_fit_points"),
        "not_fitted": stats["not_fitted"],
        "group_row_tile": stats.get("group_row_tile"),
        "group_row_tile_cost": stats.get("group_row_tile_cost"),
        "host_s_from_layers": stats.get("host_s_from_layers"),
        "wave_tiles": stats.get("wave_tiles"),
        "sustained": stats.get("sustained"),
        "sustained_per_kernel": stats.get("sustained_per_kernel"),
        "fp8_stack": stats.get("fp8_stack"),
        "sm_reserve": stats.get("sm_reserve"),
        "cat_eff": stats.get("cat_eff"),
        **({"gemm_clock_mhz": stats["gemm_clock_mhz"]} if stats.get("gemm_clock_mhz") else {}),
        **({k: stats[k] for k in ("bf16_layer_speedup", "bf16_layer_clock_mhz", "bf16_records_clock_mhz")}
           if stats.get("bf16_layer_speedup") else {}),
        **({"in_layer": stats["in_layer"]} if stats.get("in_layer") else {}),
        **({"memory_alone_rows": stats["memory_alone_rows"]} if stats.get("memory_alone_rows") else {}),
        **({"collectives": stats["collectives"]} if stats.get("collectives") else {}),
        **({"partials_reduce": stats["partials_reduce"]} if stats.get("partials_reduce") else {}),
    }


# the parts fit_gpu reports done to its `on_part` callback, in order (`twin fit`'s progress bar)
FIT_PARTS = ("records", "curves", "sustained", "fp8_stack", "eager", "decode", "collectives")


def fit_gpu(gpu: str, root: Path | str | None = None, base: Profile | None = None,
            on_part: Callable[[str], None] = lambda name: None) -> tuple[Profile, dict]:
    """Fit one GPU's profile to its records under `root` -> (profile, fit statistics). `base`: the
    profile the curves start from and that terms no record informs keep (default_profile()).
    `on_part(name)` is called as each of FIT_PARTS is done. Every reader reads under `root`, those keyed by
    a GPU alone too (calibration.records.records_root)."""
    root = rec.records_root() if root is None else root
    with rec.records_root_scope(root):
        return _fit_gpu(gpu, root, base, on_part)


def _fit_gpu(gpu: str, root: Path | str, base: Profile | None, on_part: Callable[[str], None]) -> tuple[Profile, dict]:
    df = rec.load_records(gpu, root)
    on_part("records")
    alone = None
    if ADOPT_IN_LAYER_ALONE_TERMS:   # G2 (s15gl2): G's factors, GEMM ones on compute; memory terms alone
        base = dataclasses.replace(base or default_profile(), in_layer=in_layer_terms(gpu, root),
                                   in_layer_gemm_compute_only=True)
        alone = memory_alone_rows(gpu, root)
    elif ADOPT_IN_LAYER_FACTORS:   # G (s15gl): stage 2 and everything after it under the in-layer factors
        base = dataclasses.replace(base or default_profile(), in_layer=in_layer_terms(gpu, root))
    prof, stats = fit_profile(df, gpu, base, alone_rows=alone)
    on_part("curves")
    if alone is not None:
        stats["memory_alone_rows"] = int(len(alone))
    if prof.in_layer:
        stats["in_layer"] = dict(prof.in_layer)
    ratios, per_kernel = sustained_ratios(Path(root) / gpu / "sustained.csv")
    if ADOPT_GEMM_LAYER_SPEED:   # L2: the sustained BF16 curves stay what the records' loops sustain
        stats["bf16_layer_speedup"], stats["bf16_layer_clock_mhz"], stats["bf16_records_clock_mhz"] = bf16_layer_speedup(df)
    if ADOPT_GEMM_LAYER_CLOCK:   # the curves describe the in-layer clock (s14gemm)
        clocks = layer_gemm_clock_mhz(df)
        prof = dataclasses.replace(prof, gemm_clock_mhz=clocks)
        ratios, per_kernel = sustained_at_curve_clock(per_kernel, clocks)
        stats["gemm_clock_mhz"] = clocks
    stats["sustained"], stats["sustained_per_kernel"] = ratios, per_kernel
    on_part("sustained")
    stack = fp8_stack_terms(Path(root) / gpu / "fp8_stack.csv", gpu_spec(gpu).hbm_bytes_per_s)
    stats["fp8_stack"] = stack
    stats["sm_reserve"] = reserve = sm_reserve_terms(gpu, root)
    on_part("fp8_stack")
    prof = dataclasses.replace(prof, eager=eager_terms(gpu, prof, df, root),
                               attention_kernels=attention_kernel_terms(gpu, root),
                               attention_dropout=attention_dropout_terms(gpu, root),
                               attention_dropout_prob_s=attention_dropout_prob_terms(gpu, root),
                               attention_dropout_kernel=attention_dropout_kernel_terms(gpu, root))
    prof = dataclasses.replace(prof, eager_elementwise_eff=eager_elementwise_eff(gpu, prof, root))
    on_part("eager")
    prof = with_decode_terms(prof, decode_terms(gpu, prof, root))   # real/'s eager decode GEMMs (decode_gemm.csv)
    on_part("decode")
    collectives, stats["collectives"] = collectives_terms(gpu, root)
    reduce_eff, stats["partials_reduce"] = partials_reduce_terms(gpu, root, prof)   # <gpu>x2/async_tp.csv
    prof = dataclasses.replace(prof, partials_reduce_eff=reduce_eff)
    prov = provenance(df, gpu, stats, root)
    on_part("collectives")
    return dataclasses.replace(prof, calibrated=True, provenance=prov, sustained=ratios, fp8_stack=stack,
                               sustained_curves=sustained_at_layer_speed(sustained_curve_ratios(per_kernel, prof), ratios,
                                                                         prof.bf16_layer_speedup),
                               sustained_vs_curve=sustained_vs_curve(per_kernel, prof, gpu_spec(gpu)),
                               sm_reserve=reserve, collectives=collectives), stats


def in_layer_terms(gpu: str, root: Path | str | None = None) -> dict:
    """Profile.in_layer from a GPU's s14gl folders (IN_LAYER_FOLDERS; fitting-split rows only):
    calibration.gemm_in_layer.in_layer_factors over their paired calls. {} without such a folder."""
    root = rec.records_root() if root is None else root
    pairs = []
    for folder in sorted((Path(root) / gpu).glob(IN_LAYER_FOLDERS)):
        if not csv_exists(folder / "gl_ops.csv"):
            continue
        _, ops = gemm_in_layer.read_folder(folder)
        pairs.append(gemm_in_layer.paired_calls(ops[ops["split"] == "fit"]))
    return gemm_in_layer.in_layer_factors(pd.concat(pairs, ignore_index=True)) if pairs else {}


# sm_reserve.csv precision -> the twin's: FP8 is DeepSeek's 1x128 x 128x128 recipe
SM_RESERVE_PRECISIONS = {"bf16": "bf16", "fp8-blockwise": "fp8"}


def sm_reserve_terms(gpu: str, root: Path | str | None = None) -> dict:
    """Profile.sm_reserve from real/bench.py bench_sm_reserve rows (measured, not fitted): for GEMMs
    not told that communication holds some SMs (mode spin: beside a kernel holding them), the median
    over the V3 projection shapes and trials of time beside / paired time alone, per held-SM count,
    with (0, 1.0) first. {} without the file."""
    root = rec.records_root() if root is None else root
    df = sm_reserve.load(gpu, root)
    if df.empty:
        return {}
    out = {}
    untold = sm_reserve.with_slowdowns(df[df["mode"] == "spin"])
    for label, prec in SM_RESERVE_PRECISIONS.items():
        g = untold[untold["precision"] == label]
        if not g.empty:
            med = g.groupby("reserved_sms")["measured"].median()
            out[f"untold_{prec}"] = [(0, 1.0)] + [(int(n), float(r)) for n, r in med.items()]
    return out


def fp8_stack_terms(path: Path, hbm_bytes_per_s: float) -> dict:
    """Profile.fp8_stack from real/bench.py bench_fp8_stack rows (measured, not fitted):
    wgrad_1d1d_speed = median over weight-gradient shapes of time(fp8-blockwise) / time(fp8-1d1d-f32),
    and per cast kernel the median achieved bandwidth over its shapes / the GPU's HBM bandwidth,
    plus the P10-P90 range of the speed ratio for uncertainty analysis. {} without the file."""
    if not csv_exists(path):
        return {}
    df = read_csv(path)
    out = {}
    w = df[df.bench == "gemm_wgrad"].pivot_table(index=["m", "n", "k"], columns="precision", values="time_s")
    if {"fp8-blockwise", "fp8-1d1d-f32"} <= set(w.columns):
        ratio = (w["fp8-blockwise"] / w["fp8-1d1d-f32"]).dropna()
        out.update(wgrad_1d1d_speed=float(ratio.median()), wgrad_1d1d_speed_p10=float(ratio.quantile(0.1)),
                   wgrad_1d1d_speed_p90=float(ratio.quantile(0.9)))
    casts = df[df.bench == "cast"]
    for op, g in casts.groupby("op"):
        kind = "cast" if op == "cast_1x128" else op
        out[f"{kind}_eff"] = float(g.achieved_bytes_per_s.median() / hbm_bytes_per_s)
    return out


def kernel_class(config: str) -> str:
    """sustained.csv config -> Profile.sustained class."""
    if config.startswith(("gemm", "grouped_gemm")):
        return "gemm"
    return "attention" if config.startswith("attention") else "memory"


def sustained_curve_ratios(per_kernel: list, prof: Profile) -> dict:
    """Profile.sustained_curves: each measured GEMM kernel's own burst/sustained ratio (sustained_ratios'
    per-kernel rows), keyed "<gemm|grouped_gemm>/<label>" for the profile curve of that precision
    label and for any label that holds the same curve (the twin's "fp8" is a copy of one kernel's)."""
    out = {}
    for k in per_kernel:
        table = k["config"].split(" ", 1)[0]
        curves = {"gemm": prof.gemm, "grouped_gemm": prof.grouped_gemm}.get(table)
        if curves is None or k["precision"] not in curves:
            continue
        own = curves[k["precision"]]
        for label, curve in curves.items():
            if label == k["precision"] or curve == own:
                out[f"{table}/{label}"] = float(k["ratio"])
    return out


# s25dense (docs/notes/s25dense_rule.md): the GEMM curves whose sustained ratio is also taken against
# the curve itself (Profile.sustained_vs_curve; used where twin.costs.profile.ADOPT_SUSTAINED_VS_CURVE
# names the GPU): the dense BF16 curve, the one the rule's fresh held rows judge
VS_CURVE_LABELS = ("gemm/bf16",)


def held_gemm_shape(config: str) -> tuple[int, int, int] | None:
    """(m, n, k) of a sustained.csv dense GEMM config ('gemm m=8192 n=4096 k=7168'); None otherwise."""
    table, *dims = config.split()
    if table != "gemm":
        return None
    d = dict(x.split("=") for x in dims)
    return int(d["m"]), int(d["n"]), int(d["k"])


def sustained_vs_curve(per_kernel: list, prof: Profile, spec: GPUSpec, labels: tuple = VS_CURVE_LABELS) -> dict:
    """Profile.sustained_vs_curve: for each listed GEMM curve whose kernel sustained.csv held
    (sustained_ratios' per-kernel rows), the fitted curve's own time at the held shape
    (compute.gemm_time_s on the profile as it predicts the records, in-layer factors cleared) over
    the held time: the ratio that maps the curve onto the held kernel. sustained_curves' ratio maps the
    burst row instead, which runs at boost clocks that differ from the curve's loops and from card to
    card. E.g. H100 BF16 8192 x 4096 x 7168: curve 0.665 ms, held 0.698 ms -> 0.953 (the burst row,
    0.630 ms, gave 0.902)."""
    out = {}
    for k in per_kernel:
        shape, key = held_gemm_shape(k["config"]), f"gemm/{k['precision']}"
        if shape is None or key not in labels or k["precision"] != "bf16":
            continue
        curve_s = compute.gemm_time_s(*shape, "bf16", spec, prof.alone())
        out[key] = float(curve_s / k["sustained_s"])
    return out


def sustained_ratios(path: Path) -> tuple[dict, list]:
    """Per kernel class, the median over its kernels of burst time / sustained time, from
    real/bench.py bench_sustained rows: `burst` is the CUDA-graph timing every other record uses,
    `sustained` the windows of 30 s of back-to-back replays, of which the second half (steady
    clocks and temperature) is averaged. ({}, []) without the file."""
    if not csv_exists(path):
        return {}, []
    df = read_csv(path)
    per_kernel = []
    for (config, prec), g in df.groupby(["config", "precision"], sort=False):
        burst = g[g.phase == "burst"]
        windows = g[g.phase == "sustained"]
        steady = windows[windows.window > windows.window.max() / 2]
        if burst.empty or steady.empty:
            continue
        per_kernel.append({"config": config, "precision": prec, "class": kernel_class(config),
                           "burst_s": float(burst.time_s.iloc[0]), "sustained_s": float(steady.time_s.mean()),
                           "burst_sm_clock_mhz": float(burst.sm_clock_mhz.iloc[0]),
                           "ratio": float(burst.time_s.iloc[0] / steady.time_s.mean()),
                           "sustained_sm_clock_mhz": float(steady.sm_clock_mhz.mean()),
                           "sustained_power_w": float(steady.power_w.mean())})
    return class_ratios(per_kernel), per_kernel


def sustained_at_layer_speed(curves: dict, ratios: dict, speedup: float) -> dict:
    """Profile.sustained_curves under L2: each BF16 GEMM curve's ratio (its own, else the gemm
    class's) over the in-layer speed-up, so its sustained curve is the records' loop curve x ratio,
    as without L2. Unchanged where speedup is 0 (no L2)."""
    if not speedup:
        return curves
    out = dict(curves)
    for table, label in BF16_GEMM_CURVES:
        key = f"{table}/{label}"
        out[key] = out.get(key, ratios.get("gemm", 1.0)) / speedup
    return out


def class_ratios(per_kernel: list) -> dict:
    """Profile.sustained: per kernel class, the median of its kernels' ratios."""
    return {cls: float(np.median([k["ratio"] for k in per_kernel if k["class"] == cls]))
            for cls in sorted({k["class"] for k in per_kernel})}


def sustained_at_curve_clock(per_kernel: list, clocks: dict) -> tuple[dict, list]:
    """The sustained ratios against GEMM curves fitted at the in-layer clock (s14gemm): a GEMM
    kernel's burst row ran at its own clock (1,350-1,500 MHz), so its ratio to the curve is the
    burst/sustained ratio x clock_factor of the burst row: the sustained curves stay at the
    sustained (power-limited) state, not the layer's. Other classes unchanged."""
    out = [{**k, "ratio": k["ratio"] * clock_factor(k["precision"], k.get("burst_sm_clock_mhz"), clocks)}
           if k["class"] == "gemm" else k for k in per_kernel]
    return class_ratios(out), out


def write_profile(profile: Profile, out_dir: Path | str = PROFILES_DIR) -> Path:
    path = Path(out_dir) / f"{profile.gpu}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(profile.to_json(), indent=1, sort_keys=False) + "\n")
    return path


# s26refit: the fit-input manifest. `twin fit` writes beside the profiles it writes (FIT_INPUTS_FILE) the
# record files each GPU's fit read (records_io.read_scope: every read_csv / open_csv during fit_gpu) with
# the sha256 of their decompressed bytes, and the profile's provenance carries the digest of that list
# (`fit_inputs_sha256`). `twin fit --inputs FILE` refits from the records a manifest names and no
# others; `twin validate` names the records that changed since, or that the fit would read and the
# manifest lacks (fit_inputs_status).
FIT_INPUTS_FILE = "fit_inputs.json"
# s26refit's candidate (docs/notes/s26refit_rule.md): the committed profiles are one whole `twin fit` of
# the records the committed manifest names (True), not the 2026-11-24 fit with later per-term writes
ADOPT_REFIT_ALL_RECORDS = False
# The records fit_gpu reads, relative to the records root ({gpu}: the GPU folder's name). Declared so that
# validate can name a record the fit would read and the manifest lacks without running the fit;
# tests/calibration/test_fit_inputs.py holds it equal to what a traced fit of the committed records read.
FIT_INPUT_GLOBS = (
    *(f"{{gpu}}/{family}.csv" for family in rec.TIMED_FAMILIES),            # stage 1 and 2 (load_records)
    "{gpu}/sustained.csv", "{gpu}/fp8_stack.csv", "{gpu}/sm_reserve.csv",   # measured, not fitted
    "{gpu}/kernels.csv", "{gpu}/host_dispatch.csv", "{gpu}/step_kernels.csv",   # eager terms (layer_gaps)
    "{gpu}x2/pipeline_op_kernels.csv", "{gpu}x4/pipeline_op_kernels.csv", "{gpu}x2/s14epl_*/ep_kernels.csv",
    "{gpu}/dense_block.csv", "{gpu}/dense_kernels.csv", "{gpu}/dense_dropout.csv",   # dense block terms
    "{gpu}/dense_dropout_kernels.csv", "{gpu}/s28mlm2/dense_dropout.csv",            # dropout kernel factor
    "{gpu}/s28mlm2/dense_dropout_kernels.csv",                                       # (s28mlm3)
    "{gpu}/decode_gemm.csv",                                                 # decode terms
    "{gpu}x2/nccl.csv",                                                      # collectives
    "{gpu}/atp_parts.csv", "{gpu}x2/async_tp.csv", "{gpu}x4/async_tp.csv",   # partials_reduce_eff
)


def fit_input_globs() -> tuple[str, ...]:
    """FIT_INPUT_GLOBS with the records the switched-on candidates add (memory_alone rows, s14gl folders)."""
    extra = ((f"{{gpu}}/{MEMORY_ALONE_FILE}",) if ADOPT_IN_LAYER_ALONE_TERMS else ()) + \
        ((f"{{gpu}}/{IN_LAYER_FOLDERS}/gl_ops.csv", f"{{gpu}}/{IN_LAYER_FOLDERS}/gl_layer.csv")
         if ADOPT_IN_LAYER_FACTORS or ADOPT_IN_LAYER_ALONE_TERMS else ())
    return FIT_INPUT_GLOBS + extra


def profile_files(profiles_dir: Path | str = PROFILES_DIR) -> list[Path]:
    """The profiles of a folder (<gpu>.json), without the fit-input manifest beside them."""
    return sorted(p for p in Path(profiles_dir).glob("*.json") if p.name != FIT_INPUTS_FILE)


def record_name(path: Path | str, root: Path | str) -> str:
    """A record as the manifest names it: its plain name (X.csv) relative to the records root, with '/';
    a record outside the root (read by a module that reads calibration/measurements whatever the root:
    calibration.b_kernels, bwd_grouped, index_put, ...) relative to calibration/measurements."""
    key = record_key(path)
    for base in (os.path.abspath(root), os.path.abspath(rec.MEASUREMENTS_DIR)):
        if key.startswith(base + os.sep):
            return Path(os.path.relpath(key, base)).as_posix()
    return Path(key).as_posix()


def fit_input_candidates(gpu: str, root: Path | str | None = None) -> dict[str, Path]:
    """{record name: file} of the records under `root` that fit_input_globs() match for `gpu`."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    out = {}
    for pattern in fit_input_globs():
        folder, _, name = pattern.format(gpu=gpu).rpartition("/")
        for sub in sorted(root.glob(folder)) if any(c in folder for c in "*?[") else [root / folder]:
            for path in glob_csv(sub, name):
                out[record_name(path, root)] = path
    return dict(sorted(out.items()))


def input_scope(root: Path | str, inputs: dict) -> set[str]:
    """The record keys a fit from a manifest's records (`inputs`, {name: sha256}) under `root` may read: each
    under `root`, and under calibration/measurements where `root` is another folder and the record there is
    the manifest's (the modules that read it whatever the root, record_name)."""
    root = Path(root)
    allowed = {record_key(root / name) for name in inputs}
    if os.path.abspath(root) != os.path.abspath(rec.MEASUREMENTS_DIR):
        tree = rec.MEASUREMENTS_DIR
        allowed |= {record_key(tree / n) for n, sha in inputs.items()
                    if csv_exists(tree / n) and csv_sha256(tree / n) == sha}
    return allowed


def fit_gpu_inputs(gpu: str, root: Path | str | None = None, inputs: dict | None = None,
                   on_part: Callable[[str], None] = lambda name: None) -> tuple[Profile, dict, dict, list]:
    """fit_gpu, watched -> (profile, stats, {record name: sha256} of the records it read, the records on
    disk it asked for and was refused). `inputs`: a manifest's records of this GPU; the fit then sees
    those and no other (records_io.read_scope): under `root`, and under calibration/measurements where
    `root` is another folder and the record there is the manifest's (the modules that read it whatever
    the root, record_name). The profile's provenance gains `fit_inputs_sha256`, records_digest of what
    it read."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    allowed = None if inputs is None else input_scope(root, inputs)
    with read_scope(allowed) as scope:
        prof, stats = fit_gpu(gpu, root, on_part=on_part)
    read = {record_name(k, root): csv_sha256(k) for k in sorted(scope.read)}
    refused = sorted(record_name(k, root) for k in scope.refused)
    prof = dataclasses.replace(prof, provenance={**prof.provenance, "fit_inputs_sha256": records_digest(read)})
    return prof, stats, dict(sorted(read.items())), refused


def read_fit_inputs(path: Path | str) -> dict:
    """A fit-input manifest ({} where there is none): {gpu: {"fit_inputs_sha256", "git_commit",
    "fitted_utc", "records": {record name: sha256}}}."""
    path = Path(path)
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a JSON object of GPU entries, not {type(data).__name__}")
    return {k: v for k, v in data.items() if k != "about"}


def write_fit_inputs(gpu: str, provenance: dict, records: dict, out_dir: Path | str = PROFILES_DIR,
                     note: str = "") -> Path:
    """Write (or replace) `gpu`'s entry of the fit-input manifest in `out_dir` (its profile's `provenance`
    gives the commit and time); other GPUs' entries stay."""
    path = Path(out_dir) / FIT_INPUTS_FILE
    entries = read_fit_inputs(path)
    entries[gpu] = {"fit_inputs_sha256": records_digest(records), "git_commit": provenance.get("git_commit", ""),
                    "fitted_utc": provenance.get("fitted_utc", ""), **({"note": note} if note else {}),
                    "records": dict(sorted(records.items()))}
    about = ("The record files `twin fit` read for each profile of this folder (names relative to the records "
             "root, calibration/measurements; sha256 of the decompressed bytes). `twin fit --inputs` refits from "
             "exactly these; `twin validate` names the records changed since or not listed here.")
    data = {"about": about, **dict(sorted(entries.items()))}
    write_text(path, json.dumps(data, indent=1) + "\n")
    return path


def manifest_records_status(records: dict, root: Path | str | None = None) -> dict:
    """{record name: (manifest sha256, sha256 now or None where missing)} of the manifest records under
    `root` that are not as the manifest names them (empty: all are)."""
    root = rec.records_root() if root is None else root
    root = Path(root)
    out = {}
    for name, want in records.items():
        got = csv_sha256(root / name) if csv_exists(root / name) else None
        if got != want:
            out[name] = (want, got)
    return out


def fit_inputs_status(gpu: str, profile: dict, root: Path | str | None = None,
                      manifest: dict | None = None) -> dict:
    """Whether `profile` (a profile JSON) was fitted on the records under `root` as they are now, and the
    records that say otherwise: {"fitted_on_these_records", "compared", "changed", "missing", "added"}.
    compared "manifest": the GPU's manifest entry is the one the profile's provenance names (its
    fit_inputs_sha256); changed / missing: its records that now differ or are gone; added: records the fit
    would read (fit_input_candidates) that it does not list. compared "provenance" (a profile fitted
    before s26refit, or a manifest of another fit): the provenance's record_files_sha256, which holds the
    GPU folder's files only, against the fit's candidates in that folder."""
    root = rec.records_root() if root is None else root
    prov = profile.get("provenance", {})
    entry = (manifest or {}).get(gpu)
    candidates = fit_input_candidates(gpu, root)
    if entry and entry.get("fit_inputs_sha256") == prov.get("fit_inputs_sha256"):
        then, compared = entry["records"], "manifest"
    else:
        patterns = [p.format(gpu=gpu) for p in fit_input_globs()]
        then = {f"{gpu}/{n}": sha for n, sha in prov.get("record_files_sha256", {}).items()
                if any(fnmatch.fnmatchcase(f"{gpu}/{n}", p) for p in patterns)}
        candidates = {n: p for n, p in candidates.items() if n.startswith(f"{gpu}/")}
        compared = "provenance"
    status = manifest_records_status(then, root)
    changed = sorted(n for n, (_, got) in status.items() if got is not None)
    missing = sorted(n for n, (_, got) in status.items() if got is None)
    added = sorted(n for n in candidates if n not in then)
    return {"fitted_on_these_records": not (changed or missing or added), "compared": compared,
            "changed": changed, "missing": missing, "added": added}

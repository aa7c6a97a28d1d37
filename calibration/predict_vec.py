"""The fit's stage 1 in arrays: `calibration.predict.predict_s` of many primitive record rows
under one trial profile at a time, bit for bit.

The fit (calibration.fit._PrimitiveProblem) evaluates every fitting row under each of thousands
of trial profiles; predict_s builds an Eager op list per row and walks the twin's cost functions
in Python, which was ~90% of a fit's time (the synthetic H100 fit of tests/calibration: 74 s of
CPU). Here the rows are sorted once into blocks of one cost function, one curve and one timing
method (dense GEMM, grouped GEMM, its weight-gradient form, attention forward and backward,
streaming memory kernels), everything that does not depend on the profile (FLOPs, bytes, tiles,
clamped dimensions) is computed once per row with the scalar code's own expressions, and each
trial profile costs one pass of numpy operations per block.

The results are the same floats, not close ones: each row goes through the same IEEE operations
in the same order as twin.costs.compute does (elementwise +, -, *, / are correctly rounded in
numpy as in Python), a grouped GEMM's per-group compute times are summed group by group as
grouped_gemm_time_s sums them, and the roofline's p-norm uses Python's `**` per row (numpy's
power runs SIMD code on AVX-512 hosts that differs from libm's pow in the last bit for ~5% of
arguments). So a fit takes the same optimiser steps and writes the same profile
(tests/calibration/test_predict_vec.py checks equality row by row, benchmarks/fit_speed.py the
time). Rows of a kind not listed above, and every row under profile features these blocks do not
model (GEMM curves at an in-layer clock or speed, the GEMM alignment switches), go through
predict_s itself.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from calibration.predict import (ALONE_BENCHES, alone_profile, grouped_kernel, label_wgrad_curve, predict_s, timing_of,
                                 twin_precision)
from twin.costs import compute
from twin.costs.flops import BF16_BYTES, FP8_BYTES, Op, OpKind, attention_bwd_flops, gemm_bytes
from twin.costs.profile import Profile
from twin.core.specs import GPUSpec

TIMED_REPS = 3   # calibration.predict.timed_window_s's repetitions


def _max1(values) -> np.ndarray:
    """max(v, 1) per value, as the curves' eff() clamps each dimension."""
    return np.array([float(max(v, 1)) for v in values])


def roofline_s(compute_s: np.ndarray, memory_s: np.ndarray, p: float) -> np.ndarray:
    """twin.costs.compute.roofline_s per row; the p-norm's powers with Python's `**` (libm pow)."""
    if p <= 0:
        return np.maximum(compute_s, memory_s)
    hi = np.maximum(compute_s, memory_s)
    with np.errstate(invalid="ignore", divide="ignore"):
        rc, rm = (compute_s / hi).tolist(), (memory_s / hi).tolist()
    inv = 1.0 / p
    norm = np.array([(a ** p + b ** p) ** inv for a, b in zip(rc, rm)])
    return np.where(hi <= 0, 0.0, hi * norm)


def window_s(timing: str, setup: list, timed: list) -> np.ndarray:
    """calibration.predict.window_s for a block of rows: ops are (host seconds, GPU seconds per row)."""
    if timing == "cuda_graph":
        total = timed[0][1]
        for _, g in timed[1:]:
            total = total + g
        return total
    if timing == "batched_events":
        return np.maximum(sum(h for h, _ in timed), sum(g for _, g in timed))
    host = gpu = start = 0.0

    def run(ops):
        nonlocal host, gpu
        for h, g in ops:
            host = host + h
            gpu = np.maximum(gpu, host) + g

    for _ in range(TIMED_REPS):
        run(setup)
        start = gpu = np.maximum(gpu, host)
        run(timed)
    return gpu - start


class _Block:
    """Rows (indices into the records) of one cost function, curve and timing method."""

    def __init__(self, idx: list[int], timing: str):
        self.idx, self.timing = np.array(idx, dtype=int), timing

    def ops(self, prof: Profile, gpu: GPUSpec) -> tuple[list, list]:
        raise NotImplementedError

    def scalar(self, prof: Profile) -> bool:
        """True where the profile or the switches ask for what the block does not model."""
        return False


class _DenseGemm(_Block):
    """bench gemm: Eager.gemm -> compute.gemm_time_s, one kernel (groups 1, aligned widths)."""

    def __init__(self, idx, timing, label: str, rows: list[dict], gpu: GPUSpec):
        super().__init__(idx, timing)
        self.label, self.prec = label, twin_precision(label)
        m = [int(r["m"]) for r in rows]
        n = [int(r["n"]) for r in rows]
        k = [int(r["k"]) for r in rows]
        self.mnk = list(zip(m, n, k))
        self.m1, self.n1, self.k1 = _max1(m), _max1(n), _max1(k)
        groups = 1
        in_bytes = FP8_BYTES if self.prec == "fp8" else BF16_BYTES
        self.flops = np.array([2.0 * a * b * c * groups for a, b, c in self.mnk])
        self.bytes = np.array([groups * gemm_bytes(a, b, c, in_bytes, BF16_BYTES) for a, b, c in self.mnk])
        self.peak = gpu.peak_flops_per_s(self.prec)
        self._waves: dict[int, np.ndarray] = {}
        self.gpu = gpu

    def scalar(self, prof):
        return self.prec == "bf16" and (compute.ADOPT_GEMM_ALIGNMENT or compute.ADOPT_GEMM_ALIGNMENT_PATTERN
                                        or compute.ADOPT_GEMM_ALIGNMENT_CURVE)

    def wave(self, tile: int) -> np.ndarray:
        if tile not in self._waves:
            self._waves[tile] = np.array([compute.wave_factor(1 * compute._tiles(a, b, tile), self.gpu, tile, 1.0)
                                          for a, b, _ in self.mnk])
        return self._waves[tile]

    def ops(self, prof, gpu):
        p = prof   # profile_for_label replaces only the curves: _curve looks the one up
        curve = _curve(p.gemm, self.label, self.prec)
        eff = curve.e_max / (1.0 + curve.m_half / self.m1 + curve.n_half / self.n1 + curve.k_half / self.k1)
        compute_s = self.flops / (self.peak * eff)
        tile = curve.wave_tile or p.wave_tile
        if tile > 0:
            compute_s = compute_s * self.wave(tile)
        memory_s = self.bytes / (gpu.hbm_bytes_per_s * p.gemm_streaming_eff)
        in_layer = p.in_layer_factor(compute.gemm_class("gemm", self.prec))
        compute_s, kernel_factor = compute.in_layer_gemm_split(p, compute_s, in_layer)
        gpu_s = (roofline_s(compute_s, memory_s, p.gemm_overlap_p) + p.launch_s + 0.0) * kernel_factor
        return [], [(prof.host(f"gemm.{self.label}"), gpu_s)]


class _GroupedGemms:
    """Every grouped_gemm row (transposed False) and grouped_gemm_wgrad row (True): Eager.grouped ->
    compute.grouped_gemm_time_s over `groups` equal groups of tokens_per_group rows. The per-group
    compute times are summed group by group as there, for all rows at once: rows sorted by group
    count, largest first, so the rows still summing after j groups are a prefix. `kinds`:
    {(label, kernel, transposed, timing): record indices}."""

    def __init__(self, kinds: dict, records: list[dict], gpu: GPUSpec):
        entries = sorted(((int(records[i]["groups"]), s, i) for s, idx in enumerate(kinds.values()) for i in idx),
                         key=lambda e: -e[0])
        self.idx = np.array([i for _, _, i in entries], dtype=int)
        sub_of = np.array([s for _, s, _ in entries], dtype=int)
        self.kinds = [(*key, np.flatnonzero(sub_of == s)) for s, key in enumerate(kinds)]
        rows = [records[i] for i in self.idx]
        self.groups = [int(r["groups"]) for r in rows]
        self.rows = [int(r["tokens_per_group"]) for r in rows]
        self.n = [int(r["n"]) for r in rows]
        self.k = [int(r["k"]) for r in rows]
        self.transposed = [False] * len(rows)
        in_bytes = [BF16_BYTES] * len(rows)
        for label, _, transposed, _, pos in self.kinds:
            for j in pos:
                self.transposed[j] = transposed
                in_bytes[j] = FP8_BYTES if twin_precision(label) == "fp8" else BF16_BYTES
        self.bytes = np.array([self._bytes(*a) for a in zip(self.groups, self.rows, self.n, self.k, in_bytes)])
        self.active = [sum(g > j for g in self.groups) for j in range(max(self.groups))]
        self.gpu = gpu
        self._static: dict[int, tuple] = {}
        self._waves: dict[tuple, np.ndarray] = {}

    @staticmethod
    def _bytes(groups: int, rows: int, n: int, k: int, in_bytes: float) -> float:
        total = 0.0
        for _ in range(groups):
            total += gemm_bytes(rows, n, k, in_bytes)
        return total

    def static(self, row_tile: int) -> tuple:
        """(the curve's three clamped dimensions, FLOPs per group) of every row at a group_row_tile."""
        if row_tile not in self._static:
            run = [r if t else compute.padded_group_rows(r, row_tile) for r, t in zip(self.rows, self.transposed)]
            dims = [(n, k, r) if t else (r, n, k) for r, n, k, t in zip(run, self.n, self.k, self.transposed)]
            flops = np.array([2.0 * r * n * k for r, n, k in zip(run, self.n, self.k)])
            self._static[row_tile] = (*(_max1(d) for d in zip(*dims)), flops)
        return self._static[row_tile]

    def wave(self, pos: np.ndarray, tile: int) -> np.ndarray:
        """wave_factor of the rows at `pos` (one kind) under tile-wave tile `tile`."""
        key = (int(pos[0]), tile)
        if key not in self._waves:
            out = []
            for j in pos:
                tiles = 0
                for _ in range(self.groups[j]):
                    tiles += (compute._tiles(self.n[j], self.k[j], tile) if self.transposed[j]
                              else compute._tiles(self.rows[j], self.n[j], tile))
                out.append(compute.wave_factor(tiles, self.gpu, tile, 1.0) * 1.0)
            self._waves[key] = np.array(out)
        return self._waves[key]

    def fill(self, prof: Profile, gpu: GPUSpec, out: np.ndarray) -> None:
        a1, b1, c1, flops = self.static(prof.group_row_tile)
        per_group, wave, in_layer = np.empty(len(self.idx)), np.empty(len(self.idx)), np.empty(len(self.idx))
        for label, kernel, transposed, _, pos in self.kinds:
            prec = twin_precision(label)
            curve = _curve(prof.grouped_gemm, kernel, prec)
            if transposed:   # profile_for_label's: an FP8 label's own weight-gradient curve first
                own = (label_wgrad_curve(prof.grouped_gemm, label) if prec == "fp8" and label != "fp8"
                       else prof.grouped_gemm.get(compute.wgrad_curve(prec)))
                curve = curve if own is None else own
            eff = curve.e_max / (1.0 + curve.m_half / a1[pos] + curve.n_half / b1[pos] + curve.k_half / c1[pos])
            per_group[pos] = flops[pos] / (gpu.peak_flops_per_s(prec) * 1.0 * eff)
            wave[pos] = self.wave(pos, curve.wave_tile or prof.wave_tile)
            in_layer[pos] = prof.in_layer_factor(compute.gemm_class("grouped_gemm", prec))
        compute_s = np.zeros(len(self.idx))
        for active in self.active:
            compute_s[:active] += per_group[:active]
        compute_s = compute_s * wave
        memory_s = self.bytes / (gpu.hbm_bytes_per_s * prof.gemm_streaming_eff)
        compute_s, kernel_factor = compute.in_layer_gemm_split(prof, compute_s, in_layer)
        gpu_s = ((roofline_s(compute_s, memory_s, prof.gemm_overlap_p) + prof.launch_s + prof.grouped_setup_s)
                 * kernel_factor)
        for label, _, _, timing, pos in self.kinds:
            out[self.idx[pos]] = window_s(timing, [], [(prof.host(f"grouped_gemm.{label}"), gpu_s[pos])])


def _curve(curves: dict, label: str, prec: str):
    """The `prec` curve of a GEMM table under profile_for_label(profile, label): an FP8 kernel
    label's own curve where the table has one, else the table's fp8 curve."""
    if twin_precision(label) == "bf16" or label == "fp8":
        return curves[prec]
    return curves.get(label, curves["fp8"]) if prec == "fp8" else curves[prec]


class _Attention(_Block):
    """bench attn_fwd / attn_bwd: Eager.attention -> compute.attention_time_s; a backward row's
    timing starts behind its untimed forward (setup)."""

    def __init__(self, idx, timing, backward: bool, rows: list[dict], gpu: GPUSpec):
        super().__init__(idx, timing)
        self.backward = backward
        self.op = [Op("attn_core", OpKind.ATTENTION, "attn", batch=int(r["batch"]), seq_len=int(r["seq_len"]),
                      heads=int(r["num_heads"]), qk_dim=int(r["qk_head_dim"]), v_dim=int(r["v_head_dim"]),
                      causal=bool(r["causal"]), precision="bf16") for r in rows]
        length = [max(op.seq_len, op.kv_len) for op in self.op]
        self.len1 = _max1(length)
        self.rows1 = _max1([op.batch * op.heads * op.seq_len / max(1.0, 1e-3) for op in self.op])
        self.flops = {"fwd": np.array([op.flops for op in self.op]),
                      "bwd": np.array([attention_bwd_flops(op.batch, op.seq_len, op.heads, op.qk_dim, op.v_dim,
                                                           op.causal, op.kv_len) for op in self.op])}
        self.rate = {d: np.array([gpu.attention_flops_per_s(d, n) for n in length]) for d in ("fwd", "bwd")}
        self._shape: dict[tuple, np.ndarray] = {}   # fa2_shape_factor per row, by what it reads

    def scalar(self, prof):
        return any(op.dropout > 0 for op in self.op)

    def time_s(self, direction: str, prof: Profile) -> np.ndarray:
        curve = prof.attention[direction]
        eff = curve.e_max / (1.0 + curve.s_half / self.len1 + curve.rows_half / self.rows1)
        key = (prof.attention_curves_kernel, compute.ADOPT_FA2_FEW_HEADS_FACTOR, compute.ADOPT_FA2_FEW_QUERIES_FACTOR,
               tuple(compute.FA2_SHAPE_TIME_FACTOR.items()))
        if key not in self._shape:
            self._shape[key] = np.array([compute.fa2_shape_factor(op, prof) for op in self.op])
        shape = self._shape[key]
        return shape * 1.0 * self.flops[direction] / (self.rate[direction] * eff * 1.0) + prof.launch_s

    def ops(self, prof, gpu):
        fwd = (prof.host("attn_fwd"), self.time_s("fwd", prof))
        if not self.backward:
            return [], [fwd]
        return [fwd], [(prof.host("attn_bwd"), self.time_s("bwd", prof))]


# calibration.predict._memory_ops, the branches of streaming kernels: op -> (bytes of the call from
# the row's bytes_moved, kernels, whether at gather_eff); others (topk, router, cat, quant) -> None
def _memory_kind(op) -> tuple[Callable[[float], float], int, bool] | None:
    if not isinstance(op, str):
        return None
    if op == "swiglu":
        return (lambda b: b * 10.0 / 6.0), 2, True
    if op == "rmsnorm":
        return (lambda b: b * 1.5), 1, False
    if op in ("router_topk", "mla_qk_cat", "fp8_quant_1x128", "fp8_quant_rowwise") or op.startswith("topk"):
        return None
    if op in ("silu_strided", "mul_strided", "index_gather", "index_copy", "index_put_acc"):
        return (lambda b: b), 1, True
    return (lambda b: b), 1, False


class _Memory(_Block):
    """bench memory / memory_alone rows of streaming kernels (Eager.mem, .gather, .strided)."""

    def __init__(self, idx, timing, kernels: int, gathered: bool, call_bytes: list[float]):
        super().__init__(idx, timing)
        self.kernels, self.gathered, self.call_bytes = kernels, gathered, np.array(call_bytes)

    def ops(self, prof, gpu):
        b = self.call_bytes / prof.gather_eff if self.gathered else self.call_bytes
        gpu_s = (b / self.kernels / (gpu.hbm_bytes_per_s * prof.memory_eff) + prof.launch_s) \
            * prof.in_layer_factor("memory")
        return [], [(prof.host("op"), gpu_s)] * self.kernels


class PrimitivePredictor:
    """predict_s of `records` (primitive bench rows) under a profile, as one array: blocks of rows
    in arrays, the rest (`scalar_idx`) row by row through predict_s."""

    def __init__(self, records: list[dict], gpu: GPUSpec):
        self.records, self.gpu = records, gpu
        keyed: dict[tuple, list[int]] = {}
        scalar = []
        for i, r in enumerate(records):
            key = self._key(r)
            (keyed.setdefault(key, []) if key else scalar).append(i)
        self.blocks = [self._block(key, idx) for key, idx in keyed.items() if key[0] != "grouped"]
        grouped = {key[1:]: idx for key, idx in keyed.items() if key[0] == "grouped"}
        self.grouped = _GroupedGemms(grouped, records, gpu) if grouped else None
        self.scalar_idx = scalar

    @staticmethod
    def _key(r: dict) -> tuple | None:
        b, timing = r["bench"], timing_of(r)
        if b == "gemm":
            return ("gemm", r["precision"], timing)
        if b in ("grouped_gemm", "grouped_gemm_wgrad"):
            if int(r["tokens_per_group"]) <= 0 or int(r["groups"]) <= 0:
                return None
            transposed = b == "grouped_gemm_wgrad"
            label = r["precision"]
            kernel = label if transposed else grouped_kernel(label, [int(r["tokens_per_group"])] * int(r["groups"]),
                                                             int(r["n"]), int(r["k"]))
            return ("grouped", label, kernel, transposed, timing)
        if b in ("attn_fwd", "attn_bwd"):
            return ("attention", b == "attn_bwd", timing)
        if b in ("memory", "memory_alone"):
            kind = _memory_kind(r["op"])
            return None if kind is None else ("memory", kind[1], kind[2], timing)
        return None

    def _block(self, key: tuple, idx: list[int]) -> _Block:
        rows = [self.records[i] for i in idx]
        if key[0] == "gemm":
            return _DenseGemm(idx, key[2], key[1], rows, self.gpu)
        if key[0] == "attention":
            return _Attention(idx, key[2], key[1], rows, self.gpu)
        return _Memory(idx, key[3], key[1], key[2], [_memory_kind(r["op"])[0](float(r["bytes_moved"])) for r in rows])

    def predict(self, profile: Profile) -> np.ndarray:
        """predict_s of every record under `profile` (float64, in record order)."""
        if profile.gemm_clock_mhz or profile.bf16_layer_speedup:   # curves at another clock (s14gemm)
            return np.array([predict_s(r, self.gpu, profile) for r in self.records])
        out = np.empty(len(self.records))
        prof = alone_profile(profile)   # every block's bench is in ALONE_BENCHES
        for block in self.blocks:
            if block.scalar(prof):
                out[block.idx] = [predict_s(self.records[i], self.gpu, profile) for i in block.idx]
            else:
                setup, timed = block.ops(prof, self.gpu)
                out[block.idx] = window_s(block.timing, setup, timed)
        if self.grouped is not None:
            self.grouped.fill(prof, self.gpu, out)
        for i in self.scalar_idx:
            out[i] = predict_s(self.records[i], self.gpu, profile)
        return out


assert {"gemm", "grouped_gemm", "grouped_gemm_wgrad", "attn_fwd", "attn_bwd", "memory",
        "memory_alone"} <= set(ALONE_BENCHES)

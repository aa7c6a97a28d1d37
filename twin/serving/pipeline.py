"""An eager serving iteration as a launch/kernel pipeline (session s24pipe, docs/notes/s24pipe_rule.md).

A one-GPU engine runs its eager forward from Python: the host dispatches the step's aten operators one after another
(s24eager measured ~10.8 us an operator at the H100 table's reference host), each kernel starts when it is launched
and the GPU is free, and the step ends when the last kernel ends (the `.tolist()` sync). The iteration is a sequence
of stages (before the first layer; each layer's attention, then its FFN; the head), each with its operator count
(twin/data/serve_eager_ops.toml, the engine's own count) and its kernel seconds (the twin's cost functions), the
kernel time spread evenly over the stage's operators. Pure functions; no simulation state.
"""

from __future__ import annotations

import functools
import tomllib
from pathlib import Path

from twin.core.specs import ModelSpec

OPS_FILE = Path(__file__).resolve().parents[1] / "data" / "serve_eager_ops.toml"
OPS_FIELDS = ("pre_ops", "pre_ops_per_chunk", "pre_ops_per_row", "pre_ops_decode", "attn_ops", "attn_ops_per_chunk",
              "attn_ops_decode", "ffn_ops_dense", "ffn_ops_moe", "head_ops", "ffn_moe_gemm1_at", "ffn_moe_gemm2_at",
              "head_gemm_at")
# the routed experts' two grouped GEMMs: w13 (2F x D) then w2 (D x F), 2:1 in FLOPs
W13_SHARE = 2.0 / 3.0


@functools.cache
def _ops_table() -> dict:
    with open(OPS_FILE, "rb") as f:
        return tomllib.load(f)["models"]


def eager_ops(model_name: str) -> dict[str, float] | None:
    """The operator counts of a catalog model's eager step (OPS_FIELDS), or None where none were counted."""
    row = _ops_table().get(model_name)
    return {k: float(row[k]) for k in OPS_FIELDS} if row else None


def is_moe_layer(m: ModelSpec, layer: int) -> bool:
    return m.num_routed_experts > 0 and layer >= m.num_dense_layers


def stage_ops(ops: dict[str, float], m: ModelSpec, chunks: int, decode_rows: int) -> tuple[float, list[float], list[float], float]:
    """(operators before the first layer, each layer's attention operators, each layer's FFN operators, the head's)
    of a step of `chunks` prefill chunks beside `decode_rows` decode rows."""
    dec = decode_rows > 0
    pre = (ops["pre_ops"] + ops["pre_ops_per_chunk"] * chunks + ops["pre_ops_per_row"] * decode_rows
           + (ops["pre_ops_decode"] if dec else 0.0))
    attn = ops["attn_ops"] + ops["attn_ops_per_chunk"] * chunks + (ops["attn_ops_decode"] if dec else 0.0)
    ffn = [ops["ffn_ops_moe"] if is_moe_layer(m, i) else ops["ffn_ops_dense"] for i in range(m.num_layers)]
    return pre, [attn] * m.num_layers, ffn, ops["head_ops"]


def moe_ffn_stages(ops: dict[str, float], ffn_s: float, routed_share: float) -> list[tuple[float, float]]:
    """A MoE layer's FFN as stages: the routed experts' two grouped GEMMs at their operator positions
    (ffn_moe_gemm1_at, ffn_moe_gemm2_at) carrying `routed_share` of `ffn_s` (2:1), the rest of `ffn_s` (gate, routing,
    shared experts, elementwise) spread evenly over the other operators; one even stage where no positions were
    counted."""
    n, g1, g2 = ops["ffn_ops_moe"], ops["ffn_moe_gemm1_at"], ops["ffn_moe_gemm2_at"]
    if g1 < 0 or g2 <= g1 or n < g2 + 1:
        return [(n, ffn_s)]
    routed = ffn_s * min(max(routed_share, 0.0), 1.0)
    rest = (ffn_s - routed) / max(n - 2, 1.0)
    return [(g1, rest * g1), (1.0, routed * W13_SHARE), (g2 - g1 - 1, rest * (g2 - g1 - 1)),
            (1.0, routed * (1.0 - W13_SHARE)), (n - g2 - 1, rest * (n - g2 - 1))]


def head_stages(ops: dict[str, float], head_s: float) -> list[tuple[float, float]]:
    """The head as stages: its GEMM (head_gemm_at) carries the head's kernels, the other operators none."""
    n, at = ops["head_ops"], ops["head_gemm_at"]
    if at < 0 or n < at + 1:
        return [(n, head_s)]
    return [(at, 0.0), (1.0, head_s), (n - at - 1, 0.0)]


def pipeline_end_s(stages, op_s: float, start_s: float = 0.0) -> tuple[float, float]:
    """(the last kernel's end, the last launch) of `stages` [(operators, kernel seconds)] issued from time 0, the host
    taking `op_s` an operator. A stage's kernels are spread evenly over its operators: kernel k of n (g / n seconds)
    starts at max(its launch t0 + k op_s, kernel k-1's end), so the stage ends at max(the GPU's free time + g,
    t0 + op_s + g, t0 + n op_s + g / n) (the latest of a linear run: its first or its last kernel binds). `start_s`: the
    host's work before its first operator (s26start: the engine's input preparation), the GPU idle meanwhile."""
    host, gpu = start_s, 0.0
    for n, g in stages:
        if n <= 0:
            gpu += g
            continue
        first = host + op_s
        host += n * op_s
        gpu = max(gpu + g, first + g, host + g / n)
    return gpu, host

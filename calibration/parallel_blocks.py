"""The twin's prediction of the tensor- and context-parallel blocks of parallel_blocks.csv
(real/bench/parallel_blocks.py, records in calibration/measurements/<gpu>x<N>/).

A row times one block's forward + backward on every rank of a TP (or CP) group, eagerly, the
slowest rank's repetition (CUDA events, per_rep_events). Its prediction is the eager op list of
that block on one rank, costed exactly as the one-GPU layer cases are (calibration.predict:
_mla_ops and _moe_ops, the Eager costs, Profile.eager's missing kernels and measured host
dispatch, `timed_window_s`) with the shapes a rank holds, plus the block's collectives, each an op
of the same stream costed by `twin.costs.comm.collective_time_s` from the profile's measured NCCL
collectives (Profile.collectives, fitted from <gpu>x2/nccl.csv). real/ runs every collective on
the compute stream (no overlap), so each adds its whole time. Each collective's host dispatch is
its own measured host time per call where the folder holds one (collective_host.csv, measured in
the same two-rank process as the blocks): a host-bound block pays it at every collective, on
every rank, and a collective completes only once the later rank has issued it; the ranks of a
TP or CP block are alike, so that is any rank's host timeline (timed_window_s).

  tp_block mla (real/tp.py TPMLABlock): norm on this rank's tokens t (t = T/W with sequence
      parallelism, T without), the down-projections W_qa/W_kva and their norms on t, the latents
      (Q + C + R values a token; D + C + R without query compression) concatenated and entering
      the TP region, the rest of MLA on the whole sequence with H/W heads, the row-parallel
      output leaving it, the residual add on t. SP: all-gather of the latents in, reduce-scatter
      of S x D out; their backwards reduce-scatter and all-gather. No SP: all-reduce of S x D out
      (a clone, then the collective: real/collectives.py all_reduce_sum), all-reduce of the
      latents' gradient in the backward.
  tp_block moe (TPMoEBlock): norm on t, [h, routing weights] concatenated (rows padded to 16
      bytes) and entering the region (SP: plus an all-gather of the int64 expert ids, forward
      only), every expert and the shared
      experts at F/W width over all T tokens, the partial sums leaving it; collectives as above.
  cp_block attention / mla: predict_cp_row (ring or all-gather attention on S/W positions per rank).
With W = 1 (the one-GPU reference rows) a row is the same block without collectives.

Measured on the folder's fitting rows (split fit; predict_folder; no held-out row is seen), as the
one-GPU profile is fitted on its fitting split:
  - host per launched kernel of each TP block kind (`block_kernel_host_s`, from the one-GPU
    reference rows' host_time_s): the MoE block's kernels dispatch at ~16 us, not the profile's
    ~25 us (many come from a few C++ ops), the MLA block's at ~27 us;
  - host per collective call in a block (`block_collective_host_s`, TP rows' host_time_s less their
    reference's, per collective): ~0.28 ms, the autograd Function and its hand-off included, where
    an isolated call (collective_host.csv) takes 50-75 us; s14cp2's candidate H, a cost per
    TP-region crossing plus one per call (`block_crossing_host_s`, ADOPT_CROSSING_HOST), failed its
    rule and is off (docs/notes/s14cp2_rule.md);
  - CP terms (`cp_block_terms`): the ring's and the gather's host per op, and the off-diagonal
    blocks' time over the causal attention curves (cuDNN's unmasked s x s/2 blocks: ~1.56x inferred
    from the CP rows); where the one-GPU records of those blocks exist (cp_chunks.csv's mla_block
    rows, campaign s8cp, beside the folder or in its one-GPU sibling: `measured_offdiag_scale`) the
    factor is measured there instead (h200x2/: 1.19; h100/, from a one-H100 machine: 1.14);
  - the TP blocks' kernels by component (`block_component_factors`, s14cp): the traced kernel
    time of the fitting configurations' TP2 ranks and one-GPU references (the folder's traces*/,
    calibration.tp_traces) over the twin's costing of the same block, per block kind and component
    (H200: MoE memory-bound 1.39x, grouped GEMMs 0.86x, GEMMs 0.93x; MLA memory-bound 1.20x,
    GEMMs 0.92x, attention 1.02x), applied to every TP block kernel of the component
    (ADOPT_TRACE_COMPONENT_FACTORS); none for a GPU without its own fitting traces;
  - the CP part's memory-bound eager ops (sliced copies, FP32 casts, log-sum-exp merges and
    accumulations) at the eager-kernel factor of PyTorch's CP measured in the same folder's
    two-GPU torch_cp records (`cp_merge_factor`: 2.02 on 2xH200, 1.66 on 2xH100; 1 without them);
  - the CP2 MLA block's sublayer kernels (real/cp.py CPMLABlock: q, k, v made contiguous head-major,
    the output back) by component over the twin's costing, from the folder's fitting CP2 traces
    (`cp_sublayer_factors`, ADOPT_CP_SUBLAYER_FACTORS, docs/notes/s18tpb_rule.md; H200: memory-bound
    1.59x, GEMMs 0.91x; none on a GPU without CP traces).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pandas as pd

from calibration import torch_cp, tp_traces
from calibration.predict import (Eager, FixedHost, _mla_ops, _moe_ops, gpu_spec, timed_window_s,
                                 zipf_expert_rows)
from calibration.records_io import csv_exists, read_csv, read_csvs
from twin.costs import comm, compute
from twin.costs.flops import BF16_BYTES, Op, OpKind
from twin.costs.profile import Profile
from twin.core.specs import GPUSpec, get_model

I64 = 8
BENCHES = ("tp_block", "cp_block")


def _bool(v) -> bool:
    return v if isinstance(v, bool) else str(v).strip().lower() in ("true", "1", "yes")


def _int(v, default: int = 1) -> int:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return default
    return default if math.isnan(f) else int(f)


COLLECTIVE_HOST_FILE = "collective_host.csv"


def load_collective_host(folder: Path | str, probe_ref_s: float | None = None) -> dict[str, float]:
    """{op: host seconds to issue one call} from <folder>/collective_host.csv (real/bench/
    parallel_blocks.py bench_collective_host: each TP collective as the blocks call it, in the
    two-rank process, the slowest rank's; fitting rows only, the median over sizes); {} without
    the file. With `probe_ref_s`, each row's time at that host speed first (`at_probe_ref`)."""
    path = Path(folder) / COLLECTIVE_HOST_FILE
    if not csv_exists(path):
        return {}
    df = read_csv(path)
    df = df[(df["split"] == "fit") & (df["time_s"] > 0)]
    if probe_ref_s:
        df = at_probe_ref(df, probe_ref_s, "time_s")
    return {str(op): float(g["time_s"].median()) for op, g in df.groupby("op")}


# Whether the block rows take the host's speed measured beside each row as an input
# (docs/notes/s15cp_rule.md, candidate P): the host terms measured on the fitting rows brought to one
# reference speed, every row's host at its own. Rows without a probe are unchanged.
ADOPT_HOST_PROBE = False
PROBE_COL = "probe_launch_s"   # real/bench/parallel_blocks.py: the launch probe beside the row


def row_probe_s(row) -> float | None:
    """A row's host probe (seconds per small kernel launch, the slowest rank's), None without one."""
    try:
        p = float(row.get(PROBE_COL))
    except (TypeError, ValueError):
        return None
    return p if p > 0 else None


def reference_probe_s(rows: pd.DataFrame) -> float | None:
    """The median probe over a folder's fitting block rows: the host speed its terms are read at
    (`at_probe_ref`); None where no fitting row carries a probe."""
    if rows.empty or PROBE_COL not in rows:
        return None
    fit = rows[rows["bench"].isin(BENCHES) & (rows["split"] == "fit")]
    p = pd.to_numeric(fit[PROBE_COL], errors="coerce")
    p = p[p > 0]
    return float(p.median()) if len(p) else None


def at_probe_ref(rows: pd.DataFrame, probe_ref_s: float, col: str = "host_time_s") -> pd.DataFrame:
    """`rows` with each probed row's host measurement `col` as the host at `probe_ref_s` would have
    taken it: x probe_ref_s / the row's probe (host time proportional to the probe: s13srv's fitted
    exponent, 0.97-1.08); rows without a probe as they are."""
    if PROBE_COL not in rows or col not in rows:
        return rows
    out = rows.copy()
    p = pd.to_numeric(out[PROBE_COL], errors="coerce")
    probed = p > 0
    out[col] = pd.to_numeric(out[col], errors="coerce")
    out.loc[probed, col] = out.loc[probed, col] * probe_ref_s / p[probed]
    return out


def host_scale(row, probe_ref_s: float | None) -> float:
    """The factor on a row's host terms: its probe over the folder's reference (1 without either)."""
    p = row_probe_s(row)
    return p / probe_ref_s if (p and probe_ref_s) else 1.0


def _host_scaled(ops: list, scale: float) -> list:
    """Ops (host_s, gpu_s) with every host part x `scale` (host synchronisations kept)."""
    if scale == 1.0:
        return ops
    return [(None, g) if h is None else (h * scale, g) for h, g in ops]


# collectives a TP block's forward + backward calls (real/tp.py): with sequence parallelism the
# all-gather in and reduce-scatter out and their backwards (MoE: plus the expert ids' all-gather),
# without it the all-reduce out and the input gradient's all-reduce
TP_BLOCK_COLLECTIVES = {("mla", True): 4, ("mla", False): 2, ("moe", True): 5, ("moe", False): 2}
TP_COLLECTIVE_KINDS = ("all_gather", "reduce_scatter", "all_reduce")


# Whether the MoE block's all-gather of the expert ids (sequence parallelism: real/tp.py TPMoEBlock
# calls real/collectives.py all_gather_tokens bare, no autograd Function, forward only) takes the host
# of that very call as collective_host.csv times it (the isolated all_gather: ~0.1 ms) instead of the
# TP blocks' median per call (~0.32-0.35 ms, autograd Functions and their backward hand-offs),
# and the per-call median is read with that call's isolated host set apart (docs/notes/s18tpb_rule.md,
# candidate I).
ADOPT_IDS_GATHER_HOST = False
IDS_GATHER_KEY = "ids_all_gather"   # the host dict's entry for that call (folder_terms)


def _ids_gather_host_s(isolated: dict, use: bool | None = None) -> float | None:
    """The host of the expert ids' bare all-gather where `use` (None: ADOPT_IDS_GATHER_HOST) and the
    isolated all_gather is measured (collective_host.csv); None otherwise."""
    on = ADOPT_IDS_GATHER_HOST if use is None else use
    return isolated.get("all_gather") if on else None


def block_collective_host_s(rows: pd.DataFrame, ids_gather_s: float | None = None) -> float | None:
    """Host seconds a TP block spends per collective call beyond what its one-GPU reference
    spends, measured on the fitting rows (host_time_s: the slowest rank's host time to issue a
    repetition): for each fitting TP row with a fitting one-GPU reference of the same block,
    model and tokens, (host_time_s(TP) - host_time_s(TP1)) / its collectives; the median. The
    call as the block makes it: the autograd Function and its backward's hand-off from the
    autograd thread, the buffer clone or view, the CommTimer's events, c10d's dispatch and the
    NCCL launch -- which the isolated calls of collective_host.csv time only in part. With
    `ids_gather_s` (the MoE block's bare expert-ids all-gather at its isolated host), that call's
    host is set apart from an SP MoE row's extra first and the row counts one call fewer. None where
    the rows carry no host times."""
    per_call = [extra / calls for extra, calls in _tp_host_beyond_reference(rows, ids_gather_s)]
    return float(pd.Series(per_call).median()) if per_call else None


def _tp_host_beyond_reference(rows: pd.DataFrame, ids_gather_s: float | None = None) -> list[tuple[float, int]]:
    """(host_time_s(TP) - host_time_s(TP1), collective calls) for each fitting TP row with a
    fitting one-GPU reference of the same block, model and tokens; none where the rows carry no
    host times. With `ids_gather_s`, an SP MoE row's bare expert-ids all-gather is taken out at that
    host: (extra - ids_gather_s, calls - 1)."""
    if "host_time_s" not in rows or rows.empty:
        return []
    tp = rows[(rows["bench"] == "tp_block") & (rows["split"] == "fit")]
    tp = tp[pd.to_numeric(tp["host_time_s"], errors="coerce") > 0]
    ref = {(r["block"], r["model"], _int(r["tokens"])): float(r["host_time_s"])
           for _, r in tp.iterrows() if _int(r["tp"]) == 1}
    out = []
    for _, r in tp.iterrows():
        key = (r["block"], r["model"], _int(r["tokens"]))
        sp = _bool(r["sequence_parallel"])
        if _int(r["tp"]) > 1 and key in ref and (r["block"], sp) in TP_BLOCK_COLLECTIVES:
            extra, calls = float(r["host_time_s"]) - ref[key], TP_BLOCK_COLLECTIVES[(r["block"], sp)]
            if ids_gather_s is not None and r["block"] == "moe" and sp:
                extra, calls = extra - ids_gather_s, calls - 1
            out.append((extra, calls))
    return out


# Whether a TP block's host beyond its one-GPU reference is a cost per TP-region crossing plus a
# cost per collective call (`block_crossing_host_s`, docs/notes/s14cp2_rule.md) instead of one
# median cost per collective call (`block_collective_host_s`). Only the tp_block rows read it.
ADOPT_CROSSING_HOST = False
# the TP region's crossings a block makes in a forward + backward (real/collectives.py: to_tp and
# from_tp are autograd Functions in both forms, each run forward and backward, with or without a
# collective inside: without SP, _CopyToTP's forward and _ReduceFromTP's backward are identities)
TP_CROSSINGS = 4
CROSSING_KEY = "tp_crossing"


def block_crossing_host_s(rows: pd.DataFrame) -> tuple[float, float] | None:
    """(host seconds per TP-region crossing, per collective call) of the TP blocks, measured on the
    fitting rows: for each fitting TP row with a fitting one-GPU reference of the same block, model
    and tokens (as `block_collective_host_s`), host_time_s(TP) - host_time_s(TP1) = C * crossings +
    B * collectives, least squares over the rows (crossings: 4 in every form; collectives: 2
    without SP, 4 or 5 with it). Real/'s blocks cross the region through the same two autograd
    Functions with or without SP, and only the collectives inside them differ, so one cost per
    call (the median over rows of 2- and 4-5-call forms) charges the Functions' own Python and
    autograd hand-offs to the calls: too little without SP, too much with it. None where the rows
    carry no host times, the forms do not vary, or a term comes out negative."""
    pairs = _tp_host_beyond_reference(rows)
    extra, calls = [e for e, _ in pairs], [c for _, c in pairs]
    if len(set(calls)) < 2:
        return None
    mx, my = sum(calls) / len(calls), sum(extra) / len(extra)
    per_call = sum((x - mx) * (y - my) for x, y in zip(calls, extra)) / sum((x - mx) ** 2 for x in calls)
    per_crossing = (my - per_call * mx) / TP_CROSSINGS
    if per_call < 0 or per_crossing < 0:
        return None
    return per_crossing, per_call


def _collective(e: Eager, kind: str, num_bytes: float, ranks: int, gpu: GPUSpec, profile: Profile,
                host: dict | None = None) -> None:
    """One NCCL collective of a `num_bytes` buffer on the block's stream. Its host dispatch: the
    measured host time of one such call (`load_collective_host`) where there is one, else an eager
    op's. Where the block is host-bound this is what it pays at every collective: the device
    waits for the host to issue it, on each rank, and the collective completes only once both
    ranks have (the ranks are alike, so the later rank's host is this one's)."""
    gpu_s = comm.collective_time_s(kind, num_bytes, ranks, gpu, True, profile.collectives)
    if host and kind in host:
        e.fixed(host[kind], gpu_s)
    else:
        e.add("op", gpu_s, "nccl")


def _rmsnorm(e: Eager, tokens: float, width: int) -> None:
    e.mem(3 * tokens * width * BF16_BYTES)          # F.rms_norm: reads each row twice, writes it


def _rmsnorm_bwd(e: Eager, tokens: float, width: int) -> None:
    e.mem(4 * tokens * width * BF16_BYTES)          # input gradient
    e.mem(2 * tokens * width * BF16_BYTES)          # weight gradient's reduction over tokens


def _enter_leave(f: Eager, b: Eager, in_bytes: float, out_bytes: float, sp: bool, world: int,
                 gpu: GPUSpec, profile: Profile, where: str, host: dict | None = None) -> None:
    """The TP region's collectives: `where` "in_fwd" / "out_fwd" / "out_bwd" / "in_bwd", the
    buffer the whole sequence's (real/collectives.py to_tp / from_tp)."""
    if world <= 1:
        return
    if host and CROSSING_KEY in host:   # the crossing's autograd Function, collective or not
        (b if where in ("out_bwd", "in_bwd") else f).fixed(host[CROSSING_KEY], 0.0)
    if where == "in_fwd" and sp:
        _collective(f, "all_gather", in_bytes, world, gpu, profile, host)
    elif where == "out_fwd":
        if sp:
            _collective(f, "reduce_scatter", out_bytes, world, gpu, profile, host)
        else:
            f.mem(2 * out_bytes)                    # all_reduce_sum: contiguous().clone()
            _collective(f, "all_reduce", out_bytes, world, gpu, profile, host)
    elif where == "out_bwd" and sp:
        _collective(b, "all_gather", out_bytes, world, gpu, profile, host)
    elif where == "in_bwd":
        if sp:
            _collective(b, "reduce_scatter", in_bytes, world, gpu, profile, host)
        else:
            b.mem(2 * in_bytes)
            _collective(b, "all_reduce", in_bytes, world, gpu, profile, host)


def tp_block_ops(row, gpu: GPUSpec, profile: Profile, host: dict | None = None,
                 kernel_host: dict | None = None, component_factors: dict | None = None) -> tuple[Eager, Eager]:
    """Forward and backward eager op lists of one rank's TP block (module docstring); `host`: the
    measured host time per collective call (`load_collective_host`); `kernel_host`: {block: the
    host time per launched kernel measured on the fitting one-GPU block rows}
    (`block_kernel_host_s`), which then replaces the profile's per-kernel host dispatch;
    `component_factors`: {block: {component: the traced kernels' time over the twin's}}
    (`block_component_factors`), applied to every kernel of the block's component (the
    collectives and the launch-bound kernels kept)."""
    spec = get_model(str(row["model"]))
    world, sp = _int(row["tp"]), _bool(row["sequence_parallel"]) and _int(row["tp"]) > 1
    T, D = _int(row["tokens"]), spec.hidden_size
    t = T // world if sp else T
    block = str(row["block"])
    scale = (component_factors or {}).get(block)
    f, b = Eager(gpu, profile, component_scale=scale), Eager(gpu, profile, component_scale=scale)
    _rmsnorm(f, t, D)
    if block == "mla":
        C, R, Q = spec.kv_lora_rank, spec.qk_rope_head_dim, spec.q_lora_rank
        latent_bytes = T * ((Q or D) + C + R) * BF16_BYTES
        local = dataclasses.replace(spec, num_heads=spec.num_heads // world)
        mf, mb = _mla_ops(local, 1, T, str(row["precision"]), gpu, profile, down_tokens=t, component_scale=scale)
        f.mem(2 * t * ((Q or D) + C + R) * BF16_BYTES)          # cat of the latents
        _enter_leave(f, b, latent_bytes, T * D * BF16_BYTES, sp, world, gpu, profile, "in_fwd", host)
        f.extend(mf)
        bench = "mla_layer"
    elif block == "moe":
        K = spec.top_k
        local = dataclasses.replace(spec, moe_intermediate_size=spec.moe_intermediate_size // world,
                                    num_routed_experts=_int(row["num_experts"], spec.num_routed_experts))
        counts = zipf_expert_rows(T, local.num_routed_experts, K, float(row.get("skew") or 0.0))
        mf, mb = _moe_ops(local, T, counts, str(row["precision"]), gpu, profile, component_scale=scale)
        width = D + K + (-(D + K) % 8)                          # [h, weights, pad to 16 bytes]
        latent_bytes = T * width * BF16_BYTES
        f.mem(2 * t * width * BF16_BYTES)                       # the cat
        _enter_leave(f, b, latent_bytes, T * D * BF16_BYTES, sp, world, gpu, profile, "in_fwd", host)
        if sp:   # expert ids, no autograd: the bare call's own host where measured (IDS_GATHER_KEY)
            ids_host = {"all_gather": host[IDS_GATHER_KEY]} if host and IDS_GATHER_KEY in host else host
            _collective(f, "all_gather", T * K * I64, world, gpu, profile, ids_host)
        f.extend(mf)
        bench = "moe_layer"
    else:
        raise ValueError(f"tp_block block {block!r}: one of mla, moe")
    _enter_leave(f, b, latent_bytes, T * D * BF16_BYTES, sp, world, gpu, profile, "out_fwd", host)
    f.mem(3 * t * D * BF16_BYTES)                               # residual add
    # backward: the residual's gradient leaves through the exit's backward, the block mirrors
    _enter_leave(f, b, latent_bytes, T * D * BF16_BYTES, sp, world, gpu, profile, "out_bwd", host)
    b.extend(mb)
    b.mem(latent_bytes / T * t * 2)                             # the cat's backward (slices made contiguous)
    _enter_leave(f, b, latent_bytes, T * D * BF16_BYTES, sp, world, gpu, profile, "in_bwd", host)
    _rmsnorm_bwd(b, t, D)
    b.mem(3 * t * D * BF16_BYTES)                               # dx: residual + norm branch
    # the kernels real/'s eager layer launches beyond the named ops, and its measured host
    # dispatch per kernel, as the one-GPU layer cases take them
    f.missing_kernels(f"{bench}_fwd", str(row["precision"]))
    b.missing_kernels(f"{bench}_bwd", str(row["precision"]))
    if kernel_host and block in kernel_host:
        for e in (f, b):
            e.ops = [op if (op[0] is None or isinstance(op, FixedHost)) else (kernel_host[block], op[1])
                     for op in e.ops]
    return f, b


def block_kernel_host_s(rows: pd.DataFrame, gpu: GPUSpec, profile: Profile) -> dict[str, float]:
    """{block: host seconds per launched kernel} of the TP blocks as the benchmark issues them,
    measured on the fitting one-GPU block rows: host_time_s (the host time to issue one forward
    + backward) over the kernels the block's op list launches (tp_block_ops, the profile's
    missing kernels included); the median over a block's rows. The MoE block's kernels dispatch
    faster than the profile's per-kernel figure (measured on MLA-like eager work): many of them
    come from a few C++ ops (sorts, grouped GEMMs, index bookkeeping). {} without host times."""
    if "host_time_s" not in rows or rows.empty:
        return {}
    ref = rows[(rows["bench"] == "tp_block") & (rows["split"] == "fit")]
    ref = ref[(pd.to_numeric(ref["tp"], errors="coerce") == 1) & (pd.to_numeric(ref["host_time_s"], errors="coerce") > 0)]
    per_kernel: dict[str, list[float]] = {}
    for _, r in ref.iterrows():
        f, b = tp_block_ops(r, gpu, profile)
        kernels = sum(1 for h, _ in f.ops + b.ops if h is not None)
        per_kernel.setdefault(str(r["block"]), []).append(float(r["host_time_s"]) / kernels)
    return {block: float(pd.Series(v).median()) for block, v in per_kernel.items()}


# Whether the TP blocks' kernels take their traced component factors (`block_component_factors`;
# docs/notes/s14cp_rule.md): adopted by that rule (held-out TP2/CP2 within 10%: 2xH200 8 -> 11 of
# 20, 2xH100 14 -> 16 of 20 with candidate O in place).
ADOPT_TRACE_COMPONENT_FACTORS = True
# the components a factor is measured for; the collectives (their sweep and measured host) and the
# launch-bound kernels (launch_s) keep the twin's costing
FACTOR_COMPONENTS = ("gemm", "grouped_gemm", "attention", "memory")


def _fit_row(rows: pd.DataFrame, block: str, model: str, tokens: int, tp: int, sp: bool):
    """The fitting record row of a TP block configuration, None where it is held out or absent."""
    if rows.empty:
        return None
    sel = rows[(rows["bench"] == "tp_block") & (rows["block"] == block) & (rows["model"] == model)
               & (pd.to_numeric(rows["tokens"], errors="coerce") == tokens)
               & (pd.to_numeric(rows["tp"], errors="coerce") == tp) & (rows["split"] == "fit")]
    if tp > 1:
        sel = sel[sel["sequence_parallel"].map(_bool) == sp]
    return sel.iloc[0] if len(sel) else None


def block_component_factors(folder: Path | str, rows: pd.DataFrame, gpu: GPUSpec, profile: Profile,
                            host: dict | None = None, kernel_host: dict | None = None) -> dict[str, dict[str, float]]:
    """{block: {component: factor}}: per TP block kind and component (gemm, grouped_gemm,
    attention, memory), the GPU time of the block's traced kernels (calibration.tp_traces: the
    folder's traces*/ of the fitting configurations alone, both TP2 ranks and the one-GPU
    reference, two repetitions each) over the twin's costing of the same block
    (tp_block_ops' component_s), a ratio of sums over the block's traces. The traced memory
    kernels include the launch-bound ones the twin costs at launch_s (Profile.eager's missing
    kernels, small ops), kept at launch_s: the factor is the rest's. A component the block's
    traces or its op list lack gets none. {} where the folder holds no fitting trace."""
    traced, twin = {}, {}
    for tb in tp_traces.traced_blocks(folder):
        row = _fit_row(rows, tb.block, tb.model, tb.tokens, tb.tp, tb.sequence_parallel)
        if row is None:   # a held-out configuration's trace: never read
            continue
        f, b = tp_block_ops(row, gpu, profile, host, kernel_host)
        mine = traced.setdefault(tb.block, {})
        for c, v in tb.kernel_s.items():
            mine[c] = mine.get(c, 0.0) + v
        add_component_s(twin.setdefault(tb.block, {}), f, b)
    return {block: traced_over_twin(mine, twin[block], FACTOR_COMPONENTS) for block, mine in traced.items()}


def add_component_s(into: dict[str, float], *eagers) -> dict[str, float]:
    """`into` with each Eager op list's seconds by component (Eager.component_s) added, in order."""
    for e in eagers:
        for c, v in e.component_s.items():
            into[c] = into.get(c, 0.0) + v
    return into


def traced_over_twin(traced: dict[str, float], twin: dict[str, float], components) -> dict[str, float]:
    """{component: traced seconds / the twin's} of `components` where both are positive; the traced
    memory kernels less the launch-bound ones the twin costs at launch_s (its "launch" seconds, kept
    at launch_s: the factor is the rest's)."""
    out = {}
    for c in components:
        measured = traced.get(c, 0.0) - (twin.get("launch", 0.0) if c == "memory" else 0.0)
        if twin.get(c, 0.0) > 0 and measured > 0:
            out[c] = measured / twin[c]
    return out


def predict_tp_row(row, gpu: GPUSpec, profile: Profile, host: dict | None = None,
                   kernel_host: dict | None = None, component_factors: dict | None = None,
                   host_scale: float = 1.0) -> float:
    """A tp_block row (`tp_block_ops`), every host part x `host_scale` (the row's host speed over the
    one its terms were read at: `host_scale`)."""
    f, b = tp_block_ops(row, gpu, profile, host, kernel_host, component_factors)
    return timed_window_s([], _rep_start("tp_block", _int(row["tp"])) + _host_scaled(f.ops + b.ops, host_scale))


# Whether the two-GPU block rows start each repetition synchronised: real/bench/parallel_blocks.py
# time_reps synchronises the device after every repetition of a row whose block carries a CommTimer
# (every TP2 and CP2 row; not the one-GPU references), so each repetition starts with the GPU idle
# and the host at the GPU's time: the GPU waits for the host's first ops (the s13cp traces: 0.3-1.3
# ms before the first kernel of a device-bound CP2 row on 2xH200; the fitting TP traces' first,
# synced repetition idles 0.8-2.2 ms where the back-to-back second idles 0.2-0.5 ms:
# calibration.tp_traces.repetition_spans) and the host's lead over the GPU never carries from one
# repetition to the next, as timed_window_s would let it without the sync. s13cp's candidates
# (docs/notes/s13cp_rule.md) were not adopted; docs/notes/s17tp_rule.md judges the TP2 rows
# (ADOPT_TP_REP_SYNC) and the CP2 rows (ADOPT_CP_REP_SYNC) apart.
ADOPT_TP_REP_SYNC = True
ADOPT_CP_REP_SYNC = True


def rep_synced(bench: str) -> bool:
    """Whether a W-rank row of `bench` starts each repetition synchronised (its ADOPT_ switch)."""
    return {"tp_block": ADOPT_TP_REP_SYNC, "cp_block": ADOPT_CP_REP_SYNC}.get(bench, False)


def _rep_start(bench: str, world: int) -> list:
    """The ops before a repetition of a W-rank row: a host synchronisation where `rep_synced`."""
    return [(None, 0.0)] if world > 1 and rep_synced(bench) else []


def _ring_exchange_s(num_bytes: float, world: int, gpu: GPUSpec, profile: Profile) -> float:
    """One ring step's P2P exchange: every rank sends `num_bytes` to the next and receives as
    much from the previous at once (NVLink both ways: the sweep's bidirectional send/recv where
    measured)."""
    both_ways = (profile.collectives or {}).get("send_recv_bidir")   # busbw: one direction's bytes / time
    if both_ways:
        return both_ways["latency_s"] + num_bytes / both_ways["bus_bytes_per_s"]
    return comm.collective_time_s("send_recv", num_bytes, world, gpu, True, profile.collectives)


class _ScaledMem:
    """An Eager whose `mem` ops take `factor` times their streaming time (the other calls pass
    through): real/cp.py's strided and broadcast eager kernels, as `cp_merge_factor` measures them."""

    def __init__(self, eager: Eager, factor: float):
        self._eager, self._factor = eager, factor

    def __getattr__(self, name):
        return getattr(self._eager, name)

    def mem(self, bytes_: float, kernels: int = 1) -> None:
        for _ in range(kernels):
            self._eager.add("op", self._factor * compute.memory_time_s(bytes_ / kernels, self._eager.gpu,
                                                                       self._eager.profile))


def cp_merge_factor(folder: Path | str, gpu: GPUSpec, profile: Profile) -> float | None:
    """The eager kernels around PyTorch's CP attention calls (FP32 merges against an unsqueezed
    log-sum-exp, copies of sliced K/V, fills) over their bytes at the streaming rate, measured in
    the folder's own two-GPU torch_cp records (calibration.torch_cp.merge_time_factor, fitting
    rows): real/cp.py's merges, accumulations and sliced copies are kernels of the same family, run
    in the same kind of two-rank process (issue 14; calibration/measurements/README.md, s8cp on the
    H200). None without the records."""
    if not csv_exists(Path(folder) / torch_cp.KERNELS_FILE):
        return None
    return torch_cp.merge_time_factor(folder, gpu, profile)


def _cp_blocks(f: Eager, b: Eager, kind: str, world: int, s: int, H: int, E: int, Ev: int, gpu: GPUSpec,
               profile: Profile, core, host: dict | None = None, offdiag_scale: float = 1.0,
               merge_factor: float = 1.0) -> None:
    """The attention of one rank's s positions over W ranks' shards (real/cp.py), forward into f and
    backward into b. Per block: the fused kernel, its sliced operands made contiguous, the FP32
    merge (forward) and accumulation (backward); the exchanges or collectives of `kind`.
    `offdiag_scale`: the off-diagonal (unmasked, s x s/2) blocks' time over the one-GPU causal
    attention curves' (`cp_block_terms`). `merge_factor`: the memory-bound eager ops' (copies,
    casts, merges, accumulations) time over their bytes at the streaming rate (`cp_merge_factor`)."""
    f, b = _ScaledMem(f, merge_factor), _ScaledMem(b, merge_factor)
    ring = kind == "ring"
    kv_elems = s * H * (E + Ev)                 # one rank's K and V
    kv_bytes = kv_elems * BF16_BYTES
    q_elems, o_elems = s * H * E, s * H * Ev
    if not ring:   # K and V all-gathered, one collective each, exposed
        for width in (E, Ev):
            _collective(f, "all_gather", world * s * H * width * BF16_BYTES, world, gpu, profile, host)
        b.mem(world * kv_bytes)                 # zeroed gradient buffers of every shard
    # overlapped with a block: K/V forward; K/V (BF16) and the keys' gradients (FP32) backward
    send_f = _ring_exchange_s(kv_bytes, world, gpu, profile)
    send_b = _ring_exchange_s(3 * kv_bytes, world, gpu, profile)
    # the off-diagonal blocks take half the queries (src > rank) or half the keys (src < rank):
    # on average 3/4 of the rows of each, the halves copied contiguous
    half = 0.75
    for step in range(world):
        # the diagonal block causal over s; every other one s x s/2 pairs, unmasked, costed
        # as s/2 x s/2 on twice the heads
        op = core(s, H, True) if step == 0 else core(s // 2, 2 * H, False)
        if step > 0:
            f.mem(2 * BF16_BYTES * (q_elems + kv_elems) / 4, kernels=2)      # sliced q or k, v
        f.attention(op, "fwd")
        if step > 0:
            f.ops[-1] = (f.ops[-1][0], f.ops[-1][1] * offdiag_scale)
        if step == 0:
            f.mem(o_elems * (BF16_BYTES + 4))                                # its output to FP32
        else:   # FP32 copy, then out*exp(lse-new) + o_i*exp(lse_i-new) over its rows
            f.mem(half * o_elems * (BF16_BYTES + 4 + 8 + 8 + 12), kernels=6)
        if ring and step < world - 1:
            f.add("op", max(0.0, send_f - f.ops[-2][1]))
        if step > 0:   # sliced q or k, v; out and grad_out of the half-query rows
            b.mem(2 * BF16_BYTES * (q_elems + kv_elems + 2 * o_elems) / 4, kernels=3)
        b.attention(op, "bwd")
        if step > 0:
            b.ops[-1] = (b.ops[-1][0], b.ops[-1][1] * offdiag_scale)
        if ring and step < world - 1:
            b.add("op", max(0.0, send_b - b.ops[-1][1]))
        if ring and step == 0:   # FP32 accumulators from the diagonal block's gradients
            b.mem((q_elems + kv_elems) * (BF16_BYTES + 4), kernels=3)
        elif ring:               # += this block's rows
            b.mem(half * (q_elems + kv_elems) * (4 + BF16_BYTES + 4), kernels=3)
        else:                    # dQ as the ring's; dK/dV copied into their shard's buffer
            b.mem(half * q_elems * (4 + BF16_BYTES + 4) if step else q_elems * (BF16_BYTES + 4))
            b.mem(2 * (kv_bytes if step == 0 else half * kv_bytes), kernels=2)
    f.mem(o_elems * (4 + BF16_BYTES))                                        # merged output to BF16
    b.mem(q_elems * (4 + BF16_BYTES))                                        # dQ to BF16
    if ring:   # the keys' gradients cast, then home over the last hop, exposed
        b.mem(kv_elems * (4 + BF16_BYTES), kernels=2)
        b.add("op", _ring_exchange_s(kv_bytes, world, gpu, profile))
    else:
        for width in (E, Ev):
            _collective(b, "reduce_scatter", world * s * H * width * BF16_BYTES, world, gpu, profile, host)


def offdiag_factor(cp_terms: dict, H: int, E: int, Ev: int, s: int) -> float:
    """The off-diagonal blocks' factor a CP row of s positions a rank takes: at its own s/2 where
    the terms carry a fit for its head shape (`offdiag_by_shape`), else the single one (1 without)."""
    fit = cp_terms.get("offdiag_by_shape", {}).get((H, E, Ev))
    if fit is not None:
        return fit[0] + fit[1] * math.log2(s // 2)
    return cp_terms.get("offdiag_scale", 1.0)


def predict_cp_row(row, gpu: GPUSpec, profile: Profile, host: dict | None = None,
                   cp_terms: dict | None = None, host_scale: float = 1.0) -> float:
    """A cp_block row: context-parallel attention over W ranks, each holding S/W positions (zigzag
    halves, so the causal work is even), forward and backward, as real/cp.py runs it: W blocks
    per rank, the diagonal one causal over its s = S/W positions, every other one half the
    queries or half the keys, unmasked (s x s/2 pairs), each a fused attention kernel (cuDNN's,
    the one SDPA runs for the CP1 reference), the blocks' outputs merged by log-sum-exp in FP32.
    Backward: the same blocks, dQ and dK/dV accumulated in FP32.
    cp_kind ring (the default): the next rank's K/V travel (send/recv both ways at once) while a
    block is attended, exposed only beyond it; in the backward K/V (BF16) and the gradients of
    the keys in hand (FP32) travel during the next block, and the last exchange, each rank's own
    keys' gradients coming home, is exposed whole.
    cp_kind allgather: K and V all-gathered before the blocks and their gradients reduce-scattered
    after (one collective each, exposed), the gradient buffers of every rank's shard zeroed and
    filled block by block. block mla adds the sublayer's projections on S/W positions (no
    collective). W = 1: the unsplit block (SDPA, causal). `cp_terms` (`cp_block_terms`, measured
    on the fitting CP rows): the CP part's host time per op of each kind, and the off-diagonal
    blocks' time over the causal curves'. `host_scale`: every host part's factor (`host_scale`)."""
    spec = get_model(str(row["model"]))
    world, S = _int(row["cp"]), _int(row["seq_len"])
    H, E, Ev = _int(row["num_heads"]), _int(row["qk_head_dim"]), _int(row["v_head_dim"])
    s = S // world
    kind = str(row.get("cp_kind") or "ring")
    kind = "ring" if kind in ("", "nan") else kind
    if world > 1 and kind not in ("ring", "allgather"):
        raise ValueError(f"cp_block cp_kind {kind!r}: one of ring, allgather")
    f, b = Eager(gpu, profile), Eager(gpu, profile)
    if str(row["bench"]) == "cp_block" and str(row["block"]) == "mla":
        # the sublayer's ops on this rank's positions, its attention core the CP form's (below)
        sub = (cp_terms or {}).get("sublayer_factors") if world > 1 else None   # real/cp.py CPMLABlock's
        mf, mb = _mla_ops(spec, 1, s, str(row["precision"]), gpu, profile, with_core=False, component_scale=sub)
        f.extend(mf)
        b.extend(mb)
    def core(seq: int, heads: int, causal: bool) -> Op:
        return Op("attn_core", OpKind.ATTENTION, "attn", batch=1, seq_len=seq, heads=heads, qk_dim=E, v_dim=Ev,
                  causal=causal, precision="bf16")

    if world == 1:
        f.attention(core(S, H, True), "fwd")
        b.attention(core(S, H, True), "bwd")
    else:
        terms = cp_terms or {}
        cf, cb = Eager(gpu, profile), Eager(gpu, profile)
        _cp_blocks(cf, cb, kind, world, s, H, E, Ev, gpu, profile, core, host, offdiag_factor(terms, H, E, Ev, s),
                   terms.get("merge_factor", 1.0))
        per_op = terms.get("host_per_op", {}).get(kind)
        for part, e in ((cf, f), (cb, b)):
            if per_op is not None:   # the ring / gather code's own measured host, kept
                part.ops = [op if isinstance(op, FixedHost) else FixedHost((per_op, op[1])) for op in part.ops]
            e.extend(part)
    block = "mla_layer" if str(row["block"]) == "mla" else None
    if block:
        f.missing_kernels(f"{block}_fwd", str(row["precision"]))
        b.missing_kernels(f"{block}_bwd", str(row["precision"]))
    return timed_window_s([], _rep_start("cp_block", world) + _host_scaled(f.ops + b.ops, host_scale))


def _cp_attention_part(row, gpu: GPUSpec, profile: Profile, host: dict | None, merge_factor: float = 1.0):
    """(forward, backward) Eagers of a CP2 attention row's CP part (`_cp_blocks`) at offdiag 1,
    and the time of its off-diagonal blocks' kernels."""
    world, S = _int(row["cp"]), _int(row["seq_len"])
    H, E, Ev = _int(row["num_heads"]), _int(row["qk_head_dim"]), _int(row["v_head_dim"])

    def core(seq: int, heads: int, causal: bool) -> Op:
        return Op("attn_core", OpKind.ATTENTION, "attn", batch=1, seq_len=seq, heads=heads, qk_dim=E, v_dim=Ev,
                  causal=causal, precision="bf16")
    f, b = Eager(gpu, profile), Eager(gpu, profile)
    _cp_blocks(f, b, str(row["cp_kind"]), world, S // world, H, E, Ev, gpu, profile, core, host,
               merge_factor=merge_factor)
    off = Eager(gpu, profile)
    off.attention(core(S // world // 2, 2 * H, False), "fwd")
    off.attention(core(S // world // 2, 2 * H, False), "bwd")
    return f, b, (world - 1) * sum(g for _, g in off.ops)


def cp_block_terms(rows: pd.DataFrame, gpu: GPUSpec, profile: Profile, host: dict | None = None,
                   merge_factor: float = 1.0) -> dict:
    """Two terms of the CP2 rows, measured on the fitting CP attention rows (no held-out row):
    host_per_op {cp_kind: host_time_s, less the collectives' own measured host, over the other
    ops of the CP part} -- the ring's and the
    gather's Python (P2P ops, slices, merges, autograd Function) issue at far more than a kernel's
    dispatch; the median over the kind's rows -- and offdiag_scale, the off-diagonal blocks'
    (unmasked, s x s/2: cuDNN's non-causal kernels, which no one-GPU record measures) time over
    what the causal attention curves give them: per device-bound row (host_time_s below half of
    time_s), 1 + (time_s - predicted at scale 1) / the off-diagonal blocks' predicted time; the
    median; the CP part's eager ops at `merge_factor` (`cp_merge_factor`) throughout, which the
    result carries as merge_factor. {} without host times."""
    if "host_time_s" not in rows or rows.empty:
        return {}
    fit = rows[(rows["bench"] == "cp_block") & (rows["block"] == "attention") & (rows["split"] == "fit")]
    fit = fit[(pd.to_numeric(fit["cp"], errors="coerce") > 1) & (pd.to_numeric(fit["host_time_s"], errors="coerce") > 0)]
    if fit.empty:
        return {}
    per_op: dict[str, list[float]] = {}
    for _, r in fit.iterrows():
        f, b, _ = _cp_attention_part(r, gpu, profile, host, merge_factor)
        fixed = [op[0] for op in f.ops + b.ops if isinstance(op, FixedHost)]   # measured collectives
        others = len(f.ops + b.ops) - len(fixed)
        per_op.setdefault(str(r["cp_kind"]), []).append((float(r["host_time_s"]) - sum(fixed)) / others)
    terms: dict = {"host_per_op": {k: float(pd.Series(v).median()) for k, v in per_op.items()},
                   "merge_factor": merge_factor}
    scales = []
    for _, r in fit.iterrows():
        if float(r["host_time_s"]) < 0.5 * float(r["time_s"]):
            _, _, off = _cp_attention_part(r, gpu, profile, host, merge_factor)
            pred = predict_cp_row(r, gpu, profile, host, dict(terms, offdiag_scale=1.0))
            scales.append(1.0 + (float(r["time_s"]) - pred) / off)
    if scales:
        terms["offdiag_scale"] = float(pd.Series(scales).median())
        terms["offdiag_source"] = "inferred from the fitting CP2 rows"
    return terms


CHUNKS_FILE = "cp_chunks.csv"


def _has_block_rows(path: Path) -> bool:
    """Whether a cp_chunks.csv holds real/cp.py's blocks (mla_block rows): a file of the Llama calls
    alone (h100x2/'s, whose mla_block rows were moved out as shared-GPU ones) measures no block."""
    return csv_exists(path) and (read_csv(path, usecols=["bench"])["bench"] == "mla_block").any()


def chunks_folder(folder: Path | str) -> Path | None:
    """Where the one-GPU records of real/cp.py's blocks (cp_chunks.csv with mla_block rows, campaign
    s8cp) are for a two-GPU folder <gpu>x<N>: the folder itself, else its one-GPU sibling <gpu>
    (h100/: s8cp's one-GPU part on a one-H100 machine, s13cph); None where neither holds them."""
    folder = Path(folder)
    for f in (folder, folder.parent / folder.name.split("x")[0]):
        if _has_block_rows(f / CHUNKS_FILE):
            return f
    return None


def measured_offdiag_scale(folder: Path | str, gpu: GPUSpec, profile: Profile) -> float | None:
    """The off-diagonal blocks' time over what `_cp_blocks` costs them (the causal curve at s/2 on
    2H heads, unmasked), measured on one GPU: cp_chunks.csv's mla_block rows (real/cp.py's
    block_forward + block_backward at the CP2 rows' s x s/2 and s/2 x s shapes, the kernel the
    blocks run), fitting rows, forward + backward, less the two casts of the block's output the
    record also times (to FP32 after the forward, back for the backward: costed by `_cp_blocks`
    as the merges); the median. None without the records."""
    where = chunks_folder(folder)
    if where is None:
        return None
    ratios = [ratio for _, _, ratio in _offdiag_ratios(where, gpu, profile)]
    return float(pd.Series(ratios).median()) if ratios else None


def _offdiag_ratios(where: Path, gpu: GPUSpec, profile: Profile) -> list[tuple[tuple, int, float]]:
    """[((heads, qk_dim, v_dim), s/2, measured / costed)] of the fitting off-diagonal mla_block
    rows (forward + backward) of the cp_chunks.csv in `where` (`measured_offdiag_scale`)."""
    df = read_csv(where / CHUNKS_FILE)
    df = df[(df["bench"] == "mla_block") & (df["split"] == "fit") & (df["phase"] == "fwd_bwd")
            & ~df["causal"].map(_bool) & (pd.to_numeric(df["time_s"], errors="coerce") > 0)]
    ratios = []
    for _, r in df.iterrows():
        s2 = min(_int(r["q_len"]), _int(r["kv_len"]))   # s/2
        H, E, Ev = _int(r["num_heads"]), _int(r["qk_head_dim"]), _int(r["v_head_dim"])
        op = Op("attn_core", OpKind.ATTENTION, "attn", batch=1, seq_len=s2, heads=2 * H, qk_dim=E, v_dim=Ev,
                causal=False, precision="bf16")
        e = Eager(gpu, profile)
        e.attention(op, "fwd")
        e.attention(op, "bwd")
        casts_s = 2 * compute.memory_time_s(_int(r["q_len"]) * H * Ev * (BF16_BYTES + 4), gpu, profile)
        ratios.append(((H, E, Ev), s2, (float(r["time_s"]) - casts_s) / sum(g for _, g in e.ops)))
    return ratios


# Whether the off-diagonal factor is taken at the row's own shape (`offdiag_by_shape`: per head
# shape, linear in log2 of s/2 over the fitting one-GPU block rows) instead of their median
# (docs/notes/s14cp_rule.md, candidate O: adopted; held-out CP2 within 10% H200 3 -> 6, H100 3 -> 7
# of 8).
ADOPT_OFFDIAG_BY_SHAPE = True


def offdiag_by_shape(folder: Path | str, gpu: GPUSpec, profile: Profile) -> dict[tuple, tuple[float, float]]:
    """{(heads, qk_dim, v_dim): (a, b)}: the off-diagonal blocks' measured / costed time as
    a + b * log2(s/2), least squares over the fitting mla_block rows of that head shape
    (cp_chunks.csv, `chunks_folder`), for a shape with rows at two sizes or more. cuDNN's unmasked
    s x s/2 blocks gain on the twin's causal curve's costing of them as s grows (H200: v2-lite
    1.15-1.40, v3 1.01-1.20 over the fitting sizes), so one median factor is too high at small s
    and too low at large s. {} without the records."""
    where = chunks_folder(folder)
    if where is None:
        return {}
    by_shape: dict[tuple, list[tuple[float, float]]] = {}
    for shape, s2, ratio in _offdiag_ratios(where, gpu, profile):
        by_shape.setdefault(shape, []).append((math.log2(s2), ratio))
    out = {}
    for shape, pts in by_shape.items():
        xs = [x for x, _ in pts]
        if len(set(xs)) < 2:
            continue
        mx, my = sum(xs) / len(xs), sum(y for _, y in pts) / len(pts)
        b = sum((x - mx) * (y - my) for x, y in pts) / sum((x - mx) ** 2 for x in xs)
        out[shape] = (my - b * mx, b)
    return out


def predict_block_row(row, gpu: GPUSpec, profile: Profile, host: dict | None = None,
                      kernel_host: dict | None = None, cp_terms: dict | None = None,
                      component_factors: dict | None = None, host_scale: float = 1.0) -> float | None:
    """Predicted seconds of a parallel_blocks.csv row, None for a bench it does not know; `host`:
    the measured host time per collective call (`load_collective_host`), `kernel_host` per
    launched kernel of a TP block (`block_kernel_host_s`), `component_factors` the TP blocks'
    traced kernel factors (`block_component_factors`), `host_scale` the factor on every host part."""
    if row["bench"] == "tp_block":
        return predict_tp_row(row, gpu, profile, host, kernel_host, component_factors, host_scale)
    if row["bench"] == "cp_block":
        return predict_cp_row(row, gpu, profile, host, cp_terms, host_scale)
    return None


def block_name(r) -> str:
    par = (f"tp{_int(r['tp'])}{' sp' if _bool(r['sequence_parallel']) and _int(r['tp']) > 1 else ''}"
           if r["bench"] == "tp_block" else f"cp{_int(r['cp'])}" + (f" {r['cp_kind']}" if str(r.get('cp_kind') or '') not in ('', 'nan') else ""))
    return f"{r['bench']} {r['block']} {r['model']} t{_int(r['tokens'])} {par}"


def load_block_rows(folder: Path | str) -> pd.DataFrame:
    """parallel_blocks.csv and any parallel_blocks_*.csv beside it (e.g. the CP re-measurement),
    rows with a positive time."""
    df = read_csvs(folder, "parallel_blocks*.csv")
    if df.empty:
        return df
    df["time_s"] = pd.to_numeric(df["time_s"], errors="coerce")
    return df[df["time_s"] > 0].reset_index(drop=True)


@dataclasses.dataclass
class FolderTerms:
    """What a folder's block rows are predicted with (`folder_terms`)."""
    spec: GPUSpec
    rows: pd.DataFrame
    host: dict
    kernel_host: dict
    cp_terms: dict
    component_factors: dict = dataclasses.field(default_factory=dict)
    tp_host: dict | None = None     # the TP rows' host terms where they differ from `host`
    probe_ref_s: float | None = None   # the host speed the terms are at (ADOPT_HOST_PROBE), else None


def tp_host_terms(host: dict, isolated: dict, rows: pd.DataFrame, crossing: bool | None = None) -> dict | None:
    """The host terms the tp_block rows take where `crossing` (None: ADOPT_CROSSING_HOST) and the
    fitting rows give them (`block_crossing_host_s`): each TP collective call at its own measured
    cost, or the isolated call's (`isolated`: collective_host.csv) where that is more, and
    CROSSING_KEY the host of a crossing;
    None otherwise (the rows take `host`, as the CP rows always do)."""
    use = ADOPT_CROSSING_HOST if crossing is None else crossing
    terms = block_crossing_host_s(rows) if use else None
    if terms is None:
        return None
    per_crossing, per_call = terms
    out = dict(host)
    out.update({kind: max(per_call, isolated.get(kind, 0.0)) for kind in TP_COLLECTIVE_KINDS})
    out[CROSSING_KEY] = per_crossing
    return out


def folder_terms(folder: Path | str, gpu: str, profile: Profile,
                 component_factors: bool | None = None, crossing_host: bool | None = None,
                 host_probe: bool | None = None, ids_gather_host: bool | None = None,
                 cp_sublayer: bool | None = None) -> FolderTerms:
    """The rows of a folder and the terms measured on its fitting rows and beside them (the
    collectives' host, the TP blocks' host per kernel, the CP terms, and, where
    `component_factors` (None: ADOPT_TRACE_COMPONENT_FACTORS) and the folder holds fitting traces,
    the TP blocks' traced kernel factors, and, where `crossing_host` (None: ADOPT_CROSSING_HOST),
    the TP rows' host per crossing and per call: `tp_host_terms`), as `predict_folder` uses them.
    Where `host_probe` (None: ADOPT_HOST_PROBE) and the fitting rows carry the host probe, every
    host term is read off the fitting rows' host measurements brought to the folder's reference
    speed (`reference_probe_s`, `at_probe_ref`): FolderTerms.probe_ref_s. Where `ids_gather_host`
    (None: ADOPT_IDS_GATHER_HOST), the MoE block's expert-ids all-gather at its isolated host
    (`_ids_gather_host_s`); where `cp_sublayer` (None: ADOPT_CP_SUBLAYER_FACTORS) and the folder holds
    fitting CP traces, the CP MLA block's sublayer kernels at their traced factors
    (`cp_sublayer_factors`: cp_terms["sublayer_factors"])."""
    spec = gpu_spec(gpu)
    rows = load_block_rows(folder)
    use_probe = ADOPT_HOST_PROBE if host_probe is None else host_probe
    probe_ref = reference_probe_s(rows) if use_probe else None
    measured = at_probe_ref(rows, probe_ref) if probe_ref else rows   # what the host terms read
    host = load_collective_host(folder, probe_ref)
    isolated = dict(host)
    ids_host = _ids_gather_host_s(isolated, ids_gather_host)
    in_block = block_collective_host_s(measured, ids_host)
    if in_block is not None:   # the call as the blocks make it, where the records say
        host.update({kind: max(in_block, host.get(kind, 0.0)) for kind in TP_COLLECTIVE_KINDS})
    if ids_host is not None:
        host[IDS_GATHER_KEY] = ids_host
    kernel_host = block_kernel_host_s(measured, spec, profile)
    merge = cp_merge_factor(folder, spec, profile)   # real/cp.py's eager merges, as PyTorch CP's measured
    merge = 1.0 if merge is None else merge
    cp_terms = {**cp_block_terms(measured, spec, profile, host, merge), "merge_factor": merge}
    offdiag = measured_offdiag_scale(folder, spec, profile)
    if offdiag is not None:   # measured on one GPU beats inferred from the CP rows
        cp_terms = {**cp_terms, "offdiag_scale": offdiag, "offdiag_source": f"{CHUNKS_FILE} mla_block rows"}
    if ADOPT_OFFDIAG_BY_SHAPE:
        by_shape = offdiag_by_shape(folder, spec, profile)
        if by_shape:
            cp_terms = {**cp_terms, "offdiag_by_shape": by_shape}
    if ADOPT_CP_SUBLAYER_FACTORS if cp_sublayer is None else cp_sublayer:
        sub = cp_sublayer_factors(folder, spec, profile)
        if sub:
            cp_terms = {**cp_terms, "sublayer_factors": sub}
    use = ADOPT_TRACE_COMPONENT_FACTORS if component_factors is None else component_factors
    factors = block_component_factors(folder, rows, spec, profile, host, kernel_host) if use else {}
    return FolderTerms(spec, rows, host, kernel_host, cp_terms, factors,
                       tp_host_terms(host, isolated, measured, crossing_host), probe_ref)


def predict_folder(folder: Path | str, gpu: str, profile: Profile, component_factors: bool | None = None,
                   crossing_host: bool | None = None, host_probe: bool | None = None,
                   ids_gather_host: bool | None = None, cp_sublayer: bool | None = None) -> list[dict]:
    """[{row, name, measured_s, predicted_s, held_out}] of a folder's block rows, each collective's
    host dispatch the one measured in the blocks' fitting rows (`block_collective_host_s`), or
    the isolated call's (collective_host.csv), where measured; the TP blocks' kernels at their
    traced component factors where `component_factors` (None: ADOPT_TRACE_COMPONENT_FACTORS); the
    TP rows' host per crossing and per call where `crossing_host` (None: ADOPT_CROSSING_HOST); each
    row's host at its own measured speed where `host_probe` (None: ADOPT_HOST_PROBE); the expert ids'
    all-gather at its isolated host where `ids_gather_host` (None: ADOPT_IDS_GATHER_HOST); the CP MLA
    sublayer at its traced factors where `cp_sublayer` (None: ADOPT_CP_SUBLAYER_FACTORS)."""
    t = folder_terms(folder, gpu, profile, component_factors, crossing_host, host_probe, ids_gather_host,
                     cp_sublayer)
    return predict_rows(t, t.rows, profile)


def predict_rows(t: FolderTerms, rows: pd.DataFrame, profile: Profile) -> list[dict]:
    """`predict_folder`'s rows for any block rows under a folder's terms `t` (e.g. another run's
    rows of the same configurations, each at its own host probe against t.probe_ref_s)."""
    out = []
    for _, r in rows.iterrows():
        host = t.tp_host if (t.tp_host is not None and r["bench"] == "tp_block") else t.host
        pred = predict_block_row(r, t.spec, profile, host, t.kernel_host, t.cp_terms, t.component_factors,
                                 host_scale(r, t.probe_ref_s))
        if pred is None:
            continue
        out.append({"row": r, "name": block_name(r), "measured_s": float(r["time_s"]), "predicted_s": float(pred),
                    "held_out": str(r.get("split", "holdout")) != "fit"})
    return out


# Whether real/cp.py CPMLABlock's sublayer (norm, projections, the q/k/v cats and transposes made
# contiguous, the output's, on this rank's s positions) takes its kernels at the factors its fitting
# CP2 traces measure over the twin's costing of them (`cp_sublayer_factors`), as the TP blocks take
# theirs (ADOPT_TRACE_COMPONENT_FACTORS); the one-GPU reference (TPMLABlock, no transposes) keeps the
# twin's costing (docs/notes/s18tpb_rule.md, candidate C).
ADOPT_CP_SUBLAYER_FACTORS = True
CP_TRACE_KERNELS = "cp_trace_kernels_rank*.csv"   # real/bench/cp_traces.py (h200x2/s13cp/)
CP_TRACE_EVENTS = ("kernel", "memcpy", "memset")
SUBLAYER_COMPONENTS = ("gemm", "memory")


def cp_trace_component_s(folder: Path | str) -> pd.DataFrame:
    """Per traced CP2 case (block, model, cp_kind, seq_len, split): GPU seconds a repetition by kernel
    component (tp_traces.kernel_component), the median over ranks and profiled repetitions, of every
    cp_trace_kernels_rank*.csv under `folder` (its subfolders included); empty without any."""
    k = read_csvs(folder, CP_TRACE_KERNELS, recursive=True)
    if k.empty:
        return pd.DataFrame()
    k = k[k["event"].isin(CP_TRACE_EVENTS)].copy()
    k["component"] = k["name"].astype(str).map(tp_traces.kernel_component)
    k["dur_s"] = (pd.to_numeric(k["end_us"]) - pd.to_numeric(k["start_us"])) * 1e-6
    keys = ["block", "model", "cp_kind", "seq_len", "split"]
    per_rep = k.groupby([*keys, "rank", "rep", "component"])["dur_s"].sum().unstack("component").fillna(0.0)
    return per_rep.groupby(keys).median().reset_index()


def _sublayer_twin_s(model: str, s: int, gpu: GPUSpec, profile: Profile) -> dict[str, float]:
    """{component: GPU seconds} of the twin's costing of CPMLABlock's sublayer on s positions
    (predict_cp_row's `_mla_ops` without the core, and the layer's missing kernels as "launch")."""
    f, b = _mla_ops(get_model(model), 1, s, "bf16", gpu, profile, with_core=False)
    f.missing_kernels("mla_layer_fwd", "bf16")
    b.missing_kernels("mla_layer_bwd", "bf16")
    return add_component_s({}, f, b)


def cp_sublayer_factors(folder: Path | str, gpu: GPUSpec, profile: Profile) -> dict[str, float]:
    """{gemm, memory: factor}: the CP MLA block's sublayer kernels measured over the twin's costing
    of them, from the folder's fitting CP2 traces alone (`cp_trace_component_s`): per fitting
    (model, cp_kind, seq_len) traced as both an MLA block and an attention block, the MLA case's
    component seconds less the attention case's (the same CP attention: what is left is the
    sublayer's), summed over cases, over the twin's sum (`_sublayer_twin_s` at s = seq_len / 2);
    the traced memory kernels less the launch-bound ones the twin costs at launch_s. {} where the
    folder holds no such pair."""
    med = cp_trace_component_s(folder)
    if med.empty:
        return {}
    fit = med[med["split"] == "fit"]
    keys = ["model", "cp_kind", "seq_len"]
    pairs = fit[fit["block"] == "mla"].merge(fit[fit["block"] == "attention"], on=keys, suffixes=("_mla", "_att"))
    measured = {c: 0.0 for c in SUBLAYER_COMPONENTS}
    twin = {c: 0.0 for c in (*SUBLAYER_COMPONENTS, "launch")}
    for _, r in pairs.iterrows():
        for c in SUBLAYER_COMPONENTS:
            measured[c] += float(r.get(f"{c}_mla", 0.0)) - float(r.get(f"{c}_att", 0.0))
        for c, v in _sublayer_twin_s(str(r["model"]), _int(r["seq_len"]) // 2, gpu, profile).items():
            if c in twin:
                twin[c] += v
    if pairs.empty:
        return {}
    return traced_over_twin(measured, twin, SUBLAYER_COMPONENTS)

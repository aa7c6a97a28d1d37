"""The twin's prediction of one measured case, with the twin's own cost functions.

Every prediction goes through `twin.costs.compute` (gemm_time_s, attention_time_s, memory_time_s,
op_time_s) and `twin.costs.flops` (attention_ops, moe_ops), so a fitted profile means exactly the
same thing in the fit, in validation and in a simulated step.

Precision labels in the records are kernel names (`bf16`, `fp8-rowwise`, `fp8-tensor`,
`fp8-blockwise`); the twin knows `bf16` and `fp8`. A profile may carry one curve per label; the
twin's `fp8` curve is the kernel V3 uses (blockwise, else rowwise). An FP8 case is predicted by the
twin's `fp8` roofline with that label's curve substituted.
"""

from __future__ import annotations

import dataclasses
import functools

from twin.costs import compute
from twin.costs.flops import Op, attention_ops, moe_ops
from twin.costs.profile import Profile
from twin.specs import GPUSpec, get_gpu, get_model

# which GEMM benches/labels the twin can predict
FP8_PREFERENCE = ("fp8-blockwise", "fp8-rowwise", "fp8-tensor", "fp8")


def gpu_spec(gpu: str) -> GPUSpec:
    """Records folder name (h100, h200, ...) -> catalog GPU spec."""
    return get_gpu(gpu.lower())


def twin_precision(label: str) -> str:
    return "bf16" if label in ("bf16", "") else "fp8"


def profile_for_label(profile: Profile, label: str) -> Profile:
    """The profile with the `fp8` curves replaced by those of an FP8 kernel label (if it has them)."""
    if twin_precision(label) == "bf16" or label == "fp8":
        return profile
    g = profile.gemm.get(label, profile.gemm["fp8"])
    gg = profile.grouped_gemm.get(label, profile.grouped_gemm["fp8"])
    return dataclasses.replace(profile, gemm={**profile.gemm, "fp8": g}, grouped_gemm={**profile.grouped_gemm, "fp8": gg})


@functools.cache
def _moe_spec(model: str, num_experts: int):
    return dataclasses.replace(get_model(model), num_routed_experts=num_experts)


def _sum_ops(ops, phases, prec, gpu, profile) -> float:
    return sum(compute.op_time_s(op, ph, prec, gpu, profile)
               for op in ops if op.kind not in ("dispatch", "combine") for ph in phases)


def predict_s(row, gpu: GPUSpec, profile: Profile) -> float | None:
    """Predicted seconds of a record row, or None when the twin has no prediction for its bench."""
    b = row["bench"]
    if b in ("gemm", "grouped_gemm"):
        label = row["precision"]
        prof = profile_for_label(profile, label)
        if b == "grouped_gemm":
            m, groups = int(row["tokens_per_group"]), int(row["groups"])
        else:
            m, groups = int(row["m"]), 1
        return compute.gemm_time_s(m, int(row["n"]), int(row["k"]), twin_precision(label), gpu, prof, groups=groups)
    if b in ("attn_fwd", "attn_bwd"):
        op = Op("attn_core", "attention", "attn", batch=int(row["batch"]), seq_len=int(row["seq_len"]),
                heads=int(row["num_heads"]), qk_dim=int(row["qk_head_dim"]), v_dim=int(row["v_head_dim"]),
                causal=bool(row["causal"]))
        return compute.attention_time_s(op, "fwd" if b == "attn_fwd" else "bwd", gpu, profile)
    if b == "memory":
        return compute.memory_time_s(float(row["bytes_moved"]), gpu, profile)
    phases = ("fwd",) if b.endswith("_fwd") else ("bwd_input", "bwd_weight")
    if b in ("mla_layer_fwd", "mla_layer_bwd"):
        label = row["precision"]
        spec = get_model(row["model"])
        ops = attention_ops(spec, int(row["batch"]), int(row["seq_len"]), 1, bool(row["causal"]))
        return _sum_ops(ops, phases, twin_precision(label), gpu, profile_for_label(profile, label))
    if b in ("moe_layer_fwd", "moe_layer_bwd"):
        label = row["precision"]
        spec = _moe_spec(row["model"], int(row["num_experts"]))
        imbalance = float(row["max_expert_tokens"]) / float(row["mean_expert_tokens"])
        # one GPU holds every expert (ep=1): no all-to-all; the most loaded expert sets the
        # grouped-GEMM rows, as the twin's straggler model does for an EP rank
        ops = moe_ops(spec, int(row["tokens"]), 1, gpu.gpus_per_node, 1, imbalance)
        return _sum_ops(ops, phases, twin_precision(label), gpu, profile_for_label(profile, label))
    return None

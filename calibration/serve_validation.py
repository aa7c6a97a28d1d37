"""Serving twin vs our own measurements: real/'s eager prefill and decode (calibration/measurements/*/model.csv).

real/ runs eager PyTorch without CUDA graphs, so decode is mostly host dispatch: this composes the
ops real/ issues with calibration.predict's eager host model. It validates the serving twin's op
accounting on a stack we can measure; the twin's deployment figures use the fused-stack profile.
"""

from __future__ import annotations

import csv
import dataclasses

from twin.costs.flops import BF16_BYTES
from calibration import records as rec
from calibration.predict import Eager, _mla_ops, _moe_ops, timed_window_s, zipf_expert_rows
from calibration.whole_step import predict_model_row
from calibration.records_io import csv_exists, open_csv
from twin.costs.profile import Profile, fitted_profile
from twin.serving.iteration import decode_step, prefill_forward
from twin.core.serve_specs import ServeSpec
from twin.core.specs import GPUSpec, ModelSpec, get_gpu, get_model


def _dense_ffn(e, m: ModelSpec, tokens: int) -> None:
    """real/'s dense SwiGLU FFN in BF16: gate+up GEMM, silu and multiply, down GEMM."""
    e.gemm(tokens, 2 * m.intermediate_size, m.hidden_size, "bf16")
    e.mem(5 * tokens * m.intermediate_size * BF16_BYTES, kernels=2)
    e.gemm(tokens, m.hidden_size, m.intermediate_size, "bf16")


def eager_prefill_s(m: ModelSpec, gpu: GPUSpec, prof: Profile, batch: int, prompt_len: int) -> float:
    """One eager-PyTorch prefill of real/infer.py (BF16, one GPU): per layer the MLA forward
    (expanded K/V) and MoE forward op sequences of calibration.predict (_mla_ops, _moe_ops with
    balanced routing), the dense MLP, norms, residuals and cache writes, then the head on the
    last position. Host dispatch from profile.host_s."""
    T, D, B2 = batch * prompt_len, m.hidden_size, BF16_BYTES
    ops = Eager(gpu, prof)
    ops.mem(2 * T * D * B2)                                            # embedding
    ops_list = list(ops.ops)
    for layer in range(m.num_layers):
        e = Eager(gpu, prof)
        e.mem(2 * T * D * B2)                                          # attn_norm
        ops_list += e.ops
        mla_f, _ = _mla_ops(m, batch, prompt_len, "bf16", gpu, prof)
        ops_list += mla_f.ops
        e = Eager(gpu, prof)
        e.mem(2 * T * (m.kv_lora_rank + m.qk_rope_head_dim) * B2, kernels=2)   # cache writes
        e.mem(3 * T * D * B2)                                          # residual
        e.mem(2 * T * D * B2)                                          # ffn_norm
        if layer < m.num_dense_layers:
            _dense_ffn(e, m, T)
            ops_list += e.ops
        else:
            e.gemm(T, m.num_routed_experts, D, "bf16")                 # gate
            e.mem(T * m.num_routed_experts * 4 * 8.0, kernels=5)       # routing (memory.csv router_topk form)
            e.small(9)
            ops_list += e.ops
            counts = zipf_expert_rows(T, m.num_routed_experts, m.top_k, 0.0)
            moe_f, _ = _moe_ops(m, T, counts, "bf16", gpu, prof)
            ops_list += moe_f.ops
        e = Eager(gpu, prof)
        e.mem(3 * T * D * B2)                                          # residual
        ops_list += e.ops
    e = Eager(gpu, prof)
    e.mem(2 * batch * D * B2)
    e.gemm(batch, m.vocab_size, D, "bf16")
    e.mem(batch * m.vocab_size * 4)
    ops_list += e.ops
    return timed_window_s([], ops_list)


def validate_measured(gpus=("h100", "h200")) -> list[dict]:
    """Twin vs measured decode/prefill rows of <records root>/<gpu>/model.csv (calibration.records.records_root:
    calibration/measurements, or the folder --records names).

    decode: eager op sequence with host dispatch (calibration.whole_step.predict_model_row, the op
    list twin validate predicts these records with) - on these small slices mostly a host-overhead
    test, said so in the row. prefill: the twin's fused-stack prefill model on
    one GPU (ep = 1, BF16) and, for comparison, the same with the eager host floor."""
    root = rec.records_root()
    out = []
    for g in gpus:
        path = root / g / "model.csv"
        if not csv_exists(path):
            continue
        gpu = get_gpu(g)
        eager = _eager_profile(g)
        with open_csv(path) as fh:
            for row in csv.DictReader(fh):
                if row["bench"] not in ("decode", "prefill"):
                    continue
                m = get_model(row["model"])
                B, Pl = int(row["batch"]), int(float(row["prompt_len"]))
                measured = float(row["time_s"])
                if row["bench"] == "decode":
                    G = int(float(row["gen_len"]))
                    # real/'s eager decode step as twin validate predicts the records (one op list)
                    pred = predict_model_row({**row, "batch": B, "prompt_len": Pl, "gen_len": G}, gpu, eager)
                    s = ServeSpec(ep=1, weight_precision="bf16", batch=B, input_len=Pl, output_len=G, num_microbatches=1)
                    gpu_only = decode_step(m, gpu, s, B, dataclasses.replace(eager, host_s={}))["step_s"]
                    note = "eager host dispatch dominates: a host-overhead test" if pred > 1.5 * gpu_only else "GPU-bound"
                else:
                    s = ServeSpec(ep=1, weight_precision="bf16", input_len=Pl, output_len=1, num_microbatches=1,
                                  prefill_chunk_tokens=B * Pl, prefill_comm_sms=0)
                    pred = eager_prefill_s(m, gpu, eager, B, Pl)
                    gpu_only = prefill_forward(m, gpu, s, dataclasses.replace(eager, host_s={}))["forward_s"]
                    note = "eager op sequence (calibration.predict); GPU-only = the serving twin's fused prefill"
                out.append({"gpu": g, "bench": row["bench"], "model": row["model"], "batch": B,
                            "measured_s": measured, "predicted_s": pred, "gpu_only_s": gpu_only,
                            "rel_error": pred / measured - 1.0, "note": note})
    return out


def _eager_profile(g: str) -> Profile:
    """The profile as fitted: real/'s eager stack (unfused FP8 quantization, host dispatch times)."""
    return fitted_profile(g)

"""Run the peers (Calculon, llm-analysis) on the published-run rows; a helper of
benchmarks/published_runs.py, run by it in the peers' own virtual environment (never the project's:
neither peer is a dependency of the twin). Reads a JSON job on stdin, writes JSON results on stdout.

Standard library plus the peers only; no project imports. Each peer gets the row as far as its
inputs can express it, and the way it was configured is returned beside its figure:

- Calculon (calculon-ai/calculon, a checkout on PYTHONPATH): its H100 system file
  (systems/h100_80g_nvl8.json) as shipped, with the HBM capacity and bandwidth of the row's card.
  Multi-head attention (no GQA in Calculon), a two-matrix FFN of 1.5 x the SwiGLU width (equal
  FLOPs), no embedding or logits layer (Calculon models the blocks). FSDP (ZeRO-3) is expressed as
  optimizer sharding, its only sharding. No context parallelism: CP rows are skipped. Interleaved
  pipelines: `pipeline_interleaving` is the row's virtual_stages, the V the twin runs (Calculon
  accepts any V that divides the blocks a stage, which every row's V does).
- llm-analysis (PyPI llm-analysis): `llm_analysis.analysis.train` with the model as a config file
  (GQA, gated FFN as published), the h100-sxm-80gb GPU config, and the flops and memory efficiencies
  its README gives "if one has to make assumptions" (0.5 and 0.9). Its training latency is the
  FLOPs at that rate; CP rows are skipped. It has no pipeline schedule (no bubble, no
  communication in its training latency: llm_analysis/analysis.py LLMAnalysis.training), so
  virtual stages cannot be expressed to it and would not change its figure; it is given PP only.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import sys
import tempfile
from importlib import metadata

LLM_ANALYSIS_FLOPS_EFF = 0.5    # llm-analysis README, "How to Set FLOPS and Memory Efficiency"
LLM_ANALYSIS_HBM_EFF = 0.9      # same section: "0.9 can be an aggressive target for memory efficiency"
# torchtitan's per-op policy ('selective_op') has no counterpart in either peer: their selective
# (attention-only) recomputation is the nearest they can express
# Megatron's selective recomputation (the core attention) is what both peers call attention-only recompute
RECOMPUTE_CALCULON = {"none": "none", "selective": "attn_only", "selective_op": "attn_only", "full": "full",
                      "megatron_selective": "attn_only"}
RECOMPUTE_LLM_ANALYSIS = {"none": 0, "selective": 1, "selective_op": 1, "full": 2,
                          "megatron_selective": 1}   # ActivationRecomputation


def calculon_run(row: dict, system: dict) -> tuple[float | None, str]:
    m, p = row["model_spec"], row["plan"]
    if p.get("cp", 1) > 1:
        return None, "not expressible: context parallelism"
    n, tp, pp = row["num_gpus"], p["tp"], p["pp"]
    dp = n // (tp * pp)
    # a GPT row's FFN is 4h as published; a SwiGLU width I becomes a two-matrix 1.5 I (equal FLOPs)
    ffn = 4 * m["hidden_size"] if row["model"].startswith("megatron-gpt") else int(m["intermediate_size"] * 1.5)
    app = {"hidden": m["hidden_size"], "feedforward": ffn, "seq_size": row["seq_len"],
           "attn_heads": m["num_heads"], "attn_size": m["head_dim"], "num_blocks": m["num_layers"]}
    tp_overlap = "pipe" if p.get("tp_comm_overlap") and tp > 1 else "none"
    recompute = RECOMPUTE_CALCULON[p.get("recompute", "selective")]
    exe = {"num_procs": n, "tensor_par": tp, "pipeline_par": pp, "data_par": dp,
           "tensor_par_net": 0, "pipeline_par_net": 0 if tp * pp <= 8 else 1, "data_par_net": 0 if n <= 8 else 1,
           "batch_size": row["global_batch_seqs"], "microbatch_size": p["micro_batch_seqs"],
           "datatype": "float8" if p.get("gemm_precision") == "fp8" else "float16", "fused_activation": True,
           "attention_type": "multihead", "activation_recompute": recompute,
           "pipeline_interleaving": p.get("virtual_stages", 1), "optimizer_sharding": p.get("zero_stage", 0) >= 1,
           "tensor_par_comm_type": "rs_ag" if p.get("sequence_parallel") else "ar", "tensor_par_overlap": tp_overlap,
           "seq_par_ag_redo": False, "data_par_overlap": True, "weight_offload": False,
           "activations_offload": False, "optimizer_offload": False, "training": True}
    config = (f"model {app}; execution tp{tp} pp{pp} dp{dp} mbs{exe['microbatch_size']} {exe['datatype']} "
              f"recompute={recompute} interleave={exe['pipeline_interleaving']} opt_shard={exe['optimizer_sharding']} "
              f"tp_comm={exe['tensor_par_comm_type']} tp_overlap={tp_overlap} dp_overlap=True; system h100_80g_nvl8 "
              f"mem1 {system['mem1']['GiB']} GiB {system['mem1']['GBps']} GB/s")
    try:
        stats = _calculon_stats(app, exe, system)
    except Exception as exc:   # Calculon refuses a layout (memory, divisibility): say why
        if "Mem tier1" not in str(exc):
            return None, f"refused: {exc}; {config}"
        # over capacity: Calculon has no FSDP (ZeRO-3) and keeps whole weights and gradients, so a
        # sharded run looks too big to it; its time does not depend on the capacity, so it is
        # taken with the capacity check lifted, and the configuration says so
        roomy = copy.deepcopy(system)
        roomy["mem1"]["GiB"] = 1e6
        stats = _calculon_stats(app, exe, roomy)
        config += f"; memory check lifted ({exc})"
    tokens_per_s_per_gpu = stats["sample_rate"] * row["seq_len"] / n
    mem_gib = stats["proc_mem_tier1_cap_req"] / 2**30
    return tokens_per_s_per_gpu, f"{config}; needs {mem_gib:.1f} GiB"


def _calculon_stats(app: dict, exe: dict, system: dict) -> dict:
    from calculon import System
    from calculon.llm import Llm

    model = Llm(Llm.Application(app), logging.getLogger("calculon"))
    syst = System(system)
    model.compile(syst, Llm.Execution.from_json(exe))
    model.run(syst)
    return model.get_stats_json(False)


def llm_analysis_run(row: dict) -> tuple[float | None, str]:
    from llm_analysis.analysis import train

    m, p = row["model_spec"], row["plan"]
    if p.get("cp", 1) > 1:
        return None, "not expressible: context parallelism"
    gated = not row["model"].startswith("megatron-gpt")
    ffn = m["intermediate_size"] if gated else 4 * m["hidden_size"]
    cfg = {"name": row["model"], "num_layers": m["num_layers"], "n_head": m["num_heads"], "hidden_dim": m["hidden_size"],
           "vocab_size": m["vocab_size"], "max_seq_len": row["seq_len"], "num_key_value_heads": m["num_kv_heads"],
           "ffn_embed_dim": ffn, "expansion_ratio": ffn / m["hidden_size"], "model_type": "llama" if gated else "gpt"}
    tp = p["tp"]
    dtype = "w8a8e16" if p.get("gemm_precision") == "fp8" else "w16a16e16"
    kwargs = dict(gpu_name="h100-sxm-80gb", dtype_name=dtype, log_level="ERROR",
                  batch_size_per_gpu=p["micro_batch_seqs"], global_batch_size=row["global_batch_seqs"],
                  seq_len=row["seq_len"], activation_recomputation=RECOMPUTE_LLM_ANALYSIS[p.get("recompute", "selective")],
                  ds_zero=p.get("zero_stage", 0), tp_size=tp, pp_size=p["pp"],
                  sp_size=tp if p.get("sequence_parallel") else 1, total_num_gpus=row["num_gpus"],
                  mlp_gated_linear_units=gated, flops_efficiency=LLM_ANALYSIS_FLOPS_EFF,
                  hbm_memory_efficiency=LLM_ANALYSIS_HBM_EFF)
    config = (f"train({', '.join(f'{k}={v}' for k, v in kwargs.items() if k != 'log_level')}); model ffn={ffn} "
              f"kv_heads={m['num_kv_heads']} gated={gated}")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, f"{row['id']}.json")
        with open(path, "w") as fh:
            json.dump(cfg, fh)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                out = train(model_name=path, **kwargs)
        except Exception as exc:
            return None, f"refused: {exc}; {config}"
    return row["global_batch_seqs"] * row["seq_len"] / out["latency_per_iter"] / row["num_gpus"], config


def main() -> int:
    job = json.load(sys.stdin)
    logging.basicConfig(level=logging.ERROR)
    base_system = json.load(open(os.path.join(job["calculon_dir"], "systems", "h100_80g_nvl8.json")))
    out = {"calculon_version": f"calculon-ai/calculon@{job['calculon_commit']}",
           "llm_analysis_version": f"llm-analysis=={metadata.version('llm-analysis')}", "rows": []}
    for row in job["rows"]:
        system = copy.deepcopy(base_system)
        system["mem1"]["GiB"] = row["hbm_gib"]
        system["mem1"]["GBps"] = row["hbm_gb_per_s"]
        c, c_cfg = calculon_run(row, system)
        a, a_cfg = llm_analysis_run(row)
        out["rows"].append({"id": row["id"], "calculon_tokens_per_s_per_gpu": c, "calculon_config": c_cfg,
                            "llm_analysis_tokens_per_s_per_gpu": a, "llm_analysis_config": a_cfg})
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Session s24v3pre (issue 15): where the serving twin prices v3-slice-2l's eager prompt steps short, kernel by kernel.

A diagnosis, no model change (docs/notes/s24v3pre.md). Three figures per fit model and prompt composition
(prompts x tokens, no decode rows):
- the committed twin's kernel seconds of the step as the serving engine asks them (IterationCosts._kernels at the
  s24pipe fitting check's shapes: prompt tokens p x n at span n) and its score term (score_s_per_pair x p n^2), op by
  op (`twin_ops`: the prefill forward's ops, twin.serving.iteration.prefill_forward's own loop, per layer);
- the measured step: h100/s24eager/fit's gpu_s (CUDA events around the step's kernels, rounds 1-3) and duration_s;
- the measured kernels by the engine's region (h100/s24v3pre/prefill_kernels.csv, real/serve/prefillprof.py: each
  kernel under the model part and aten operator that launched it), when those records are filed.

    python -m calibration.serve_v3_prefill            # the table per model and composition
    python -m calibration.serve_v3_prefill --kernels  # and the measured kernels by region and operator
"""

from __future__ import annotations

import csv
import dataclasses
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from calibration import entry
from calibration import records as rec
from calibration import serve_eager_host as seh
from calibration.records_io import csv_exists, open_csv
from calibration.serve_pipeline import costs_for
from twin.core.specs import get_model
from twin.costs import compute
from twin.costs.flops import OpKind, attention_ops, dense_ffn_ops, moe_ops, ExpertLoad
from twin.serving import iteration as it
from twin.serving.pipeline import is_moe_layer
from twin.serving.timing import IterationCosts

TABLE = "real-serve-h100-ep1"
KERNELS = Path("h100") / "s24v3pre" / "prefill_kernels.csv"
STEPS = Path("h100") / "s24v3pre" / "prefill_steps.csv"


def twin_ops(costs: IterationCosts, tokens: int, span: int) -> list[tuple[str, str, float]]:
    """[(part, op name, seconds)] of one layer-kind's ops of the prefill forward the twin prices for `tokens` prompt
    tokens of span `span` (one GPU, one micro-batch): part 'attn' (per layer), 'dense_ffn' (per dense layer), 'moe'
    (per MoE layer), 'head' (once). The same op times as prefill_forward's own loop."""
    m, gpu = costs.m, costs.gpu
    s = dataclasses.replace(costs.s, prefill_chunk_tokens=tokens, input_len=span, num_microbatches=1)
    prof = it.serving_profile(gpu, s, None)
    sm = compute.sm_fraction(gpu, s.prefill_comm_sms if m.is_moe and s.ep > 1 else 0)
    seqs = tokens / span
    out = []
    for op in attention_ops(m, 1, tokens, s.tp):
        if op.kind == OpKind.ATTENTION:
            one = dataclasses.replace(op, batch=1, seq_len=span, causal=True)
            x = (compute.attention_time_s(one, "fwd", gpu, prof, sm) - prof.launch_s) * seqs + prof.launch_s
        else:
            x = compute.op_time_s(op, "fwd", s.weight_precision, gpu, prof, sm)
        out.append(("attn", op.name, x))
    if m.is_moe:
        mm, ms = it.moe_view(m, s)
        loads = it._load_figures(m, ms, gpu.gpus_per_node)
        load = ExpertLoad(loads["rows_frac"], loads["rows_frac"], loads["rows_frac"])
        for op in moe_ops(mm, tokens * s.moe_tp, ms.ep, gpu.gpus_per_node, s.max_nodes_per_token, load):
            if op.kind in it.ALL_TO_ALL_KINDS:
                continue
            out.append(("moe", op.name, compute.op_time_s(op, "fwd", s.weight_precision, gpu, prof, sm)))
    if m.num_layers > m.num_moe_layers:
        for op in dense_ffn_ops(m, tokens, s.tp):
            if op.kind != OpKind.MEMORY:
                out.append(("dense_ffn", op.name, compute.op_time_s(op, "fwd", s.weight_precision, gpu, prof, sm)))
        out.append(("dense_ffn", "elementwise(3 x 3 t d)",
                    3 * compute.memory_time_s(3 * tokens * m.hidden_size * it.BF16_BYTES, gpu, prof)))
    last = max(1, round(tokens / span))
    out.append(("head", "lm_head", compute.gemm_time_s(last, m.vocab_size // s.tp, m.hidden_size, "bf16", gpu, prof)))
    return out


def twin_step(costs: IterationCosts, prompts: int, tokens: int) -> dict:
    """The committed twin's kernel seconds and score term of a step of `prompts` prompts of `tokens` tokens."""
    kern, _, _, _, _ = costs._kernels(0, 0.0, float(prompts * tokens), float(tokens), 0.0, 0.0)
    scores = costs.engine["score_s_per_pair"] * prompts * tokens * tokens
    ops = twin_ops(costs, prompts * tokens, tokens)
    m = costs.m
    per = defaultdict(float)
    for part, _, x in ops:
        per[part] += x
    layers = {"attn": m.num_layers, "moe": m.num_moe_layers, "dense_ffn": m.num_layers - m.num_moe_layers, "head": 1}
    total_ops = sum(per[k] * layers[k] for k in per)
    return {"kernels_s": kern, "scores_s": scores, "ops_total_s": total_ops, "per_part_s": dict(per), "ops": ops}


def measured_steps(root: Path) -> dict[tuple[str, int, int], dict]:
    """{(model, prompts, tokens): medians of gpu_s, duration_s, host_s}: s24eager's fitting rounds, no decode rows."""
    out = {}
    rows = [r for r in seh.fit_rows(seh.read_fit(root)) if r["gpu"] == "h100" and r["decode_rows"] == "0"
            and not r["composition"].startswith("setup")]
    for key in sorted({(r["model"], int(r["prompts"]), int(r["tokens"])) for r in rows}):
        rs = [r for r in rows if (r["model"], int(r["prompts"]), int(r["tokens"])) == key]
        out[key] = {k: float(np.median([float(r[k]) for r in rs])) for k in ("gpu_s", "duration_s", "host_s")}
        out[key]["row"] = rs[0]
    return out


def measured_kernels(root: Path) -> dict[tuple[str, int, int], dict[tuple[str, str, str], float]]:
    """{(model, prompts, tokens): {(region, op, kernel): GPU seconds a step (mean over the profiled reps)}}."""
    path = Path(root) / KERNELS
    if not csv_exists(path):
        return {}
    acc: dict = defaultdict(lambda: defaultdict(float))
    reps: dict = defaultdict(set)
    with open_csv(path) as f:
        for r in csv.DictReader(f):
            key = (r["model"], int(r["prompts"]), int(r["tokens"]))
            reps[key].add(r["rep"])
            acc[key][(r["region"], r["op"], r["kernel"])] += float(r["time_s"])
    return {k: {kk: v / len(reps[k]) for kk, v in d.items()} for k, d in acc.items()}


def region_group(region: str) -> str:
    """A region with its layer index dropped: 'layers.1.attn.prefill_core' -> 'attn.prefill_core'."""
    parts = region.split(".")
    return ".".join(parts[2:]) if parts[0] == "layers" and len(parts) > 2 else region


# the twin's ops and the measured regions, part by part (the twin's op names; the engine's host ranges)
PART_OPS = {
    "attention core": ("kv_up", "attn_core", "scores"),
    "q path (incl. rope)": ("q_down", "q_norm", "q_up", "q_proj", "rope"),
    "kv latents": ("kv_down", "kv_norm"),
    "o_proj + cache write + concat": ("o_proj",),
    "dense FFN": ("ffn_gate_up", "ffn_down", "elementwise(3 x 3 t d)"),
    "MoE GEMMs": ("experts_gate_up", "experts_down", "shared_gate_up", "shared_down"),
    "MoE routing + elementwise": ("router", "router_topk", "permute", "unpermute", "experts_swiglu", "shared_swiglu"),
    "norms, residuals, embed, engine": ("attn_norm", "ffn_norm", "residual_add"),
    "head": ("lm_head",),
}
GROUPED_GEMMS = ("aten::_grouped_mm", "aten::mm")


def measured_part(region: str, op: str, dense_layers: set[int]) -> str:
    """The PART_OPS part of one measured kernel (its region and launching operator)."""
    parts = region.split(".")
    layer = int(parts[1]) if parts[0] == "layers" else -1
    rest = ".".join(parts[2:])
    if rest.startswith("attn.prefill_core") or rest.startswith("attn.decode_core"):
        return "attention core"
    if rest.startswith("attn.queries") or rest == "attn.q_norm":
        return "q path (incl. rope)"
    if rest.startswith("attn.latents") or rest == "attn.kv_norm":
        return "kv latents"
    if rest == "attn":
        return "o_proj + cache write + concat"
    if rest.startswith("ffn") and rest != "ffn_norm":
        if layer in dense_layers:
            return "dense FFN"
        return "MoE GEMMs" if op in GROUPED_GEMMS and rest in ("ffn", "ffn.shared") else "MoE routing + elementwise"
    if region == "logits":
        return "head"
    return "norms, residuals, embed, engine"


def compare(costs: IterationCosts, prompts: int, tokens: int, meas: dict) -> list[tuple[str, float, float]]:
    """[(part, measured s, twin s)] of one prompt step: the twin's ops times their layers (its score term in the
    attention core), the measured kernels by measured_part."""
    m = costs.m
    tw = twin_step(costs, prompts, tokens)
    layers = {"attn": m.num_layers, "moe": m.num_moe_layers, "dense_ffn": m.num_layers - m.num_moe_layers, "head": 1}
    twin = defaultdict(float)
    for part, name, x in tw["ops"]:
        where = next((p for p, names in PART_OPS.items() if name in names), "norms, residuals, embed, engine")
        twin[where] += x * layers[part]
    twin["attention core"] += tw["scores_s"]
    dense = {k for k in range(m.num_layers) if not is_moe_layer(m, k)}
    got = defaultdict(float)
    for (region, op, _), x in meas.items():
        got[measured_part(region, op, dense)] += x
    return [(p, got.get(p, 0.0), twin.get(p, 0.0)) for p in PART_OPS]


@entry.script
def main(argv: list[str] | None = None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.serve_v3_prefill", description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, help="the records root (default: --records DIR, else calibration/measurements)")
    ap.add_argument("--kernels", action="store_true", help="list the measured kernels by region and operator")
    ap.add_argument("--models", default="v3-slice-2l,qwen3moe-mla-slice")
    args = ap.parse_args(argv)
    args.root = Path(args.root) if args.root else rec.records_root()
    steps = measured_steps(args.root)
    kernels = measured_kernels(args.root)
    for model in args.models.split(","):
        keys = [k for k in steps if k[0] == model]
        if not keys:
            continue
        row0 = steps[keys[0]]["row"]
        costs = costs_for(model, row0, seh.probe_s(row0), TABLE, args.root)
        m = get_model(model)
        print(f"== {model}: {m.num_layers} layers ({m.num_moe_layers} MoE), {m.num_heads} heads; twin {TABLE}")
        print(f"{'comp':10s} {'gpu_s':>7s} {'dur':>7s} {'twin k':>7s} {'+score':>7s} {'k+s/gpu':>8s} {'prof k':>7s}")
        for key in keys:
            _, p, n = key
            ms = steps[key]
            tw = twin_step(costs, p, n)
            prof = sum(kernels.get(key, {}).values())
            print(f"p{p}x{n:<6d} {ms['gpu_s'] * 1e3:7.2f} {ms['duration_s'] * 1e3:7.2f} {tw['kernels_s'] * 1e3:7.2f} "
                  f"{tw['scores_s'] * 1e3:7.2f} {(tw['kernels_s'] + tw['scores_s']) / ms['gpu_s'] - 1:+8.1%} "
                  f"{prof * 1e3:7.2f}")
        for key in keys:
            _, p, n = key
            tw = twin_step(costs, p, n)
            print(f"  twin ops p{p}x{n} (ms; per layer of its kind; sum x layers {tw['ops_total_s'] * 1e3:.2f}, "
                  f"interpolated {tw['kernels_s'] * 1e3:.2f}):")
            for part, name, x in tw["ops"]:
                print(f"    {part:10s} {name:28s} {x * 1e3:8.3f}")
            meas = kernels.get(key)
            if not meas:
                continue
            print(f"  by part p{p}x{n} (ms a step: measured, twin, twin - measured):")
            for part, got, want in compare(costs, p, n, meas):
                print(f"    {part:32s} {got * 1e3:7.3f} {want * 1e3:7.3f} {(want - got) * 1e3:+7.3f}")
            by_region = defaultdict(float)
            for (region, op, kern), x in meas.items():
                by_region[region_group(region)] += x
            print(f"  measured by region p{p}x{n} (ms a step, all layers):")
            for region, x in sorted(by_region.items(), key=lambda kv: -kv[1]):
                print(f"    {region:34s} {x * 1e3:8.3f}")
            if args.kernels:
                by_op = defaultdict(float)
                for (region, op, kern), x in meas.items():
                    by_op[(region_group(region), op, kern[:70])] += x
                for (region, op, kern), x in sorted(by_op.items(), key=lambda kv: -kv[1])[:40]:
                    print(f"      {x * 1e3:7.3f} {region:26s} {op:28s} {kern}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The aten operators one eager engine step dispatches, by where in the forward they fall (issue 15, s24pipe).

    python -m real.serve.opcount --models a,b [--out FILE]

Why: docs/notes/s24pipe_rule.md prices an eager one-GPU iteration as a pipeline of the host's operator launches and
the GPU's kernels; the host stream needs the step's operators in order, split where the twin's kernel stages split
(before the first layer, each layer's attention and its FFN, the head). The count is structural (no timing): the
engine's own step (Engine.step, GPU1's settings, graphs off) on CPU under a TorchDispatchMode, the segment bounds
taken from forward pre-hooks on each layer's attn_norm and ffn_norm and on the final norm. The widths are shrunk
(hidden 128, vocabulary 512, FFN widths 128 and 32, q LoRA rank 64): layers, heads, experts, routing and the
attention path are the model's, so the count is its own (tests/real/test_opcount.py checks a model counted at full
and shrunk width agree). Float32, as eagerhost's CPU path.

Each model's counts are solved into the structure (checked on every composition counted, else an error):
    pre  = pre_ops + pre_ops_per_chunk x chunks + pre_ops_per_row x decode rows + pre_ops_decode [decode rows > 0]
    attn = attn_ops + attn_ops_per_chunk x chunks + attn_ops_decode [decode rows > 0]      (each layer)
    ffn  = ffn_ops_dense (dense layer) or ffn_ops_moe (MoE layer)
    head = head_ops
and where the heavy kernels sit (operator index within their segment): the MoE FFN's two grouped expert GEMMs
(ffn_moe_gemm1_at, ffn_moe_gemm2_at) and the head's GEMM (head_gemm_at). Printed as the TOML table twin/data/serve_eager_ops.toml holds.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from real.configs import get_spec, replace
from real.model import build_model
from real.serve.engine import Engine, EngineConfig
from real.serve.eagerhost import Driver, OpCounter
from real.serve.plans import GPU1

# (prompts, tokens each, decode rows): enough to solve the structure and check it
COMPOSITIONS = ((1, 64, 0), (2, 64, 0), (3, 48, 0), (1, 64, 4), (1, 64, 12), (2, 48, 8))
SHRUNK = {"hidden_size": 128, "vocab_size": 512, "intermediate_size": 128, "moe_intermediate_size": 32}
SHRUNK_Q_LORA = 64
NUM_PAGES = 256
FIELDS = ("pre_ops", "pre_ops_per_chunk", "pre_ops_per_row", "pre_ops_decode", "attn_ops", "attn_ops_per_chunk",
          "attn_ops_decode", "ffn_ops_dense", "ffn_ops_moe", "head_ops", "ffn_moe_gemm1_at", "ffn_moe_gemm2_at",
          "head_gemm_at")


class SegmentCounter(OpCounter):
    """eagerhost's operator count, with each operator's name and `marks`: (label, count so far) at each
    segment start."""

    def __init__(self):
        super().__init__()
        self.marks: list[tuple[str, int]] = []
        self.names: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.append(func.__name__)
        return super().__torch_dispatch__(func, types, args, kwargs)


def shrunk(spec, full: bool = False):
    """The spec at small widths (structure kept), or as is (`full`)."""
    if full:
        return spec
    return replace(spec, **SHRUNK, **({"q_lora_rank": SHRUNK_Q_LORA} if spec.q_lora_rank else {}))


def segments(marks: list[tuple[str, int]], total: int) -> dict[str, int]:
    """{segment label: operators} from the segment starts and the step's total."""
    out = {"pre": marks[0][1] if marks else total}
    for (label, c), (_, c2) in zip(marks, [*marks[1:], ("end", total)]):
        out[label] = c2 - c
    return out


def count_model(name: str, full: bool = False, compositions=COMPOSITIONS) -> dict[tuple, dict[str, int]]:
    """{(prompts, tokens, decode rows): {segment: operators}} of one eager engine step each, on CPU."""
    spec = shrunk(get_spec(name), full)
    torch.manual_seed(0)
    model = build_model(spec, torch.device("cpu"), torch.float32, max_seq_len=GPU1.max_context).eval()
    engine = Engine(model, EngineConfig(page_size=GPU1.page_size, num_pages=NUM_PAGES, token_budget=GPU1.token_budget,
                                        max_running=GPU1.max_running, max_context=GPU1.max_context, cuda_graphs=False))
    drv = Driver(engine, spec.vocab_size)
    state = {"counter": None}

    def mark(label):
        def hook(_module, _args):
            if state["counter"] is not None:
                state["counter"].marks.append((label, state["counter"].count))
        return hook

    for i, layer in enumerate(model.layers):
        layer.attn_norm.register_forward_pre_hook(mark(f"attn{i}"))
        layer.ffn_norm.register_forward_pre_hook(mark(f"ffn{i}"))
    model.norm.register_forward_pre_hook(mark("head"))
    out = {}
    with torch.no_grad():
        for p, n, d in compositions:
            engine.reset(engine.clock())
            if d:
                drv._add(d, 8, 16)
                engine.step()
            drv._add(p, n, 2)
            c = state["counter"] = SegmentCounter()
            with c:
                engine.step()
            state["counter"] = None
            out[(p, n, d)] = {**segments(c.marks, c.count), **positions(c.marks, c.names)}
    return out


def positions(marks: list[tuple[str, int]], names: list[str]) -> dict[str, int]:
    """Where the heavy kernels sit: the first MoE layer's two grouped expert GEMMs (operator index within its FFN
    segment; -1 without one) and the head's GEMM (within the head segment)."""
    starts = [c for _, c in marks] + [len(names)]
    out = {"ffn_moe_gemm1_at": -1, "ffn_moe_gemm2_at": -1, "head_gemm_at": -1}
    for k, (label, c) in enumerate(marks):
        seg = names[c:starts[k + 1]]
        if label.startswith("ffn") and out["ffn_moe_gemm1_at"] < 0:
            at = [i for i, n in enumerate(seg) if n.startswith("_grouped_mm")]
            if len(at) == 2:
                out["ffn_moe_gemm1_at"], out["ffn_moe_gemm2_at"] = at
        if label == "head":
            at = [i for i, n in enumerate(seg) if n.split(".")[0] in ("mm", "addmm", "linear")]
            out["head_gemm_at"] = at[-1] if at else -1
    return out


def structure(spec, counts: dict[tuple, dict[str, int]]) -> dict[str, int]:
    """The FIELDS solved from the counts (see the module doc); raises if any composition disagrees."""
    by = {(p, d): s for (p, _, d), s in counts.items()}
    base, two = by[(1, 0)], by[(2, 0)]
    dec = next(s for (p, d), s in by.items() if p == 1 and d > 0)
    rows = next(d for (p, d) in by if p == 1 and d > 0)
    dec2 = next(s for (p, d), s in by.items() if p == 1 and d > rows)
    rows2 = next(d for (p, d) in by if p == 1 and d > rows)
    moe = [i >= spec.num_dense_layers and spec.num_routed_experts > 0 for i in range(spec.num_layers)]
    f = {"pre_ops_per_chunk": two["pre"] - base["pre"], "attn_ops_per_chunk": two["attn0"] - base["attn0"],
         "pre_ops_per_row": (dec2["pre"] - dec["pre"]) // (rows2 - rows), "attn_ops_decode": dec["attn0"] - base["attn0"],
         "head_ops": base["head"],
         "ffn_ops_dense": next((base[f"ffn{i}"] for i, m in enumerate(moe) if not m), 0),
         "ffn_ops_moe": next((base[f"ffn{i}"] for i, m in enumerate(moe) if m), 0),
         **{k: base[k] for k in ("ffn_moe_gemm1_at", "ffn_moe_gemm2_at", "head_gemm_at")}}
    f["pre_ops"] = base["pre"] - f["pre_ops_per_chunk"]
    f["attn_ops"] = base["attn0"] - f["attn_ops_per_chunk"]
    f["pre_ops_decode"] = dec["pre"] - base["pre"] - f["pre_ops_per_row"] * rows
    for (p, n, d), s in counts.items():
        want = {**predicted(spec, f, p, d), **{k: f[k] for k in ("ffn_moe_gemm1_at", "ffn_moe_gemm2_at", "head_gemm_at")}}
        if want != s:
            raise ValueError(f"{spec.name} p{p}x{n}-d{d}: counted {s}, the structure gives {want}")
    return {k: f[k] for k in FIELDS}


def predicted(spec, f: dict[str, int], chunks: int, rows: int) -> dict[str, int]:
    """{segment: operators} the structure gives for a step of `chunks` chunks beside `rows` decode rows."""
    out = {"pre": f["pre_ops"] + f["pre_ops_per_chunk"] * chunks + f["pre_ops_per_row"] * rows
           + (f["pre_ops_decode"] if rows else 0)}
    for i in range(spec.num_layers):
        out[f"attn{i}"] = f["attn_ops"] + f["attn_ops_per_chunk"] * chunks + (f["attn_ops_decode"] if rows else 0)
        moe = i >= spec.num_dense_layers and spec.num_routed_experts > 0
        out[f"ffn{i}"] = f["ffn_ops_moe"] if moe else f["ffn_ops_dense"]
    out["head"] = f["head_ops"]
    return out


def toml_table(name: str, f: dict[str, int]) -> str:
    return f'[models."{name}"]\n' + "".join(f"{k} = {f[k]}\n" for k in FIELDS)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m real.serve.opcount", description=__doc__.split("\n")[0])
    p.add_argument("--models", required=True)
    p.add_argument("--full", action="store_true", help="count at the model's own widths (slow on CPU)")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    text = ""
    for name in [m for m in args.models.split(",") if m]:
        spec = get_spec(name)
        text += toml_table(name, structure(spec, count_model(name, args.full))) + "\n"
        print(text.rstrip().split("\n\n")[-1], flush=True)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

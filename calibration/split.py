"""The fixed fitting / held-out split of the measurement records.

Whole shape families are held out, never random rows, so a held-out case is a model size, batch
size, expert count or routing skew that the fit never saw. The rule is a pure function of a row's
shape columns; it does not depend on which other rows exist or on their order.

Held out:
  gemm          (n, k) in HELD_OUT_GEMM_NK: two V3 projections (kv_down 2112x7168 is a small-n
                shape, o_proj 7168x16384 a large-k shape), and the 4096^3 square;
  grouped_gemm  groups == 16 (an expert count between the fitted 8 and 32), tokens_per_group in
                {512, 4096} (batch sizes), and the V2-Lite-like (n, k) = (2816, 2048);
  grouped_gemm_wgrad  the same families as grouped_gemm (the weight-gradient form, contracted over
                each group's rows, has its own fitted curve);
  attn_fwd/bwd  seq_len == 4096 and num_heads == 32;
  memory        tokens == 16384 (topk rows: 16,384 rows) and the swiglu op; and the multi-kernel ops
                (router_topk, fp8_quant_*): real/ builds them from several PyTorch kernels, so they
                are predicted as those kernels (router_topk: three torch.topk calls costed by the
                topk rows' fit, plus elementwise kernels), never fitted;
  memory_alone  (s15gl2: swiglu, strided silu / mul, fp8_quant_*, row gathers timed alone at 2,048 /
                8,192 / 32,768 tokens, counts no `memory` row has) fitting, except tokens == 16384 as
                for memory: the bench name tells them apart from the held-out `memory` rows of the
                same ops (decided before the records existed, docs/notes/s15gl2_rule.md);
  decode_bmm, decode_linear, decode_elementwise  batch in {16, 192} (between the fitted decode
                batches) or cache_len in {1041, 4097} (an unaligned length between the fitted ones,
                a longer cache): the absorbed MLA's batched GEMMs, the decode step's projections
                at m = batch rows and the attention's elementwise kernels over the scores
                (real/bench/decode_gemm.py, decode_gemm.csv; the campaign marks the same split);
  composed      every MLA layer, MoE layer, train/prefill/decode case is a composition the fit
                never uses (only the primitives above are fitted); their `held_out` flag marks
                the families that also differ from everything fitted in shape: MoE layers with
                32 experts, skew 0.5 or 1.5, or the v2-lite-slice model; MLA layers of
                v2-lite-slice; every whole-model case.
"""

from __future__ import annotations

import pandas as pd

HELD_OUT_GEMM_NK = {(2112, 7168), (7168, 16384), (4096, 4096)}
HELD_OUT_GROUPS = {16}
HELD_OUT_TOKENS_PER_GROUP = {512, 4096}
HELD_OUT_GROUPED_NK = {(2816, 2048)}
HELD_OUT_SEQ_LENS = {4096}
HELD_OUT_HEADS = {32}
HELD_OUT_MEMORY_TOKENS = {16384}
HELD_OUT_MEMORY_OPS = {"swiglu"}
MULTI_KERNEL_MEMORY_OPS = {"router_topk", "fp8_quant_1x128", "fp8_quant_rowwise"}
HELD_OUT_MOE_EXPERTS = {32}
HELD_OUT_MOE_SKEWS = {0.5, 1.5}
HELD_OUT_MODELS = {"v2-lite-slice"}
HELD_OUT_DECODE_BATCHES = {16, 192}
HELD_OUT_DECODE_CACHE_LENS = {1041, 4097}


def is_held_out(row) -> bool:
    b = row["bench"]
    if b == "gemm":
        return (int(row["n"]), int(row["k"])) in HELD_OUT_GEMM_NK
    if b in ("grouped_gemm", "grouped_gemm_wgrad"):
        return (int(row["groups"]) in HELD_OUT_GROUPS or int(row["tokens_per_group"]) in HELD_OUT_TOKENS_PER_GROUP
                or (int(row["n"]), int(row["k"])) in HELD_OUT_GROUPED_NK)
    if b in ("attn_fwd", "attn_bwd"):
        return int(row["seq_len"]) in HELD_OUT_SEQ_LENS or int(row["num_heads"]) in HELD_OUT_HEADS
    if b == "memory":
        return (int(row["tokens"]) in HELD_OUT_MEMORY_TOKENS or row["op"] in HELD_OUT_MEMORY_OPS
                or row["op"] in MULTI_KERNEL_MEMORY_OPS)
    if b == "memory_alone":
        return int(row["tokens"]) in HELD_OUT_MEMORY_TOKENS
    if b in ("moe_layer_fwd", "moe_layer_bwd"):
        return (int(row["num_experts"]) in HELD_OUT_MOE_EXPERTS or float(row["skew"]) in HELD_OUT_MOE_SKEWS
                or row["model"] in HELD_OUT_MODELS)
    if b in ("mla_layer_fwd", "mla_layer_bwd"):
        return row["model"] in HELD_OUT_MODELS
    if b in ("decode_bmm", "decode_linear", "decode_elementwise"):
        L = row.get("cache_len")
        return (int(row["batch"]) in HELD_OUT_DECODE_BATCHES
                or (L not in ("", None) and not pd.isna(L) and int(L) in HELD_OUT_DECODE_CACHE_LENS))
    return True  # whole-model cases and anything new: never fitted


def split(df: pd.DataFrame) -> pd.Series:
    """Boolean Series: True where the row is held out."""
    return df.apply(is_held_out, axis=1).astype(bool)

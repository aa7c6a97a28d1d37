"""The twin's dense transformer block against a measured one (issue 14, session s8dense).

real/bench/dense_block.py times torchtitan's Llama block and Megatron's GPT block (real/dense.py)
on one GPU at the per-GPU shapes of the published runs beyond DeepSeek, with the kernels of one
profiled repetition (calibration/measurements/<gpu>/dense_block.csv, dense_kernels.csv). Here each
record is predicted with the twin's own cost functions (twin.costs.compute.op_time_s over the op
lists of twin.costs.flops: attention_ops, dense_ffn_ops, head_ops, eager_ops) on the GPU's fitted
profile (the burst curves the calibration records are predicted with: these are short runs), for
exactly what real/ ran: the block of one GPU's TP slice (a model of the slice's heads, K/V heads
and FFN width at tp = 1), torch eager unless torch.compile'd, FA2 (SDPA flash) or cuDNN attention.

Per record: measured vs predicted seconds (rel_error = predicted / measured - 1; negative = the
twin too fast). Per profiled record, per component: the measured kernel sum of each class (GEMM,
attention, elementwise: dense_kernels.csv, `kernel_class`) and the GPU idle time (timed - kernel
sum) beside the twin's per-class seconds. And the measured FA2-vs-cuDNN speed ratio
(`fa2_over_cudnn`), per direction, from the attention-only records.

The GPT block's FFN is GeLU over 4h (two GEMMs), as Megatron runs it; the twin's catalog holds
Megatron's GPT models as SwiGLU over 8h/3 with RoPE (twin/data/models.toml): `twin_catalog_s`
prices the record as the twin's published-run prediction sees the block, beside `twin_s` (what
real/ ran, in the twin's op vocabulary).

    python -m calibration.dense_block [--gpu h100] [--root DIR] [--json]
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from calibration import entry
from calibration.predict import gpu_spec
from calibration import records as rec
from calibration.records import records_root
from calibration.records_io import csv_exists, read_csv
from twin.core.specs import GPUSpec, ModelSpec
from twin.costs import compute
from twin.costs.flops import (BF16_BYTES, OpKind, Op, attention_ops, dense_ffn_ops, eager_ops, head_ops,
                              unfused_linear_ops)
from twin.core.atomic import write_text
from twin.costs.profile import PROFILES, Profile, fitted_profile, profile_from_json

BLOCK_FILE, KERNELS_FILE = "dense_block.csv", "dense_kernels.csv"
COMPONENTS = ("gemm", "attention", "elementwise")
PHASES = {"fwd": ("fwd",), "fwd_bwd": ("fwd", "bwd_input", "bwd_weight")}
# SDPA backends the twin has an attention curve for (Profile.with_attention_kernel)
TWIN_KERNEL = {"flash": "fa2", "cudnn": "cudnn"}

# kernel name -> class. Attention first: FlashAttention-2 (flash_fwd_kernel, flash_bwd_*),
# cuDNN's SDPA (cudnn_generated_fort_native_sdpa_*), the memory-efficient kernels (fmha_cutlass*);
# then GEMMs: cuBLAS / cuBLASLt (nvjet_*, sm90_xmma_gemm_*, *gemm*), CUTLASS; the rest elementwise
_ATTENTION_KERNEL = re.compile(r"flash|fmha|sdpa|attention", re.I)
_GEMM_KERNEL = re.compile(r"gemm|nvjet|xmma|cutlass|cublas|wgmma|splitk", re.I)


def kernel_class(name: str) -> str:
    if _ATTENTION_KERNEL.search(name):
        return "attention"
    if _GEMM_KERNEL.search(name):
        return "gemm"
    return "elementwise"


def op_class(op: Op) -> str:
    """A twin op's class, as kernel_class names a measured kernel's."""
    if op.kind in (OpKind.GEMM, OpKind.GROUPED_GEMM):
        return "gemm"
    return "attention" if op.kind == OpKind.ATTENTION else "elementwise"


def slice_model(row) -> ModelSpec:
    """The record's block as a twin model at tp = 1: the slice's heads, K/V heads, FFN width and
    vocabulary (the hidden size whole)."""
    return ModelSpec(name=f"{row['model']}-slice", num_layers=1, hidden_size=int(row["hidden_size"]),
                     vocab_size=int(row["vocab"]), num_heads=int(row["num_heads"]), attention="gqa",
                     num_kv_heads=int(row["num_kv_heads"]), head_dim=int(row["head_dim"]),
                     intermediate_size=int(row["ffn"]), num_dense_layers=1)


def _gpt_ffn_ops(tokens: int, d: int, ffn: int) -> list[Op]:
    """Megatron's GeLU FFN in the twin's op vocabulary: LayerNorm (one fused kernel, a norm op),
    fc1, GeLU (one elementwise kernel: reads and writes the 4h row), fc2, the residual add."""
    return [Op("ffn_norm", OpKind.MEMORY, "mlp", bytes=2 * tokens * d * BF16_BYTES),
            Op("fc1", OpKind.GEMM, "mlp", tokens, ffn, d),
            Op("gelu", OpKind.MEMORY, "mlp", bytes=2 * tokens * ffn * BF16_BYTES),
            Op("fc2", OpKind.GEMM, "mlp", tokens, d, ffn),
            Op("residual_add", OpKind.MEMORY, "mlp", bytes=3 * tokens * d * BF16_BYTES)]


def record_ops(row, catalog: bool = False) -> list[Op]:
    """The twin's ops for what the record ran. block: attention_ops (+ repeat_kv when the record
    repeated K/V heads; no RoPE for GPT) + the FFN, a Llama block's projections as the separate
    linears real/dense.py issues (unfused_linear_ops, as torchtitan's Llama); head: head_ops;
    attention: the core alone.
    Eager elementwise chains (eager_ops) unless compiled; a GPT block's LayerNorm and GeLU are
    single kernels in eager too. `catalog`: a GPT block as the twin's catalog holds it
    (SwiGLU over 8h/3 of the model, learned positions: no RoPE, RMSNorm)."""
    m = slice_model(row)
    B, S, kind, bench = int(row["batch"]), int(row["seq_len"]), row["block"], row["bench"]
    T = B * S
    eager = str(row["compiled"]) == "no"
    if bench.startswith("gemm_"):   # one of the block's forward GEMMs alone (real/bench/dense_block.py block_gemms)
        n, k = _block_gemm_nk(row, bench.removeprefix("gemm_"))
        return [Op(bench, OpKind.GEMM, "attn", T, n, k)]
    if bench.startswith("head"):
        ops = head_ops(m, T)
        if kind_of_head(row) == "gpt" and not catalog:   # nn.LayerNorm: one kernel; the loss as torchtitan's
            return [ops[0]] + eager_ops(ops[1:]) if eager else ops
        return eager_ops(ops) if eager else ops
    att = attention_ops(m, B, S, kv_repeat=row["gqa"] == "repeat_kv")
    if bench.startswith("attn"):   # the SDPA call alone (repeat_kv records: K/V repeated beforehand)
        return [op for op in att if op.name == "attn_core"]
    if kind == "gpt" and not catalog:
        att = [op for op in att if op.name != "rope"]
        return att + _gpt_ffn_ops(T, m.hidden_size, m.intermediate_size)
    if kind == "gpt":   # the catalog's SwiGLU of 8h/3 (its GEMMs carry the 4h GeLU FFN's FLOPs), and
        # its learned positions (no RoPE in the block: twin/data/models.toml megatron-gpt-*)
        m = dataclasses.replace(m, intermediate_size=round(m.intermediate_size * 2 / 3), position_embedding="learned",
                                ffn_width_stand_in=True)
        att = attention_ops(m, B, S, kv_repeat=row["gqa"] == "repeat_kv")
    # real/dense.py's Llama block has torchtitan's separate wq, wk, wv and w1, w3 linears
    ops = unfused_linear_ops(att + dense_ffn_ops(m, T), m, 1, eager) if kind == "llama" else att + dense_ffn_ops(m, T)
    return eager_ops(ops) if eager and kind == "llama" else ops


def _block_gemm_nk(row, name: str) -> tuple[int, int]:
    """(n, k) of a block GEMM by its name in real/bench/dense_block.py block_gemms."""
    D, F = int(row["hidden_size"]), int(row["ffn"])
    q, kv = int(row["num_heads"]) * int(row["head_dim"]), int(row["num_kv_heads"]) * int(row["head_dim"])
    return {"wq": (q, D), "wk": (kv, D), "wo": (D, q), "w1": (F, D), "w2": (D, F),
            "qkv": (3 * q, D), "proj": (D, q), "fc1": (F, D), "fc2": (D, F)}[name]


def kind_of_head(row) -> str:
    """A head record's model family: Llama (RMSNorm) or GPT (LayerNorm), from the model name."""
    return "gpt" if "gpt" in str(row["model"]) else "llama"


def profile_for(row, profile: Profile) -> Profile:
    return profile.with_attention_kernel(TWIN_KERNEL[row["sdpa_backend"]]) if row["sdpa_backend"] in TWIN_KERNEL \
        else profile


def predicted_components_s(row, gpu: GPUSpec, profile: Profile, catalog: bool = False) -> dict[str, float] | None:
    """The twin's seconds of the record per component class (None: no twin curve for the
    record's attention backend, the memory-efficient kernel)."""
    if row["sdpa_backend"] not in TWIN_KERNEL and not row["bench"].startswith(("head", "gemm_")):
        return None
    prof = profile_for(row, profile)
    phases = PHASES["fwd_bwd" if row["bench"].endswith("_fwd_bwd") else "fwd"]
    out = dict.fromkeys(COMPONENTS, 0.0)
    for op in record_ops(row, catalog):
        for phase in phases:
            out[op_class(op)] += compute.op_time_s(op, phase, "bf16", gpu, prof)
    return out


def load(gpu: str, root: Path | str | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    root = records_root() if root is None else root
    d = Path(root) / gpu
    blocks = read_csv(d / BLOCK_FILE, keep_default_na=False)
    kernels = read_csv(d / KERNELS_FILE, keep_default_na=False) if csv_exists(d / KERNELS_FILE) else None
    return blocks, kernels


KEY = ["bench", "block", "model", "tp", "batch", "seq_len", "sdpa_backend", "gqa", "compiled"]


def measured_components_s(kernels: pd.DataFrame | None) -> pd.DataFrame:
    """Per profiled record (KEY): the kernel sum of each class and the kernel count."""
    if kernels is None or kernels.empty:
        return pd.DataFrame(columns=KEY)
    k = kernels.assign(cls=kernels["kernel"].map(kernel_class), time_s=pd.to_numeric(kernels["time_s"]),
                       calls=pd.to_numeric(kernels["calls"]))
    wide = k.pivot_table(index=KEY, columns="cls", values="time_s", aggfunc="sum", fill_value=0.0)
    wide = wide.reindex(columns=list(COMPONENTS), fill_value=0.0).add_prefix("measured_").add_suffix("_s")
    wide["kernels"] = k.groupby(KEY)["calls"].sum()
    return wide.reset_index()


def compare(gpu: str, root: Path | str | None = None, profile: Profile | None = None) -> pd.DataFrame:
    """Every record of one GPU: measured, twin, error, and per-component seconds where profiled
    (under `profile`, by default the GPU's committed fitted profile)."""
    root = records_root() if root is None else root
    blocks, kernels = load(gpu, root)
    spec, profile = gpu_spec(gpu), profile or fitted_profile(gpu)
    rows = []
    for _, r in blocks.iterrows():
        comp = predicted_components_s(r, spec, profile)
        cat = predicted_components_s(r, spec, profile, catalog=True) if r["block"] == "gpt" else comp
        twin_s = None if comp is None else sum(comp.values())
        out = {k: r[k] for k in KEY + ["split", "num_heads", "num_kv_heads", "hidden_size", "ffn", "vocab"]}
        out.update(time_s=float(r["time_s"]), host_s=float(r["host_s"]), twin_s=twin_s,
                   twin_catalog_s=None if cat is None else sum(cat.values()),
                   rel_error=None if twin_s is None else twin_s / float(r["time_s"]) - 1.0,
                   **{f"twin_{c}_s": (None if comp is None else comp[c]) for c in COMPONENTS})
        rows.append(out)
    df = pd.DataFrame(rows)
    for c in ("tp", "batch", "seq_len"):
        df[c] = df[c].astype(int)
    meas = measured_components_s(kernels)
    if not meas.empty:
        for c in ("tp", "batch", "seq_len"):
            meas[c] = meas[c].astype(int)
        df = df.merge(meas, on=KEY, how="left")
        df["measured_idle_s"] = df["time_s"] - df[[f"measured_{c}_s" for c in COMPONENTS]].sum(axis=1)
    return df


def fa2_over_cudnn(df: pd.DataFrame, split: str = "fit") -> dict[str, float]:
    """Measured speed of FA2 (SDPA flash) relative to cuDNN's fused attention, per direction: the
    median over the attention-only records of `split` (repeat_kv) of t_cudnn / t_flash, the
    backward as (fwd_bwd - fwd) of each backend. Empty where a backend has no records."""
    a = df[(df["block"] == "attention") & (df["gqa"] == "repeat_kv") & (df["split"] == split)]
    t = a.pivot_table(index=["model", "batch", "seq_len", "num_heads", "num_kv_heads"],
                      columns=["sdpa_backend", "bench"], values="time_s")
    out = {}
    need = [("flash", "attn_fwd"), ("cudnn", "attn_fwd"), ("flash", "attn_fwd_bwd"), ("cudnn", "attn_fwd_bwd")]
    if not all(c in t.columns for c in need):
        return out
    t = t.dropna(subset=need)
    if t.empty:
        return out
    out["fwd"] = float(np.median(t[("cudnn", "attn_fwd")] / t[("flash", "attn_fwd")]))
    bwd_flash = t[("flash", "attn_fwd_bwd")] - t[("flash", "attn_fwd")]
    bwd_cudnn = t[("cudnn", "attn_fwd_bwd")] - t[("cudnn", "attn_fwd")]
    out["bwd"] = float(np.median(bwd_cudnn / bwd_flash))
    out["num_shapes"] = int(len(t))
    return out


def attention_kernel_terms(gpu: str, root: Path | str | None = None) -> dict:
    """Profile.attention_kernels of a GPU from its committed dense_block.csv (the fitting split's
    attention-only rows): {"fa2": {"fwd": r, "bwd": r}}, FlashAttention-2's speed relative to
    cuDNN's fused attention, the kernel the profile's attention curves were measured with. Empty
    without records (the profile then keeps the FA3 paper's FA2_OVER_CUDNN)."""
    root = records_root() if root is None else root
    path = Path(root) / gpu / BLOCK_FILE
    if not csv_exists(path):
        return {}
    df = read_csv(path, keep_default_na=False)
    df["time_s"] = pd.to_numeric(df["time_s"], errors="coerce")
    r = fa2_over_cudnn(df[df["time_s"] > 0])
    return {"fa2": {d: r[d] for d in ("fwd", "bwd")}} if r else {}


def eager_elementwise_eff(gpu: str, profile: Profile, root: Path | str | None = None) -> float:
    """Profile.eager_elementwise_eff from the committed records: the HBM bandwidth fraction torch
    eager's elementwise chains reach in real/dense.py's eager Llama blocks and LM heads (the code
    twin.costs.flops.eager_ops counts), fitting split only. Per profiled record, the time its GEMM
    and attention kernels leave (timed - their kernel sums: the elementwise kernels and the gaps
    between kernels) against the twin's elementwise seconds at the streaming efficiency
    (memory_eff); the median ratio scales memory_eff. 0 without records (memory_eff stays)."""
    root = records_root() if root is None else root
    if not csv_exists(Path(root) / gpu / BLOCK_FILE):
        return 0.0
    base = dataclasses.replace(profile, eager_elementwise_eff=0.0)
    df = compare(gpu, root, base)
    if "measured_gemm_s" not in df:
        return 0.0
    fit = df[(df["split"] == "fit") & (df["compiled"] == "no") & df["block"].isin(["llama", "head"])
             & df["twin_s"].notna() & df["measured_gemm_s"].notna()]
    other_s = fit["time_s"] - fit["measured_gemm_s"] - fit["measured_attention_s"]
    ratio = (fit["twin_elementwise_s"] / other_s)[other_s > 0]
    return float(min(1.0, base.memory_eff * ratio.median())) if len(ratio) else 0.0


def compiled_elementwise_ratio(gpu: str = "h100", root: Path | str | None = None) -> float:
    """compute.COMPILED_ELEMENTWISE_RATIO (docs/notes/s31pub_rule.md): eager_elementwise_eff's estimator on the
    torch.compile'd records. Over `gpu`'s fitting records with compiled == 'inductor' and block 'llama' or 'head',
    per profiled record the time its GEMM and attention kernels leave (timed - their kernel sums: Inductor's
    elementwise kernels and the gaps between kernels) against the twin's elementwise seconds at memory_eff (the
    committed fitted profile); the median of twin / left-over, the fraction of memory_eff those kernels reach.
    Raises where `gpu` has no such record (the H100 has two: the 8B block at 2 x 8,192, forward and fwd+bwd)."""
    root = records_root() if root is None else root
    df = compare(gpu, root) if csv_exists(Path(root) / gpu / BLOCK_FILE) else pd.DataFrame()
    if "measured_gemm_s" in df:
        df = df[(df["split"] == "fit") & (df["compiled"] == "inductor") & df["block"].isin(["llama", "head"])
                & df["twin_s"].notna() & df["measured_gemm_s"].notna()]
    if "measured_gemm_s" not in df or df.empty:
        raise ValueError(f"{gpu}: no profiled compiled Llama block or head among the fitting records")
    left_s = df["time_s"] - df["measured_gemm_s"] - df["measured_attention_s"]
    return float((df["twin_elementwise_s"] / left_s)[left_s > 0].median())


def write_dense_terms(gpu: str, root: Path | str | None = None, profiles_dir: Path | None = None) -> dict:
    """Set the committed profile's `attention_kernels` and `eager_elementwise_eff` from the
    records (what `twin fit` computes with the rest of the profile), every other key of the JSON
    as it is."""
    root = records_root() if root is None else root
    path = Path(str(profiles_dir or PROFILES)) / f"{gpu}.json"
    data = json.loads(path.read_text())
    terms = {"attention_kernels": attention_kernel_terms(gpu, root),
             "eager_elementwise_eff": eager_elementwise_eff(gpu, profile_from_json(data), root)}
    out = {}
    for key, value in data.items():   # after `eager`, as Profile.to_json places them
        if key not in terms:
            out[key] = value
        if key == "eager":
            out.update({k: v for k, v in terms.items() if v})
    write_text(path, json.dumps(out, indent=1, sort_keys=False) + "\n")
    return terms


def summary(df: pd.DataFrame) -> dict:
    """Signed median error per (record kind, split), and the component ratios twin / measured over
    the profiled block records of the fitting split."""
    out: dict = {}
    ok = df[df["rel_error"].notna()]
    for (bench, backend, compiled, split), g in ok.groupby(["bench", "sdpa_backend", "compiled", "split"]):
        out[f"{bench} {backend} {compiled} {split}"] = {"num": int(len(g)),
                                                       "median_rel_error": float(g["rel_error"].median())}
    if "measured_gemm_s" in df:
        prof = ok[ok["measured_gemm_s"].notna() & (ok["split"] == "fit") & ok["bench"].str.startswith("block")]
        out["components_fit_blocks"] = {
            c: float((prof[f"twin_{c}_s"] / prof[f"measured_{c}_s"]).replace([np.inf], np.nan).median())
            for c in COMPONENTS}
    return out


def format_table(df: pd.DataFrame) -> str:
    cols = ["bench", "model", "tp", "batch", "seq_len", "sdpa_backend", "compiled", "split"]
    lines = [f"{'record':62} {'meas ms':>9} {'twin ms':>9} {'err':>7}  "
             f"{'gemm m/t':>15} {'attn m/t':>15} {'elem m/t':>15} {'idle':>6}"]
    for _, r in df.iterrows():
        name = " ".join(str(r[c]) for c in cols)
        err = "-" if r["rel_error"] is None or pd.isna(r["rel_error"]) else f"{r['rel_error']:+.1%}"
        twin = "-" if r["twin_s"] is None or pd.isna(r["twin_s"]) else f"{r['twin_s'] * 1e3:.3f}"
        comp = ""
        if "measured_gemm_s" in r and not pd.isna(r.get("measured_gemm_s")):
            for c in COMPONENTS:
                t = r[f"twin_{c}_s"]
                comp += f" {r[f'measured_{c}_s'] * 1e3:7.2f}/{'-' if t is None or pd.isna(t) else f'{t * 1e3:.2f}':>7}"
            comp += f" {r['measured_idle_s'] * 1e3:6.2f}"
        lines.append(f"{name:62} {r['time_s'] * 1e3:9.3f} {twin:>9} {err:>7} {comp}")
    return "\n".join(lines)


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.dense_block", description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--root", type=Path, help="the records root (default: --records DIR, else calibration/measurements)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--write-profile", action="store_true",
                    help="set the committed profile's attention_kernels and eager_elementwise_eff from the records")
    args = ap.parse_args(argv)
    args.root = Path(args.root) if args.root else rec.records_root()
    if not csv_exists(args.root / args.gpu / BLOCK_FILE):
        print(f"no {BLOCK_FILE} under {args.root / args.gpu}: run real/campaigns/s8dense.sh on that GPU first",
              file=sys.stderr)
        return 2
    if args.write_profile:
        print(f"{args.gpu}: {write_dense_terms(args.gpu, args.root)}")
    df = compare(args.gpu, args.root)
    res = {"gpu": args.gpu, "fa2_over_cudnn": fa2_over_cudnn(df), "summary": summary(df)}
    if args.json:
        print(json.dumps({**res, "rows": json.loads(df.to_json(orient="records"))}, indent=1))
    else:
        print(format_table(df))
        print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

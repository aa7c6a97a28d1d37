"""The twin's prediction of PyTorch's own context parallelism measured on two GPUs (campaign s8cp,
real/bench/torch_cp.py: torch_cp.csv, its per-rank kernels and timelines) and of the one-GPU
attention calls it is made of (cp_chunks.csv), with the twin's own costs.

A torch_cp row: a Llama-3.1-8B attention core (32 heads, 8 KV heads repeated to 32, head 128,
causal, BF16) over S positions, CP = W ranks each holding s = S/W (head-tail load balanced),
forward + backward, the slowest rank's CUDA-event time. The twin costs it as a training step costs
one layer's attention core under plan.cp_kind 'torch_allgather' (twin.costs.context_parallel):
  - repeat_kv: K and V copied out to the query heads (forward) and summed back (backward);
  - the core: `core_ops` -- by default the twin's (cp equal calls of causal s-position attention,
    batch cp); with `calls=True` the calls PyTorch makes (the diagonal causal s x s call and cp-1
    non-causal s x s/2 calls), each costed by the twin's attention curve at its query length and
    FLOPs, times the measured non-causal factor (`noncausal_factor`) for the non-causal ones;
  - the FP32 merges and accumulations (torch_cp_merge_s) and the communication not hidden behind
    the calls (torch_cp_exposed_s), from the profile's measured collectives.
The SDPA backend of the row picks the curve: cuDNN's is the profile's; flash is FlashAttention-2
(profile.with_attention_kernel('fa2')).

cp_chunks rows (one GPU): llama_causal (the CP1 reference: repeat_kv + causal SDPA), llama_chunk
(non-causal SDPA, q_len x kv_len) and mla_block (real/cp.py's per-block kernel), phase fwd or
fwd_bwd; predicted as their kernel by the same curve.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd

from calibration import entry
from calibration.fit import PROFILES_DIR, profile_files
from calibration.predict import gpu_spec
from calibration.records_io import csv_exists, read_csv, read_csvs
from twin.costs import comm, compute
from twin.costs.context_parallel import (TORCH_CP_COMPILED_MERGE_TIME_FACTOR, TORCH_CP_MERGE_TIME_FACTOR,
                                         torch_cp_exposed_s, torch_cp_merge_s)
from twin.costs.flops import BF16_BYTES, FP32_BYTES, Op, OpKind
from twin.costs.profile import Profile, profile_from_json
from twin.core.specs import GPUSpec

TORCH_CP_FILE, CHUNKS_FILE = "torch_cp.csv", "cp_chunks.csv"


def _b(v) -> bool:
    return v if isinstance(v, bool) else str(v).strip().lower() in ("true", "1", "yes")


def profile_for_backend(profile: Profile, backend: str) -> Profile:
    """The attention curves of an SDPA backend: flash runs FlashAttention-2 (the profile scaled by
    its FA2 ratio), cuDNN (and real/cp.py's blocks) the profile's own."""
    return profile.with_attention_kernel("fa2") if str(backend) == "flash" else profile


def attention_call_s(q_len: int, kv_len: int, heads: int, qk: int, v: int, causal: bool, direction: str,
                     gpu: GPUSpec, profile: Profile, noncausal_factor: float = 1.0) -> float:
    """One attention kernel call by the twin's curve (twin.costs.compute.attention_time_s). A
    causal square call is the twin's causal Op; a non-causal q_len x kv_len call is costed at its
    own FLOPs (4 q kv (qk + v) / 2 a head forward, 2.5x backward) at the curve's efficiency at its
    query length, times `noncausal_factor` (the measured non-causal over causal time ratio)."""
    if causal and q_len == kv_len:
        op = Op("attn_core", OpKind.ATTENTION, "attn", batch=1, seq_len=q_len, heads=heads, qk_dim=qk, v_dim=v,
                causal=True, precision="bf16")
        return compute.attention_time_s(op, direction, gpu, profile)
    fwd_flops = 2.0 * q_len * kv_len * heads * (qk + v)
    flops = fwd_flops if direction == "fwd" else 2.5 * fwd_flops
    eff = profile.attention[direction].eff(q_len, heads * q_len)
    return noncausal_factor * flops / (gpu.peak_flops_per_s("bf16") * eff) + profile.launch_s


def chunk_row_s(row, gpu: GPUSpec, profile: Profile, noncausal_factor: float = 1.0) -> float:
    """Predicted seconds of a cp_chunks.csv row: its attention call(s) (forward, or forward +
    backward), and for the Llama rows the repeat_kv copy and its backward."""
    prof = profile_for_backend(profile, row.get("sdpa_backend", ""))
    q, k = int(row["q_len"]), int(row["kv_len"])
    H, E, Ev = int(row["num_heads"]), int(row["qk_head_dim"]), int(row["v_head_dim"])
    causal = _b(row["causal"])
    dirs = ("fwd",) if row["phase"] == "fwd" else ("fwd", "bwd")
    t = sum(attention_call_s(q, k, H, E, Ev, causal, d, gpu, prof, noncausal_factor) for d in dirs)
    if _b(row.get("kv_repeat", False)):
        K = int(row["num_kv_heads"])
        copy = 2 * k * (K + H) * E * BF16_BYTES
        t += sum(compute.memory_time_s(copy, gpu, prof) for _ in dirs)
    return t


def core_calls(cp: int, s: int) -> list[tuple[int, int, bool]]:
    """(q_len, kv_len, causal) of the attention calls of one load-balanced rank: the diagonal
    causal s x s call, then cp-1 calls of half its queries over all keys or all its queries over
    half the keys (s x s/2 pairs either way)."""
    return [(s, s, True)] + [(s, s // 2, False)] * (cp - 1)


def predict_torch_cp_parts(row, gpu: GPUSpec, profile: Profile, calls: bool = False,
                           noncausal_factor: float = 1.0, merge_factor: float | dict | None = None,
                           compiled: bool = False) -> dict:
    """{part: seconds} of a torch_cp.csv row on one rank (module docstring), forward and backward:
    repeat_kv, core_fwd, core_bwd, merge_fwd, merge_bwd, exposed_fwd, exposed_bwd and total;
    `merge_factor` the merges' measured time factor, one or {phase: factor} (the twin's, unless
    given); `compiled`: the pass inside torch.compile(fullgraph=True), as a plan with kernels
    'fused_blocks' runs it: every collective exposed, the merges at the compiled factors."""
    if merge_factor is None:
        merge_factor = TORCH_CP_COMPILED_MERGE_TIME_FACTOR if compiled else TORCH_CP_MERGE_TIME_FACTOR
    prof = profile_for_backend(profile, row.get("sdpa_backend", ""))
    cp, S = int(row["cp"]), int(row["seq_len"])
    H, K, E = int(row["num_heads"]), int(row["num_kv_heads"]), int(row["head_dim"])
    s = S // cp
    heads_kv = H if _b(row.get("kv_repeat", True)) else K
    parts = {"repeat_kv": 2 * compute.memory_time_s(2 * s * (K + H) * E * BF16_BYTES, gpu, prof) if heads_kv > K else 0.0}
    for d in ("fwd", "bwd"):
        if calls:
            parts[f"core_{d}"] = sum(attention_call_s(q, k, H, E, E, c, d, gpu, prof, noncausal_factor)
                                     for q, k, c in core_calls(cp, s))
        else:
            op = Op("attn_core", OpKind.ATTENTION, "attn", batch=cp, seq_len=s, heads=H, qk_dim=E, v_dim=E,
                    causal=True, precision="bf16")
            parts[f"core_{d}"] = compute.attention_time_s(op, d, gpu, prof)
    q_elems, kv_elems = s * H * E, 2 * s * heads_kv * E
    kv_bytes = kv_elems * BF16_BYTES
    gather_s = comm.collective_time_s("all_gather", kv_bytes * cp, cp, gpu, True, prof.collectives or {})
    pass_s = comm.collective_time_s("send_recv", kv_bytes * FP32_BYTES / BF16_BYTES, 2, gpu, True, prof.collectives or {})
    for d, back in (("fwd", False), ("bwd", True)):
        factor = merge_factor[d] if isinstance(merge_factor, dict) else merge_factor
        parts[f"merge_{d}"] = torch_cp_merge_s(cp, q_elems, kv_elems, back, gpu, prof, factor) if cp > 1 else 0.0
        parts[f"exposed_{d}"] = (torch_cp_exposed_s(cp, parts[f"core_{d}"], gather_s, pass_s if back else 0.0, back,
                                                    compiled) if cp > 1 else 0.0)
    parts["total"] = sum(parts.values())
    return parts


def load_folder(folder: Path | str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(torch_cp rows, cp_chunks rows) of a records folder, rows with a positive time; empty
    frames where a file is missing."""
    out = []
    for name in (TORCH_CP_FILE, CHUNKS_FILE):
        p = Path(folder) / name
        df = read_csv(p) if csv_exists(p) else pd.DataFrame()
        if not df.empty:
            df["time_s"] = pd.to_numeric(df["time_s"], errors="coerce")
            df = df[df["time_s"] > 0].reset_index(drop=True)
        out.append(df)
    return out[0], out[1]


def noncausal_factor(chunks: pd.DataFrame, gpu: GPUSpec, profile: Profile, bench: str = "llama_chunk",
                     backend: str | None = None) -> float | None:
    """The non-causal calls' measured time over the twin's curve at their FLOPs and query length
    (`attention_call_s` at factor 1), forward + backward, on the fitting rows of `bench` (and SDPA
    `backend`): the median. None without such rows."""
    if chunks.empty:
        return None
    rows = chunks[(chunks["bench"] == bench) & (chunks["split"] == "fit") & (chunks["phase"] == "fwd_bwd")
                  & ~chunks["causal"].map(_b)]
    if backend is not None:
        rows = rows[rows["sdpa_backend"].fillna("") == backend]
    ratios = [float(r["time_s"]) / chunk_row_s(r, gpu, profile) for _, r in rows.iterrows()]
    return float(pd.Series(ratios).median()) if ratios else None


def compare_torch_cp(rows: pd.DataFrame, gpu: GPUSpec, profile: Profile, calls: bool = False,
                     factor: float = 1.0) -> list[dict]:
    """[{seq_len, backend, method, measured_s, predicted_s, err, split, parts}] of every torch_cp row."""
    out = []
    for _, r in rows.iterrows():
        parts = predict_torch_cp_parts(r, gpu, profile, calls, factor)
        out.append({"seq_len": int(r["seq_len"]), "backend": r.get("sdpa_backend", ""), "method": r["rotate_method"],
                    "measured_s": float(r["time_s"]), "predicted_s": parts["total"],
                    "err": parts["total"] / float(r["time_s"]) - 1 if r["time_s"] > 0 else math.nan,
                    "split": r["split"], "parts": parts})
    return out


KERNELS_FILE = "torch_cp_kernels.csv"
CP_EAGER_CATEGORIES = ("copy", "elementwise", "fill", "reduce")   # real/bench/torch_cp.kernel_category


def merge_time_factor(folder: Path | str, gpu: GPUSpec, profile: Profile) -> float | None:
    """The measured time of PyTorch CP's eager kernels around the attention calls over what
    twin.costs.context_parallel.torch_cp_merge_s gives them (the merges' and accumulators' bytes at
    the streaming bandwidth): on each fitting torch_cp row, per phase, the slowest rank's kernels of
    CP_EAGER_CATEGORIES (torch_cp_kernels.csv, profiled) less the repeat_kv copy the twin costs
    apart (`predict_torch_cp_parts`), over torch_cp_merge_s; the median over rows and phases. The
    kernels are strided and broadcast elementwise ones (FP32 merges against an unsqueezed
    log-sum-exp, copies of transposed K/V, torch.cat of chunks), below the streaming rate. None
    without the records."""
    rows, _ = load_folder(folder)
    path = Path(folder) / KERNELS_FILE
    if rows.empty or not csv_exists(path):
        return None
    k = read_csv(path)
    k = k[k["category"].isin(CP_EAGER_CATEGORIES)]
    ratios = []
    for _, r in rows[(rows["split"] == "fit") & (pd.to_numeric(rows["cp"]) > 1)].iterrows():
        parts = predict_torch_cp_parts(r, gpu, profile, merge_factor=1.0)
        mine = k[(k["seq_len"] == r["seq_len"]) & (k["sdpa_backend"] == r["sdpa_backend"])
                 & (k["rotate_method"] == r["rotate_method"])]
        per_rank = mine.groupby(["phase", "rank"])["time_s"].sum()
        for phase in ("fwd", "bwd"):
            if phase in per_rank.index.get_level_values(0):
                slowest = float(per_rank.loc[phase].max())
                ratios.append((slowest - parts["repeat_kv"] / 2) / parts[f"merge_{phase}"])
    return float(pd.Series(ratios).median()) if ratios else None


# ---------------------------------------------------------------------------------------------
# Campaign s10cp: PyTorch's CP at 32K positions a rank over CP = 1, 2, 4 (torchtitan's 8B CP rows)
# ---------------------------------------------------------------------------------------------

SCALING_DIR = "torch_cp_scaling"   # under calibration/measurements/<gpu>x<n>/: the s10cp campaign's files


def load_scaling(folder: Path | str, compiled: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows, kernels) of a torch_cp_scaling records folder (real/campaigns/s10cp.sh: one
    torch_cp_cp<W>.csv and torch_cp_kernels_cp<W>.csv per CP degree; `compiled`: s10cpc.sh's
    torch_cp_compiled_cp<W>.csv and torch_cp_kernels_compiled_cp<W>.csv), rows with a positive
    time; empty frames where none."""
    out = []
    infix = "_compiled" if compiled else ""
    for stem in ("torch_cp", "torch_cp_kernels"):
        df = read_csvs(folder, f"{stem}{infix}_cp*.csv")
        if not df.empty:
            df["time_s"] = pd.to_numeric(df["time_s"], errors="coerce")
            df = df[df["time_s"] > 0].reset_index(drop=True)
        out.append(df)
    return out[0], out[1]


def scaling_table(rows: pd.DataFrame, gpu: GPUSpec, profile: Profile, compiled: bool = False) -> list[dict]:
    """[{cp, backend, method, measured_s, predicted_s, err, per_unit_s, split, parts}] of each
    torch_cp_scaling row, the twin's prediction as `predict_torch_cp_parts` (`compiled`: as a
    'fused_blocks' plan runs it, for the compiled rows); per_unit_s the measured
    time over the CP degree (a rank's work is cp units of a causal local-length call: its diagonal
    call and cp-1 half-square calls), constant where the time grows as the calls."""
    out = []
    for _, r in rows.sort_values(["sdpa_backend", "rotate_method", "cp"]).iterrows():
        parts = predict_torch_cp_parts(r, gpu, profile, compiled=compiled)
        t = float(r["time_s"])
        out.append({"cp": int(r["cp"]), "backend": r["sdpa_backend"], "method": r["rotate_method"],
                    "measured_s": t, "predicted_s": parts["total"], "err": parts["total"] / t - 1,
                    "per_unit_s": t / int(r["cp"]), "split": r["split"], "parts": parts})
    return out


def scaling_kernels(kernels: pd.DataFrame) -> pd.DataFrame:
    """The slowest rank's profiled seconds per repetition by (cp, backend, method, phase,
    category): which kernels' time grows with the CP degree."""
    if kernels.empty:
        return kernels
    per_rank = kernels.groupby(["cp", "sdpa_backend", "rotate_method", "phase", "category", "rank"])["time_s"].sum()
    return per_rank.groupby(level=[0, 1, 2, 3, 4]).max().reset_index()


def compiled_merge_time_factors(folder: Path | str, gpu: GPUSpec, profile: Profile) -> dict[str, float] | None:
    """{phase: factor} of the merges and accumulations inside torch.compile(fullgraph=True): on each
    fitting compiled row (s10cpc.sh: CP2; CP4 held out), the slowest rank's copy and elementwise
    kernels (CP_EAGER_CATEGORIES; Inductor's fused Triton kernels fall there) less half the
    repeat_kv copy the twin costs apart, over torch_cp_merge_s at factor 1, as merge_time_factor
    does for the eager rows; the median per phase. None without the records."""
    rows, kernels = load_scaling(folder, compiled=True)
    if rows.empty or kernels.empty:
        return None
    k = kernels[kernels["category"].isin(CP_EAGER_CATEGORIES)]
    ratios: dict[str, list[float]] = {"fwd": [], "bwd": []}
    for _, r in rows[(rows["split"] == "fit") & (pd.to_numeric(rows["cp"]) > 1)].iterrows():
        parts = predict_torch_cp_parts(r, gpu, profile, merge_factor=1.0, compiled=True)
        mine = k[(k["cp"] == r["cp"]) & (k["sdpa_backend"] == r["sdpa_backend"])
                 & (k["rotate_method"] == r["rotate_method"])]
        per_rank = mine.groupby(["phase", "rank"])["time_s"].sum()
        for phase in ratios:
            if phase in per_rank.index.get_level_values(0):
                slowest = float(per_rank.loc[phase].max())
                ratios[phase].append((slowest - parts["repeat_kv"] / 2) / parts[f"merge_{phase}"])
    if not all(ratios.values()):
        return None
    return {phase: float(pd.Series(v).median()) for phase, v in ratios.items()}


def format_scaling(table: list[dict], kernels: pd.DataFrame) -> str:
    lines = ["PyTorch CP at 32K positions a rank: measured vs twin (err = twin / measured - 1)",
             f"{'cp':>3} {'backend':7} {'method':9} {'split':8} {'measured ms':>12} {'per cp ms':>10} {'twin ms':>9} {'err':>7}"]
    for r in table:
        lines.append(f"{r['cp']:3d} {r['backend']:7} {r['method']:9} {r['split']:8} {r['measured_s'] * 1e3:12.1f} "
                     f"{r['per_unit_s'] * 1e3:10.1f} {r['predicted_s'] * 1e3:9.1f} {r['err']:+7.1%}")
    if not kernels.empty:
        lines.append("slowest rank's profiled kernel time per repetition (ms), by category:")
        for (cp, b, m, ph), g in scaling_kernels(kernels).groupby(["cp", "sdpa_backend", "rotate_method", "phase"]):
            cats = ", ".join(f"{c} {t * 1e3:.1f}" for c, t in zip(g["category"], g["time_s"]))
            lines.append(f"  cp{cp} {b} {m} {ph}: {cats}")
    return "\n".join(lines)


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.torch_cp",
                           description="PyTorch's CP at 32K positions a rank (campaign s10cp) against the twin")
    ap.add_argument("folder", type=Path, help="a torch_cp_scaling records folder (s10cp.sh's OUTDIR/s10cp)")
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--compiled", action="store_true", help="the torch.compile'd rows (real/campaigns/s10cpc.sh)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    rows, kernels = load_scaling(args.folder, args.compiled)
    if rows.empty:
        print(f"error: no torch_cp{'_compiled' if args.compiled else ''}_cp*.csv rows in {args.folder}", file=sys.stderr)
        return 2
    path = PROFILES_DIR / f"{args.gpu}.json"   # the committed profile, as `twin validate` predicts the records
    if not path.is_file():
        print(f"error: --gpu {args.gpu!r}: no committed profile {path.name} (one of: "
              f"{', '.join(p.stem for p in profile_files())})", file=sys.stderr)
        return 2
    profile = profile_from_json(json.loads(path.read_text()))
    table = scaling_table(rows, gpu_spec(args.gpu), profile, args.compiled)
    print(json.dumps(table, indent=1) if args.json else format_scaling(table, kernels))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

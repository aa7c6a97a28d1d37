"""What Megatron's dropout costs, measured (issue 14, session s11drop).

real/bench/dense_dropout.py times Megatron's GPT block (real/dense.py GPTBlock) at the 1.7B (TP1) and
7.1B (one TP2 rank) shapes with Megatron's default attention and hidden dropout 0.1 beside none, and
the SDPA call alone at dropout 0.1 and 0 per backend (calibration/measurements/<gpu>/dense_dropout.csv;
`sdpa_ran` names the attention op the profiler saw). Here:

- `attention_dropout_terms`: Profile.attention_dropout, per kernel the twin knows (SDPA 'cudnn' ->
  'cudnn', 'flash' -> 'fa2') and direction, the time with dropout over the time without, from the
  fitting split's attention-only rows whose forced backend really ran at both probabilities
  (forward: attn_fwd; backward: attn_fwd_bwd - attn_fwd). A kernel that could not run dropout gets
  no entry (the twin then does not cost its dropout).
- `check`: per case and split, the measured block cost of dropout (block_fwd_bwd at (0.1, 0.1) -
  (0, 0), SDPA as torch picks it, and each forced backend) beside the twin's (the attention core's
  measured slowdown + hidden_dropout_ops' bytes at memory_eff), and the hidden dropout alone
  (dropadd_fwd_bwd - add_fwd_bwd, eager unfused: an upper bound for Megatron's fused kernel).

    python -m calibration.dense_dropout [--gpu h100] [--root DIR] [--write-profile] [--json]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd

from calibration import entry
from calibration.predict import gpu_spec
from calibration import records as rec
from calibration.records import records_root
from calibration.records_io import csv_exists, read_csv
from twin.core.atomic import write_text
from twin.core.specs import ModelSpec
from twin.costs import compute
from twin.costs.flops import OpKind, attention_ops, attention_pairs, hidden_dropout_ops
from twin.costs.profile import PROFILES, Profile, fitted_profile

DROPOUT_FILE = "dense_dropout.csv"
TWIN_KERNEL = {"flash": "fa2", "cudnn": "cudnn"}


def load(gpu: str, root: Path | str | None = None) -> pd.DataFrame | None:
    root = records_root() if root is None else root
    path = Path(root) / gpu / DROPOUT_FILE
    if not csv_exists(path):
        return None
    df = read_csv(path, keep_default_na=False)
    for c in ("time_s", "attention_dropout", "hidden_dropout", "tp", "seq_len", "hidden_size", "num_heads",
              "head_dim", "batch"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return df[df["time_s"] > 0]


def _t(df: pd.DataFrame, **eq) -> float | None:
    g = df
    for k, v in eq.items():
        g = g[g[k] == v]
    return float(g["time_s"].median()) if len(g) else None


def attention_ratios(df: pd.DataFrame, backend: str, model: str | None = None) -> dict:
    """{"fwd": r, "bwd": r} of one forced SDPA backend: time at dropout > 0 over time at 0, only
    where the backend itself ran at both (sdpa_ran == backend); empty otherwise."""
    a = df[(df["block"] == "attention") & (df["sdpa_backend"] == backend) & (df["sdpa_ran"] == backend)]
    if model:
        a = a[a["model"] == model]
    out = {}
    for p_on in sorted(set(a["attention_dropout"]) - {0.0})[:1]:
        f0, f1 = _t(a, bench="attn_fwd", attention_dropout=0.0), _t(a, bench="attn_fwd", attention_dropout=p_on)
        b0, b1 = _t(a, bench="attn_fwd_bwd", attention_dropout=0.0), _t(a, bench="attn_fwd_bwd", attention_dropout=p_on)
        if None not in (f0, f1, b0, b1) and b0 > f0:
            out = {"fwd": f1 / f0, "bwd": (b1 - f1) / (b0 - f0)}
    return out


PROB_MODEL = "megatron-gpt-1.7b"   # the fitting split's one call (batch 1 x 16 heads x 4,096)


def probabilities(row) -> float:
    """The attention probabilities of a record's SDPA call (twin.costs.compute.attention_probabilities:
    batch x heads x causal query-key pairs)."""
    return float(row["batch"]) * float(row["num_heads"]) * attention_pairs(int(row["seq_len"]), True)


def attention_prob_costs(df: pd.DataFrame, backend: str, model: str | None = None) -> dict:
    """{"fwd": c, "bwd": c} of one forced SDPA backend: the seconds dropout adds per drawn probability
    (s28mlm2's candidate form, Profile.attention_dropout_prob_s), from the same rows as attention_ratios:
    forward (attn_fwd at p - at 0) / n, backward ((fwd_bwd - fwd) at p - at 0) / n; empty otherwise."""
    a = df[(df["block"] == "attention") & (df["sdpa_backend"] == backend) & (df["sdpa_ran"] == backend)]
    if model:
        a = a[a["model"] == model]
    if not len(a) or a[["batch", "num_heads", "seq_len"]].drop_duplicates().shape[0] != 1:
        return {}   # one call's rows only (a factor and a cost agree at the call they are taken from)
    n = probabilities(a.iloc[0])
    out = {}
    for p_on in sorted(set(a["attention_dropout"]) - {0.0})[:1]:
        f0, f1 = _t(a, bench="attn_fwd", attention_dropout=0.0), _t(a, bench="attn_fwd", attention_dropout=p_on)
        b0, b1 = _t(a, bench="attn_fwd_bwd", attention_dropout=0.0), _t(a, bench="attn_fwd_bwd", attention_dropout=p_on)
        if None not in (f0, f1, b0, b1) and b0 > f0:
            out = {"fwd": (f1 - f0) / n, "bwd": ((b1 - f1) - (b0 - f0)) / n}
    return out


def attention_dropout_prob_terms(gpu: str, root: Path | str | None = None, model: str = PROB_MODEL) -> dict:
    """Profile.attention_dropout_prob_s from the fitting split's attention rows of `model`'s call (the 1.7B
    call the factor is taken at), cuDNN only (the kernel s28mlm2's rule judges): {"cudnn": {fwd, bwd}}."""
    root = records_root() if root is None else root
    df = load(gpu, root)
    if df is None:
        return {}
    fit = df[df["split"] == "fit"]
    return {"cudnn": r} if (r := attention_prob_costs(fit, "cudnn", model)) else {}


def with_kernel_sums(df: pd.DataFrame, kernels: pd.DataFrame) -> pd.DataFrame:
    """Each record's GPU kernel seconds (dense_dropout_kernels.csv: its one profiled repetition, written right after
    the record's own row, so the i-th run of kernel rows of one (bench, dropout, model) is the i-th record) in
    `time_s`, the event-timed figure kept as `timed_s`: the call's kernels without the host's launch gaps."""
    seg, cur, idx = [], None, -1
    for key in zip(kernels["bench"], kernels["attention_dropout"], kernels["model"]):
        if key != cur:
            idx, cur = idx + 1, key
        seg.append(idx)
    k = kernels.assign(rec=seg)
    sums = k.groupby("rec")["time_s"].sum()
    if len(sums) != len(df):
        raise ValueError(f"dense_dropout_kernels.csv: {len(sums)} profiled records for {len(df)} rows")
    first = k.groupby("rec").first()
    for col in ("bench", "model", "sdpa_backend", "hidden_dropout"):   # the i-th segment is the i-th record
        if col in first and col in df and [str(v) for v in first[col]] != [str(v) for v in df[col]]:
            raise ValueError(f"dense_dropout_kernels.csv: the profiled records' {col} do not follow the rows'")
    return df.assign(timed_s=df["time_s"].values, time_s=sums.values)


# s28mlm3: where each card's dropout records are, under the records root (h200: s28mlm2's fitting call)
KERNEL_FACTOR_DIRS = ("", "s28mlm2")


def attention_dropout_kernel_terms(gpu: str, root: Path | str | None = None) -> dict:
    """Profile.attention_dropout_kernel (s28mlm3): attention_ratios on each record's profiled kernel seconds
    (with_kernel_sums) of the fitting split, from the first of <gpu>/ and <gpu>/s28mlm2/ holding dense_dropout.csv
    and its kernels: {kernel: {fwd, bwd}}."""
    root = records_root() if root is None else root
    for sub in KERNEL_FACTOR_DIRS:
        folder = Path(root) / gpu / sub
        if csv_exists(folder / DROPOUT_FILE) and csv_exists(folder / "dense_dropout_kernels.csv"):
            raw = read_csv(folder / DROPOUT_FILE, keep_default_na=False)
            df = with_kernel_sums(raw, read_csv(folder / "dense_dropout_kernels.csv", keep_default_na=False))
            for c in ("time_s", "attention_dropout", "hidden_dropout", "batch", "num_heads", "seq_len"):
                df[c] = pd.to_numeric(df[c], errors="coerce")
            fit = df[df["split"] == "fit"]
            return {TWIN_KERNEL[b]: r for b in TWIN_KERNEL if (r := attention_ratios(fit, b))}
    return {}


def attention_dropout_terms(gpu: str, root: Path | str | None = None) -> dict:
    """Profile.attention_dropout from the fitting split's attention rows: {kernel: {fwd, bwd}}."""
    root = records_root() if root is None else root
    df = load(gpu, root)
    if df is None:
        return {}
    fit = df[df["split"] == "fit"]
    return {TWIN_KERNEL[b]: r for b in TWIN_KERNEL if (r := attention_ratios(fit, b))}


def _model(row) -> ModelSpec:
    """One GPU's slice of the GPT block as a GQA model at tp 1 (learned positions, Megatron's dropout)."""
    h = int(row["num_heads"])
    return ModelSpec(name=str(row["model"]), num_layers=1, hidden_size=int(row["hidden_size"]), vocab_size=1,
                     num_heads=h, attention="gqa", num_kv_heads=h, head_dim=int(row["head_dim"]),
                     intermediate_size=int(row["ffn"]), num_dense_layers=1, position_embedding="learned",
                     attention_dropout=float(row["attention_dropout"]), hidden_dropout=float(row["hidden_dropout"]))


def twin_dropout_cost_s(row, profile: Profile, kernel: str) -> dict:
    """The twin's forward+backward seconds of a block's dropout (attention core's slowdown, the two
    hidden dropouts) at a record's shape, with attention `kernel`'s curves."""
    gpu = gpu_spec(profile.gpu)
    prof = profile.with_attention_kernel(kernel)
    m = _model(row)
    B, S = int(row["batch"]), int(row["seq_len"])
    core_on = [op for op in attention_ops(m, B, S, training=True) if op.kind == OpKind.ATTENTION][0]
    core_off = [op for op in attention_ops(m, B, S, training=False) if op.kind == OpKind.ATTENTION][0]

    def fb(op):
        return sum(compute.op_time_s(op, ph, "bf16", gpu, prof) for ph in ("fwd", "bwd_input"))
    hidden = 2 * sum(fb(op) for op in hidden_dropout_ops(m, "attn", B * S, True))
    return {"attention_s": fb(core_on) - fb(core_off), "hidden_s": hidden}


def check(gpu: str, root: Path | str | None = None, profile: Profile | None = None) -> list[dict]:
    """Per case and SDPA backend: the measured dropout cost of a block beside the twin's."""
    root = records_root() if root is None else root
    df = load(gpu, root)
    if df is None:
        return []
    prof = profile or fitted_profile(gpu)
    out = []
    blocks = df[(df["bench"] == "block_fwd_bwd")]
    for (model, backend), g in blocks.groupby(["model", "sdpa_backend"]):
        off = g[(g["attention_dropout"] == 0) & (g["hidden_dropout"] == 0)]
        on = g[(g["attention_dropout"] > 0) & (g["hidden_dropout"] > 0)]
        if not len(off) or not len(on):
            continue
        row = on.iloc[0]
        ran_on, ran_off = str(row["sdpa_ran"]), str(off.iloc[0]["sdpa_ran"])
        kernel = TWIN_KERNEL.get(ran_on, "cudnn")
        twin = twin_dropout_cost_s(row, prof, kernel)
        meas = float(on["time_s"].median() - off["time_s"].median())
        rec = {"model": model, "split": str(row["split"]), "sdpa_backend": backend, "ran_without": ran_off,
               "ran_with": ran_on, "block_s": float(off["time_s"].median()), "measured_dropout_s": meas,
               "twin_dropout_s": twin["attention_s"] + twin["hidden_s"], **{f"twin_{k}": v for k, v in twin.items()}}
        for part, p_a, p_h in (("attention_only", 1, 0), ("hidden_only", 0, 1)):
            one = g[((g["attention_dropout"] > 0) == bool(p_a)) & ((g["hidden_dropout"] > 0) == bool(p_h))]
            if len(one):
                rec[f"measured_{part}_s"] = float(one["time_s"].median() - off["time_s"].median())
        add = df[(df["model"] == model) & (df["bench"] == "add_fwd_bwd")]
        dropadd = df[(df["model"] == model) & (df["bench"] == "dropadd_fwd_bwd")]
        if len(add) and len(dropadd):   # one eager hidden dropout; a block runs two
            rec["measured_eager_hidden_pair_s"] = 2 * float(dropadd["time_s"].median() - add["time_s"].median())
        out.append(rec)
    return out


def write_profile_terms(gpu: str, root: Path | str | None = None, profiles_dir: Path | None = None) -> dict:
    """Set the committed profile's `attention_dropout` (and `attention_dropout_prob_s`, s28mlm2;
    `attention_dropout_kernel`, s28mlm3) from the records, every other key as it is (placed after
    partials_reduce_eff / before provenance, as Profile.to_json does)."""
    root = records_root() if root is None else root
    path = Path(str(profiles_dir or PROFILES)) / f"{gpu}.json"
    data = json.loads(path.read_text())
    terms = attention_dropout_terms(gpu, root)
    new = {"attention_dropout": terms, "attention_dropout_prob_s": attention_dropout_prob_terms(gpu, root),
           "attention_dropout_kernel": attention_dropout_kernel_terms(gpu, root)}
    out = {}
    for key, value in data.items():
        if key in new:
            continue
        if key == "provenance":
            out.update({k: v for k, v in new.items() if v})
        out[key] = value
    write_text(path, json.dumps(out, indent=1, sort_keys=False) + "\n")
    return terms


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.dense_dropout", description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--root", type=Path, help="the records root (default: --records DIR, else calibration/measurements)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--write-profile", action="store_true", help="set the committed profile's attention_dropout")
    args = ap.parse_args(argv)
    args.root = Path(args.root) if args.root else rec.records_root()
    if args.write_profile and load(args.gpu, args.root) is None and attention_dropout_kernel_terms(args.gpu, args.root):
        write_profile_terms(args.gpu, args.root)   # s28mlm3: a card whose only dropout records are s28mlm2's
        print(f"{args.gpu}: attention_dropout_kernel {attention_dropout_kernel_terms(args.gpu, args.root)}")
        return 0
    if load(args.gpu, args.root) is None:
        print(f"no {DROPOUT_FILE} under {args.root / args.gpu}: run real/campaigns/s11drop.sh on that GPU first",
              file=sys.stderr)
        return 2
    if args.write_profile:
        print(f"{args.gpu}: attention_dropout {write_profile_terms(args.gpu, args.root)}")
    df = load(args.gpu, args.root)
    res = {"gpu": args.gpu, "attention_dropout_fit": attention_dropout_terms(args.gpu, args.root),
           "attention_dropout_prob_fit": attention_dropout_prob_terms(args.gpu, args.root),
           "attention_dropout_kernel_fit": attention_dropout_kernel_terms(args.gpu, args.root),
           "attention_ratios_per_model": {f"{m} {b}": attention_ratios(df, b, m)
                                          for m in sorted(set(df["model"])) for b in ("flash", "cudnn", "efficient")},
           "blocks": check(args.gpu, args.root)}
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

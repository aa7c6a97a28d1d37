"""torch's micro-pipelined TP measured against the twin's model of it (plan.tp_overlap_kind
'torch_async_tp'; issue 14, session s9tt).

real/bench/async_tp.py (campaign real/campaigns/s9tt.sh) times, on two GPUs as TP2, the GEMMs of
torchtitan's Llama 3.1 TP slices with their all-gather or reduce-scatter: alone, in sequence, fused
(torch.ops.symm_mem.fused_all_gather_matmul / fused_matmul_reduce_scatter) and, for the
reduce-scatter, the reduction of the stacked partial sums the fused op ends with
(calibration/measurements/<gpu>x2/async_tp.csv). Each row is predicted here with the twin's own
cost functions, as twin.training.step.StepCosts._tp_task composes them:
  mm          twin.costs.compute.gemm_time_s on the GPU's fitted (burst) profile;
  collective  twin.costs.comm.collective_time_s over the profile's measured collectives (one node);
  sequential  the two added;
  fused       the GEMM + comm.pipelined_exposed_s of the collective beside it, + for the
              reduce-scatter the partials' reduction;
  reduce      compute.partials_reduce_time_s: the whole stacked buffer read and the rank's 1/W
              written, at Profile.partials_reduce_eff;
  p2p_copy    (s10atp) one shard pulled from a peer, as the twin costs a peer transfer
              (comm.collective_time_s 'send_recv' of the shard's bytes);
  mm_beside_copy  (s10atp) the longer of the GEMM and that copy: the twin lets a transfer beside a
              GEMM take nothing from it.
rel_error = predicted / measured - 1 (negative: the twin too fast). Rows the device could not run
(status 'unavailable') are listed, not predicted.

One term is measured here (session s10atp): `partials_reduce_eff`, the HBM bandwidth fraction the
partials' reduction reaches per W, the median at each W over the fitting rows of op 'reduce' in
REDUCE_FILES (bytes moved / (time - one launch) / the GPU's HBM bandwidth; reduce_split: the 70B
outputs fit); the held-out rows (the 405B outputs) check it, and the fused rows that end with it. `--update` writes it into the committed profile with its provenance
(calibration.records.write_profile_terms); `twin fit` computes it with the rest.

The same campaign's one-GPU part times the GEMMs of torchtitan's Llama linears on a TP8 rank
(plan.unfused_linears: wq, wk, w1 separate, qkv and w1+w3 fused; forward, input and weight
gradient; BF16 and tensorwise FP8; the campaign's gemm.csv rows of bench `tt_linear`, kept apart
from the fitted GEMM records as <gpu>/tt_linears.csv so no fit reads them): `linears` predicts each
with twin.costs.compute.gemm_time_s (BF16 output, as measured; the FP8 rows on the `fp8-tensor`
curve, Profile.with_fp8_recipe), casts not included (the records time pre-quantized operands).

The s10atp campaign's one-GPU rows (<gpu>/atp_parts.csv, `parts`): the partial-sum reductions at
W = 2, 4, 8 and the 405B TP8 linears' GEMMs whole and as the chunk GEMMs the fused ops issue.

    python -m calibration.async_tp [--gpu h100] [--root DIR] [--json] [--update]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pandas as pd

from calibration import entry
from calibration import records as rec
from calibration.predict import gpu_spec
from calibration.records import records_root
from calibration.records_io import csv_exists, csv_sha256, read_csv
from twin.core.specs import GPUSpec
from twin.costs import comm, compute
from twin.costs.flops import BF16_BYTES, Op, OpKind
from twin.costs.profile import PROFILES, Profile, fitted_profile

RECORDS_FILE = "async_tp.csv"
LINEARS_FILE = "tt_linears.csv"   # the s9tt campaign's tt_linear GEMM rows, apart from the fitted gemm.csv
PARTS_FILE = "atp_parts.csv"      # the s10atp campaign's one-GPU rows: partial-sum reductions, chunk GEMMs


def _collective_bytes(kind: str, m: int, n: int, k: int) -> float:
    """The collective's whole buffer: the gathered M x K input, or the M x N output reduced."""
    return (m * k if kind == "all_gather" else m * n) * BF16_BYTES


def predict_op(kind: str, op: str, m: int, n: int, k: int, world: int, gpu: GPUSpec, profile: Profile) -> float:
    """The twin's seconds for one measured op (see the module docstring)."""
    if op in ("p2p_copy", "mm_beside_copy"):
        shard_bytes = (m // world) * (k if kind == "all_gather" else n) * BF16_BYTES
        copy_s = comm.collective_time_s("send_recv", shard_bytes, 2, gpu, True, profile.collectives)
        return copy_s if op == "p2p_copy" else max(copy_s, compute.gemm_time_s(m, n, k, "bf16", gpu, profile))
    mm_s = compute.gemm_time_s(m, n, k, "bf16", gpu, profile)
    coll_s = comm.collective_time_s(kind, _collective_bytes(kind, m, n, k), world, gpu, True, profile.collectives)
    reduce_s = compute.partials_reduce_time_s(m * n * BF16_BYTES, world, gpu, profile)
    if op == "mm":
        return mm_s
    if op == "collective":
        return coll_s
    if op == "sequential":
        return mm_s + coll_s
    if op == "reduce":
        return reduce_s
    if op == "fused":
        return mm_s + comm.pipelined_exposed_s(kind, coll_s, mm_s, world) + (reduce_s if kind == "reduce_scatter" else 0.0)
    raise ValueError(f"unknown op {op!r}")


def load(gpu: str = "h100", root: Path | str | None = None, gpus: int = 2) -> pd.DataFrame:
    """The multi-GPU records of a GPU type (<gpu>x<gpus>/async_tp.csv: s9tt's TP2 rows in x2, s10atp's
    405B TP8-chunk rows where a 4-GPU host ran them in x4)."""
    root = records_root() if root is None else root
    return read_csv(Path(root) / f"{gpu}x{gpus}" / RECORDS_FILE)


# the records a reduction's bandwidth is measured from, per W (<gpu>x<n>/async_tp.csv: TP2 and TP4
# in situ; <gpu>/atp_parts.csv: W = 2, 4, 8 on one GPU)
REDUCE_FILES = ("{gpu}x2/" + RECORDS_FILE, "{gpu}x4/" + RECORDS_FILE, "{gpu}/" + PARTS_FILE)


def reduce_split(shape_tag: str) -> str:
    """Which reduction records fit the term: the 70B outputs (every W, both layouts); the 405B
    ones are held out. (s10atp's campaign wrote split = fit on the 70B W = 2 flat rows only; W
    turned out to set the rate, 0.44 -> 0.85 of HBM from W = 2 to 8, so the term is fitted per W,
    on the 70B rows at each W, re-split by shape as s9tt's async_tp_split splits: stated in
    calibration/published_runs/README.md.)"""
    return "holdout" if str(shape_tag).startswith("llama3.1-405b") else "fit"


def reduce_records(gpu: str, root: Path | str | None = None) -> tuple[pd.DataFrame, dict]:
    """Every measured reduction of the stacked partials (op 'reduce', status ok) in REDUCE_FILES,
    with its split (reduce_split) and file -> (rows, {file: sha256})."""
    root = records_root() if root is None else root
    frames, files = [], {}
    for pattern in REDUCE_FILES:
        rel = pattern.format(gpu=gpu)
        path = Path(root) / rel
        if not csv_exists(path):
            continue
        df = read_csv(path)
        ok = df[(df["op"] == "reduce") & (df.get("status", pd.Series("ok", index=df.index)).fillna("ok") == "ok")]
        if ok.empty:
            continue
        files[rel] = csv_sha256(path)
        frames.append(ok.assign(file=rel, split=[reduce_split(t) for t in ok["shape_tag"]])
                      [["file", "shape_tag", "m", "n", "world_size", "split", "time_s"]])
    rows = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    return rows, files


def reduce_bandwidth_fracs(rows: pd.DataFrame, gpu: GPUSpec, launch_s: float) -> pd.Series:
    """Per reduction record: the HBM bandwidth fraction it reached (the stacked buffer read, the
    rank's 1/W written, over its time less one launch)."""
    moved = rows["m"] * rows["n"] * BF16_BYTES * (1.0 + 1.0 / rows["world_size"])
    return moved / ((rows["time_s"] - launch_s) * gpu.hbm_bytes_per_s)


def partials_reduce_terms(gpu: str, root: Path | str | None = None,
                          profile: Profile | None = None) -> tuple[dict, dict]:
    """Profile.partials_reduce_eff: per W, the median bandwidth fraction of the fitting reduction
    records at that W -> ({"<W>": fraction}, provenance: files and sha256, rows per W, the held-out
    rows' errors); ({}, {}) without fitting records (memory_eff then stands in)."""
    root = records_root() if root is None else root
    rows, files = reduce_records(gpu, root)
    if rows.empty or not (rows["split"] == "fit").any():
        return {}, {}
    spec = gpu_spec(gpu)
    base = profile or fitted_profile(gpu)
    fit = rows[rows["split"] == "fit"]
    fracs = reduce_bandwidth_fracs(fit, spec, base.launch_s)
    table = {str(int(w)): float(min(1.0, fracs[fit["world_size"] == w].median()))
             for w in sorted(fit["world_size"].unique())}
    measured = dataclasses.replace(base, partials_reduce_eff=table)
    held = rows[rows["split"] == "holdout"]
    errors = [{"file": r.file, "shape_tag": r.shape_tag, "world_size": int(r.world_size),
               "rel_error": round(compute.partials_reduce_time_s(int(r.m) * int(r.n) * BF16_BYTES, int(r.world_size),
                                                                 spec, measured) / float(r.time_s) - 1.0, 4)}
              for r in held.itertuples(index=False)]
    info = {"files": files,
            "source": ("per W, the median HBM bandwidth fraction of the fitting 'reduce' rows (torch.sum over the "
                       "stacked partials; the 70B outputs fit, the 405B ones held out: calibration.async_tp.reduce_split)"),
            "fit_rows": {w: int((fit["world_size"] == int(w)).sum()) for w in table},
            "holdout": errors}
    return table, info


def update_profile(gpu: str = "h100", root: Path | str | None = None, profiles_dir: Path | str | None = None
                   ) -> tuple[dict, dict] | None:
    """Write partials_reduce_terms(gpu) into the committed profile <profiles_dir>/<gpu>.json and its
    provenance, nothing else. None without records or profile."""
    root = records_root() if root is None else root
    path = Path(str(profiles_dir or PROFILES)) / f"{gpu}.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    table, info = partials_reduce_terms(gpu, root)
    if not table:
        return None
    rec.write_profile_terms(path, data, {"partials_reduce_eff": table}, {"partials_reduce": info})
    return table, info


def compare(records: pd.DataFrame, gpu: str = "h100", profile: Profile | None = None) -> dict:
    """Every measured row beside the twin's prediction; per op, the median error over fit and
    held-out rows."""
    spec, profile = gpu_spec(gpu), profile or fitted_profile(gpu)
    rows, unavailable = [], []
    for r in records.itertuples(index=False):
        if r.status != "ok":
            unavailable.append({"shape_tag": r.shape_tag, "op": r.op, "detail": r.detail})
            continue
        pred = predict_op(r.kind, r.op, int(r.m), int(r.n), int(r.k), int(r.world_size), spec, profile)
        rows.append({"shape_tag": r.shape_tag, "kind": r.kind, "op": r.op, "split": r.split,
                     "measured_s": float(r.time_s), "predicted_s": pred, "rel_error": pred / float(r.time_s) - 1.0})
    df = pd.DataFrame(rows)
    summary = {}
    if not df.empty:
        for (op, split), g in df.groupby(["op", "split"]):
            summary.setdefault(op, {})[split] = {"rows": len(g), "median_rel_error": float(g["rel_error"].median())}
    return {"gpu": gpu, "rows": rows, "unavailable": unavailable, "summary": summary}


# campaign s20tt's TP2 rows (real/campaigns/s20tt.sh, every operand filled), kept apart from s9tt's
# <gpu>x2/async_tp.csv so no other fit (partials_reduce_terms) reads them
S20TT_RECORDS = "s20tt_async_tp/" + RECORDS_FILE


def fused_excess_shares(records: pd.DataFrame) -> pd.DataFrame:
    """Per measured fused op (a shape and kind with its GEMM alone, collective alone and fused op
    timed, status ok): what the fused op costs beyond its GEMM (and, for a reduce-scatter, the
    partial-sum reduction) as a share of its collective, `excess`; `long_gemm` where the GEMM alone
    outlasts the collective alone (there the ring model, comm.pipelined_exposed_s, hides it all)."""
    ok = records[records["status"].fillna("ok") == "ok"] if "status" in records else records
    rows = []
    for (tag, kind), g in ok.groupby(["shape_tag", "kind"], sort=False):
        t = {r.op: float(r.time_s) for r in g.itertuples(index=False)}
        if not {"mm", "collective", "fused"} <= set(t) or (kind == "reduce_scatter" and "reduce" not in t):
            continue
        reduce_s = t["reduce"] if kind == "reduce_scatter" else 0.0
        rows.append({"shape_tag": tag, "kind": kind, "world_size": int(g["world_size"].iloc[0]),
                     "split": g["split"].iloc[0], "excess": (t["fused"] - t["mm"] - reduce_s) / t["collective"],
                     "long_gemm": t["mm"] >= t["collective"]})
    return pd.DataFrame(rows, columns=["shape_tag", "kind", "world_size", "split", "excess", "long_gemm"])


def fused_excess_frac(records: pd.DataFrame) -> float | None:
    """twin.training.step.ATP_FUSED_EXCESS_FRAC from measured fused ops: the median `excess` of the
    fitting rows whose GEMM outlasts the collective (fused_excess_shares), within [0, 1]; None without
    such a row (docs/notes/s20tt_rule.md)."""
    shares = fused_excess_shares(records)
    fit = shares[(shares["split"] == "fit") & shares["long_gemm"]]
    if fit.empty:
        return None
    return float(min(1.0, max(0.0, fit["excess"].median())))


def linears(gemm: pd.DataFrame, gpu: str = "h100", profile: Profile | None = None) -> list[dict]:
    """The tt_linear GEMM records of gemm.csv beside the twin's GEMM seconds."""
    spec, profile = gpu_spec(gpu), profile or fitted_profile(gpu)
    tensorwise = profile.with_fp8_recipe("tensorwise")
    out = []
    for r in gemm[gemm["bench"] == "tt_linear"].itertuples(index=False):
        fp8 = str(r.precision).startswith("fp8")
        pred = compute.gemm_time_s(int(r.m), int(r.n), int(r.k), "fp8" if fp8 else "bf16", spec,
                                   tensorwise if fp8 else profile)
        out.append({"shape_tag": r.shape_tag, "precision": r.precision, "m": int(r.m), "n": int(r.n), "k": int(r.k),
                    "measured_s": float(r.time_s), "predicted_s": pred, "rel_error": pred / float(r.time_s) - 1.0})
    return out


def parts(records: pd.DataFrame, gpu: str = "h100", profile: Profile | None = None) -> list[dict]:
    """The one-GPU atp_parts records (real/bench/async_tp.py bench_atp_parts) beside the twin:
    a reduction at compute.partials_reduce_time_s for its W; a linear's GEMM whole, or as its
    chunk GEMMs (compute.chunked_gemm_time_s: the twin lets two streams' chunks overlap nothing)."""
    spec, profile = gpu_spec(gpu), profile or fitted_profile(gpu)
    tensorwise = profile.with_fp8_recipe("tensorwise")
    out = []
    for r in records.itertuples(index=False):
        if r.op == "reduce":
            pred = compute.partials_reduce_time_s(int(r.m) * int(r.n) * BF16_BYTES, int(r.world_size), spec, profile)
            case = f"{r.shape_tag} W={int(r.world_size)} {r.layout}"
        else:
            fp8 = str(r.precision).startswith("fp8")
            op = Op("linear", OpKind.GEMM, "mlp", int(r.m), int(r.n), int(r.k))
            pred = compute.chunked_gemm_time_s(op, "fwd", "fp8" if fp8 else "bf16", int(r.chunks), spec,
                                               tensorwise if fp8 else profile)
            case = f"{r.shape_tag} {r.precision}"
        split = reduce_split(r.shape_tag) if r.op == "reduce" else r.split   # the reductions: the term's own split
        out.append({"case": case, "op": r.op, "split": split, "measured_s": float(r.time_s), "predicted_s": pred,
                    "rel_error": pred / float(r.time_s) - 1.0})
    return out


def format_table(result: dict) -> str:
    lines = [f"torch micro-pipelined TP on {result['gpu']} x{result.get('gpus', 2)}: twin vs measured "
             "(error = predicted / measured - 1)",
             f"{'case':22} {'op':11} {'split':8} {'measured ms':>12} {'twin ms':>9} {'err':>7}"]
    for r in result["rows"]:
        lines.append(f"{r['shape_tag']:22} {r['op']:11} {r['split']:8} {r['measured_s'] * 1e3:12.3f} "
                     f"{r['predicted_s'] * 1e3:9.3f} {r['rel_error']:+7.1%}")
    for u in result["unavailable"]:
        lines.append(f"{u['shape_tag']:22} {u['op']:11} unavailable: {u['detail']}")
    for r in result.get("parts", []):
        lines.append(f"{r['case']:38} {r['op']:18} {r['split']:8} {r['measured_s'] * 1e3:9.3f} {r['predicted_s'] * 1e3:9.3f} "
                     f"{r['rel_error']:+7.1%}")
    for r in result.get("linears", []):
        lines.append(f"{r['shape_tag']:38} {r['precision']:10} {r['measured_s'] * 1e3:9.3f} {r['predicted_s'] * 1e3:9.3f} "
                     f"{r['rel_error']:+7.1%}")
    return "\n".join(lines)


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.async_tp", description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", default="h100")
    ap.add_argument("--root", type=Path, help="the records root (default: --records DIR, else calibration/measurements)")
    ap.add_argument("--gpus", type=int, default=2, help="the records folder <gpu>x<gpus> (2: s9tt's; 4: s10atp's 4-GPU rows)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--update", action="store_true",
                    help="write the measured partials_reduce_eff into the committed profile twin/data/profiles/<gpu>.json")
    args = ap.parse_args(argv)
    args.root = Path(args.root) if args.root else rec.records_root()
    path = Path(args.root) / f"{args.gpu}x{args.gpus}" / RECORDS_FILE
    if not csv_exists(path):
        print(f"error: no records at {path} (real/campaigns/s9tt.sh, s10atp.sh write them)", file=sys.stderr)
        return 2
    profile = None
    if args.update:
        done = update_profile(args.gpu, args.root)
        if done:   # this process's cached profile predates the write
            profile = dataclasses.replace(fitted_profile(args.gpu), partials_reduce_eff=done[0])
            print(f"{args.gpu}: partials_reduce_eff {json.dumps(done[0])} written", file=sys.stderr)
    result = {**compare(load(args.gpu, args.root, args.gpus), args.gpu, profile), "gpus": args.gpus}
    gemm_csv = Path(args.root) / args.gpu / LINEARS_FILE
    if csv_exists(gemm_csv):
        result["linears"] = linears(read_csv(gemm_csv), args.gpu)
    parts_csv = Path(args.root) / args.gpu / PARTS_FILE
    if csv_exists(parts_csv):
        result["parts"] = parts(read_csv(parts_csv), args.gpu, profile)
    print(json.dumps(result, indent=1) if args.json else format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

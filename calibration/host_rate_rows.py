"""Which fitting rows give the eager layers' host rate per kernel (issue 13, session s13mla): the
test of calibration.layer_gaps.HOST_RATE_ROW_RULES against the adoption rule committed before it
ran (docs/notes/s13mla_rule.md).

For each candidate ("every_solved" = R2, "every_raw" = R) the profile's measured eager terms are
recomputed with that choice of rows (layer_gaps.eager_terms(host_rows=...)), written into a copy of
the committed profiles, and `calibration.validate` is run on a copy of one GPU type's committed
records; the held-out figures (calibration.attn_small.figures) are judged against today's by
`judge`. Then, as a bound and never a candidate, `rate_bound` scans host rates on the H100 MLA
layer cases: the lowest held-out P90 any (fwd, bwd) pair reaches, chosen with held-out knowledge.

    python -m calibration.host_rate_rows [--json OUT]
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from calibration import entry
from calibration import records as rec
from calibration.attn_small import figures, gpu_root, meets
from calibration.fit import PROFILES_DIR
from calibration.layer_gaps import eager_terms
from calibration.validate import predict_cases, validate
from twin.core.atomic import write_text
from twin.costs.profile import profile_from_json

CANDIDATES = ("every_solved", "every_raw")   # R2, R: adopted in this order, the first passing
GPUS = ("h100", "h200")
SLACK = 0.003   # rule 2 and 3: a figure that meets its target may rise by at most 0.3 points


def judge(before: dict, after: dict, gpu: str) -> list[str]:
    """The rule's failures for one GPU's figures (empty: passes). `before` / `after`: {kind:
    (median, p90)} as calibration.attn_small.figures gives them."""
    bad = []
    if gpu == "h100" and not after["mla_layer"][1] < before["mla_layer"][1]:
        bad.append(f"h100 mla_layer P90 {before['mla_layer'][1]:.2%} -> {after['mla_layer'][1]:.2%}: does not fall")
    for kind, fig in before.items():
        if not (kind == "kernels" or meets(fig)):
            continue
        new = after.get(kind)
        if new is None or (kind != "kernels" and not meets(new)):
            bad.append(f"{gpu} {kind} met {fig[0]:.2%}/{fig[1]:.2%}, now {_fmt(new)}")
        elif new[0] > fig[0] + SLACK or new[1] > fig[1] + SLACK:
            bad.append(f"{gpu} {kind} {fig[0]:.2%}/{fig[1]:.2%} -> {_fmt(new)}: more than 0.3 points worse")
    return bad


def _fmt(fig) -> str:
    return "none" if fig is None else f"{fig[0]:.2%}/{fig[1]:.2%}"


def candidate_profiles(rows: str, into: Path, gpus=GPUS) -> Path:
    """A copy of the committed profiles with each GPU's eager terms recomputed under `rows`."""
    out = into / f"profiles_{rows}"
    shutil.copytree(PROFILES_DIR, out)
    for gpu in gpus:
        path = out / f"{gpu}.json"
        data = json.loads(path.read_text())
        terms = eager_terms(gpu, profile_from_json(data), host_rows=rows)
        rec.write_profile_terms(path, data, {"eager": terms})
    return out


def gpu_figures(gpu: str, profiles: Path | str, tmp: Path) -> dict:
    return figures(validate(root=gpu_root(gpu, tmp / f"records_{gpu}"), profiles_dir=profiles, gpus=[gpu]), gpu)


def compare(candidates=CANDIDATES, gpus=GPUS, before: dict | None = None) -> dict:
    """Today's figures (`before`: {gpu: figures} where already computed), each candidate's rates and
    figures, its failures under the rule, and the candidate adopted (the first passing; None)."""
    out = {"before": {g: {k: tuple(v) for k, v in f.items()} for g, f in (before or {}).items()}, "candidates": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for gpu in gpus:
            if gpu not in out["before"]:
                out["before"][gpu] = gpu_figures(gpu, PROFILES_DIR, tmp / "before")
        for rows in candidates:
            profiles = candidate_profiles(rows, tmp, gpus)
            figs = {g: gpu_figures(g, profiles, tmp / rows) for g in gpus}
            rates = {g: json.loads((profiles / f"{g}.json").read_text())["eager"].get("host_s", {}) for g in gpus}
            fails = [f for g in gpus for f in judge(out["before"][g], figs[g], g)]
            out["candidates"][rows] = {"host_s": rates, "figures": figs, "fails": fails}
    out["adopted"] = next((r for r in candidates if not out["candidates"][r]["fails"]), None)
    return out


def rate_bound(gpu: str = "h100", fwd_us=np.arange(18.0, 34.01, 1.0), bwd_us=np.arange(18.0, 60.01, 2.0)) -> dict:
    """The lowest held-out MLA-layer P90 any (fwd, bwd) host rate pair reaches on `gpu`'s committed
    records (`infer` kept): a bound chosen WITH held-out knowledge, never adoptable; it says whether
    a host-rate estimator can meet the P90 target at all."""
    df = rec.load_records(gpu)
    df = df[df["bench"].isin(["mla_layer_fwd", "mla_layer_bwd"])]
    prof = profile_from_json(json.loads((Path(PROFILES_DIR) / f"{gpu}.json").read_text()))
    best = None
    for f in fwd_us:
        for b in bwd_us:
            host = {**prof.eager["host_s"], "fwd": f * 1e-6, "bwd": b * 1e-6}
            p = dataclasses.replace(prof, eager={**prof.eager, "host_s": host})
            cases, _ = predict_cases(df, gpu, p)
            err = np.array([abs(c["rel_error"]) for c in cases if c["held_out"]])
            fig = (float(np.median(err)), float(np.percentile(err, 90)))
            if best is None or fig[1] < best["figures"][1]:
                best = {"fwd_us": float(f), "bwd_us": float(b), "figures": fig,
                        "errors": {c["name"]: round(c["rel_error"], 4) for c in cases if c["held_out"]}}
    return best


def format_report(out: dict) -> str:
    lines = []
    for rows, c in out["candidates"].items():
        lines.append(f"{rows}: host_s (us) " + ", ".join(
            f"{g} " + "/".join(f"{k} {v * 1e6:.2f}" for k, v in sorted(r.items())) for g, r in c["host_s"].items()))
        for g, figs in c["figures"].items():
            for kind, fig in figs.items():
                was = out["before"][g].get(kind)
                lines.append(f"  {g:5} {kind:22} {_fmt(was):>14} -> {_fmt(fig)}")
        lines.append("  fails: " + ("; ".join(c["fails"]) or "none"))
    lines.append(f"adopted: {out['adopted']}")
    if out.get("bound"):
        b = out["bound"]
        lines.append(f"rate-only bound (held-out knowledge, not adoptable), h100 mla_layer: fwd {b['fwd_us']:.1f} us, "
                     f"bwd {b['bwd_us']:.1f} us -> {_fmt(b['figures'])}")
    return "\n".join(lines)


@entry.script
def main(argv=None) -> int:
    ap = entry.JudgeParser(prog="python -m calibration.host_rate_rows", description=__doc__.splitlines()[0])
    ap.add_argument("--json", help="write the result as JSON here")
    ap.add_argument("--no-bound", action="store_true", help="skip the rate-only bound scan")
    ap.add_argument("--before", help="today's figures as JSON ({gpu: {kind: [median, p90]}}), to skip recomputing them")
    args = ap.parse_args(argv)
    out = compare(before=json.loads(Path(args.before).read_text()) if args.before else None)
    if not args.no_bound:
        out["bound"] = rate_bound("h100")
    print(format_report(out))
    if args.json:
        write_text(Path(args.json), json.dumps(out, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

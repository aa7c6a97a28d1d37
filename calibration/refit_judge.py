"""Judge s26refit's candidate, the committed profiles refitted on every fit-family record committed today
(docs/notes/s26refit_rule.md), from two `twin validate --json` results of the same code and records: the
committed profiles' (BEFORE) and the candidate's (AFTER, `--profiles` the candidate's folder, which
`twin fit --profiles DIR` writes). Writes calibration/s26refit_judgement.json with --write.

    twin fit --profiles CAND && twin validate --json BEFORE.json && twin validate --profiles CAND --json AFTER.json
    python -m calibration.refit_judge --before BEFORE.json --after AFTER.json --candidate CAND [--write]

The judgement keeps what a reader needs to recompute it: every criterion's and guard's row (before, after,
margin), the candidate's terms that differ from the committed profiles' (`candidate_terms`; every other
term is the same), and the count of `twin validate --json` fields that moved, per section.
"""

from __future__ import annotations

import json
from pathlib import Path

from calibration import entry
from calibration.fit import PROFILES_DIR
from calibration.validate import MEDIAN_TARGET, P90_TARGET
from calibration.records_io import write_json_text
from twin.costs.profile import Profile, profile_from_json

JUDGEMENT = Path(__file__).with_name("s26refit_judgement.json")
GPUS = ("h100", "h200")
# the rule's margins, percentage points of |error|
TOTAL_MEDIAN_PP, TOTAL_P90_PP = 0.10, 0.30        # C1: held-out kernels and layers per GPU
KIND_MEDIAN_PP, KIND_P90_PP = 0.30, 0.50          # C2 (every GPU x kind x GPU count row) and G1, G2's decode GEMMs
BLOCK_TARGET = 0.10                              # G2: a TP/CP block within 10%
SECTION_PREFIXES = ("prereg_", "fresh_")          # G1


def _normalised(data: dict) -> dict:
    """A profile JSON as the twin reads it (profile_from_json, so a field left out reads as its default),
    without its provenance."""
    out = profile_from_json(data).to_json()
    out.pop("provenance", None)
    return out


def candidate_terms(committed: dict, candidate: dict) -> dict:
    """{top-level profile key: candidate's value} where the candidate's profile differs from the committed."""
    a, b = _normalised(committed), _normalised(candidate)
    return {k: b[k] for k in b if a.get(k) != b[k]}


def with_terms(committed: dict, terms: dict) -> Profile:
    """The candidate's profile rebuilt from the committed JSON and candidate_terms."""
    return profile_from_json({**committed, **terms})


def _rise_pp(before: float | None, after: float | None) -> float:
    return 0.0 if before is None or after is None else (after - before) * 100.0


def _meets(s: dict) -> bool:
    return (s.get("median_abs_rel_error") is not None and s["median_abs_rel_error"] <= MEDIAN_TARGET
            and s["p90_abs_rel_error"] <= P90_TARGET)


def _row(name: str, before: dict, after: dict, median_pp: float, p90_pp: float, keep_met: bool = True) -> dict:
    rise_m = _rise_pp(before.get("median_abs_rel_error"), after.get("median_abs_rel_error"))
    rise_p = _rise_pp(before.get("p90_abs_rel_error"), after.get("p90_abs_rel_error"))
    met0, met1 = _meets(before), _meets(after)
    return {"name": name, "num_cases": before.get("num_cases"),
            "median_before": before.get("median_abs_rel_error"), "median_after": after.get("median_abs_rel_error"),
            "p90_before": before.get("p90_abs_rel_error"), "p90_after": after.get("p90_abs_rel_error"),
            "median_rise_pp": rise_m, "p90_rise_pp": rise_p, "met_before": met0, "met_after": met1,
            "median_margin_pp": median_pp, "p90_margin_pp": p90_pp,
            "passes": row_passes(rise_m, rise_p, median_pp, p90_pp, met0, met1, keep_met)}


def row_passes(rise_m: float, rise_p: float, median_pp: float, p90_pp: float, met0: bool, met1: bool,
               keep_met: bool = True) -> bool:
    """A row holds: neither figure rose beyond its margin (1e-9 pp of float slack), and where `keep_met`, a
    row meeting 5% / 10% before still meets them."""
    return bool(rise_m <= median_pp + 1e-9 and rise_p <= p90_pp + 1e-9 and (met1 or not met0 or not keep_met))


def c1_rows(before: dict, after: dict) -> list[dict]:
    return [_row(gpu, before["gpus"][gpu], after["gpus"][gpu], TOTAL_MEDIAN_PP, TOTAL_P90_PP) for gpu in GPUS]


def c2_rows(before: dict, after: dict) -> list[dict]:
    key = lambda r: (r["gpu"], r["kind"], r["num_gpus"])   # noqa: E731
    after_rows = {key(r): r for r in after["by_gpu_kind_gpus"]}
    return [_row(f"{r['gpu']} {r['kind']} {r['num_gpus']} GPU", r["held_out"], after_rows[key(r)]["held_out"],
                 KIND_MEDIAN_PP, KIND_P90_PP)
            for r in sorted(before["by_gpu_kind_gpus"], key=key) if r["held_out"].get("num_cases")]


def _leaves(x, prefix: str = "") -> dict:
    if isinstance(x, dict):
        return {k: v for key, val in x.items() for k, v in _leaves(val, f"{prefix}{key}.").items()}
    if isinstance(x, list):
        return {k: v for i, val in enumerate(x) for k, v in _leaves(val, f"{prefix}{i}.").items()}
    return {prefix[:-1]: x}


def g1_rows(before: dict, after: dict) -> list[dict]:
    """Per pre-registered / fresh section: its median and P90 figures and met flags that moved (a section's
    leaves named *median* / *p90* rise by at most the kind margins; a *met* True stays True)."""
    rows = []
    for sec in sorted(k for k in before if k.startswith(SECTION_PREFIXES)):
        a, b = _leaves(before[sec]), _leaves(after.get(sec, {}))
        moved = sorted(k for k in a if a[k] != b.get(k))
        breaches = []
        for k in moved:
            leaf = k.rsplit(".", 1)[-1]
            if isinstance(a[k], bool) and "met" in leaf:
                if a[k] and not b.get(k):
                    breaches.append(k)
            elif isinstance(a[k], (int, float)) and isinstance(b.get(k), (int, float)) and ("median" in leaf or "p90" in leaf):
                if _rise_pp(a[k], b[k]) > (KIND_P90_PP if "p90" in leaf else KIND_MEDIAN_PP) + 1e-9 and "signed" not in leaf:
                    breaches.append(k)
        rows.append({"name": sec, "num_moved": len(moved), "breaches": breaches, "passes": not breaches})
    return rows


def _blocks_within(result: dict) -> dict:
    out: dict = {}
    for c in result["cases"]:
        if c["kind"] in ("tp_block", "cp_block") and c["held_out"]:
            k = f"{c['gpu']}x{c['num_gpus']}"
            n, m = out.get(k, (0, 0))
            out[k] = (n + 1, m + int(abs(c["rel_error"]) <= BLOCK_TARGET))
    return out


def _ranking_met(result: dict) -> dict:
    return {f"{sec} {host} {c['config']}": bool(c["met"])
            for sec in ("ranking", "ranking_interleaved") for host, r in result.get(sec, {}).items() for c in r["configs"]}


def _serve_within(result: dict) -> dict:
    """{folder: held-out serving load-run figures within target} (runs x figures, as validate's headline)."""
    return {folder: sum(int(f["runs_within_target"]) for f in r["holdout"]["figures"].values())
            for folder, r in result.get("serve_load", {}).items()}


def g2_rows(before: dict, after: dict) -> list[dict]:
    rows = []
    b0, b1 = _blocks_within(before), _blocks_within(after)
    for k in sorted(b0):
        rows.append({"name": f"TP/CP blocks {k} within 10%", "before": b0[k][1], "after": b1.get(k, (0, 0))[1],
                     "passes": b1.get(k, (0, 0))[1] >= b0[k][1]})
    r0, r1 = _ranking_met(before), _ranking_met(after)
    n0, n1 = sum(r0.values()), sum(r1.get(k, False) for k in r0)
    rows.append({"name": "ranking configurations met", "before": n0, "after": n1, "passes": n1 >= n0})
    s0, s1 = _serve_within(before), _serve_within(after)
    for folder in sorted(s0):
        rows.append({"name": f"serving load runs {folder}: figures within target", "before": s0[folder],
                     "after": s1.get(folder, 0), "passes": s1.get(folder, 0) >= s0[folder]})
    for gpu in GPUS:
        rows.append(_row(f"decode GEMMs {gpu}", before["decode_gemm"][gpu]["held_out"],
                         after["decode_gemm"][gpu]["held_out"], KIND_MEDIAN_PP, KIND_P90_PP, keep_met=False))
    return rows


def moved_fields(before: dict, after: dict) -> dict:
    """{top-level `twin validate --json` key: number of its leaves that moved} (inputs, the run's own
    paths and hashes, left out)."""
    a, b = _leaves({k: v for k, v in before.items() if k != "inputs"}), _leaves({k: v for k, v in after.items() if k != "inputs"})
    out: dict = {}
    for k in sorted(set(a) | set(b)):
        if a.get(k) != b.get(k):
            top = k.split(".", 1)[0]
            out[top] = out.get(top, 0) + 1
    return out


def verdict(judgement: dict) -> dict:
    """Adopt only if every C1, C2, G1 and G2 row passes (G3, the judgement tests under the candidate, is only
    run where the rest passes)."""
    failed = {part: [r["name"] for r in judgement[part] if not r["passes"]] for part in ("c1", "c2", "g1", "g2")}
    return {"adopt": not any(failed.values()), "failed": {k: v for k, v in failed.items() if v}}


def judge(before: dict, after: dict, committed_profiles: Path, candidate_profiles: Path) -> dict:
    terms = {gpu: candidate_terms(json.loads((committed_profiles / f"{gpu}.json").read_text()),
                                  json.loads((candidate_profiles / f"{gpu}.json").read_text())) for gpu in GPUS}
    out = {"rule": "docs/notes/s26refit_rule.md", "candidate_terms": terms,
           "c1": c1_rows(before, after), "c2": c2_rows(before, after), "g1": g1_rows(before, after),
           "g2": g2_rows(before, after), "moved_fields": moved_fields(before, after)}
    out["verdict"] = verdict(out)
    return out


@entry.script
def main(argv=None) -> int:
    ap = entry.parser("calibration.refit_judge", __doc__)
    ap.add_argument("--before", type=Path, required=True, help="`twin validate --json` of the committed profiles")
    ap.add_argument("--after", type=Path, required=True, help="`twin validate --json` of the candidate's profiles")
    ap.add_argument("--candidate", type=entry.folder, required=True, help="the candidate's profiles folder")
    ap.add_argument("--write", action="store_true", help=f"write {JUDGEMENT.name}")
    args = ap.parse_args(argv)
    with entry.user_inputs("--before/--after", f"{args.before} {args.after}", "`twin validate --json` results"):
        before, after = json.loads(args.before.read_text()), json.loads(args.after.read_text())
        j = judge(before, after, Path(str(PROFILES_DIR)), args.candidate)
    for part in ("c1", "c2", "g1", "g2"):
        for r in j[part]:
            if "median_rise_pp" in r:
                print(f"{part} {r['name']:32s} median {r['median_before']:.4f} -> {r['median_after']:.4f} "
                      f"({r['median_rise_pp']:+.3f} pp) P90 {r['p90_before']:.4f} -> {r['p90_after']:.4f} "
                      f"({r['p90_rise_pp']:+.3f} pp) {'ok' if r['passes'] else 'BREACH'}")
            else:
                print(f"{part} {r['name']}: {({k: v for k, v in r.items() if k not in ('name', 'passes')})} "
                      f"{'ok' if r['passes'] else 'BREACH'}")
    print(f"verdict: {'adopt' if j['verdict']['adopt'] else 'not adopted'} {j['verdict']['failed']}")
    if args.write:
        print(f"-> {write_json_text(JUDGEMENT, json.dumps(j, indent=1) + chr(10))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Figures (not a test): every published row under a power law other than the catalog's, for the
500 W card torchtitan's rows run (docs/notes/s14tt_rule.md). A diagnostic: the twin is not changed.

The catalog's `clock_frac` and `attention_clock_fracs` of h100-hbm2e-500w are calibration.power_cap's
derivations under the adopted law (today the assumed one: the idle power as the static part, dynamic
power ~ f^3). Here they are re-derived under the law fitted to the duty sweep (h100/duty_sweep.csv,
campaign s14tt; NOT adopted: the rule's criteria 2 and 3 fail) or under a law given by hand, swapped
into the loaded catalog for this process only, and the rows compared before and after.

With --copy-load: the law with the exponent measured beside copy-engine traffic (h100/copy_load.csv,
campaign s15ttpw; docs/notes/s15tt_rule.md part C, whose rows R1-R5 this prints).

Usage: PYTHONPATH=. python benchmarks/published_runs_power_law.py [--static-w W --exponent K | --copy-load]  (~1 min)
"""

from __future__ import annotations

import argparse
import contextlib

from calibration import power_cap as pc
from calibration.published_runs import compare
from twin.core import specs

CARD = "h100-hbm2e-500w"


@contextlib.contextmanager
def card_under(law: pc.PowerLaw, limit_w: float = 500.0):
    """The loaded catalog's capped card with its clock fields derived under `law`, restored after."""
    row = specs._catalog("hardware.toml")["gpus"][CARD]
    saved = dict(row)
    row["clock_frac"] = round(pc.clock_frac_at(limit_w, law=law), 3)
    row.update(pc.fa2_catalog_entry(limit_w, law=law))
    try:
        yield dict(row)
    finally:
        row.clear()
        row.update(saved)


def errors() -> tuple[dict, dict]:
    r = compare()
    return {x["id"]: x["rel_error"] for x in r["rows"]}, r["summary"]


def _pct(v) -> str:
    return "refused" if v is None else f"{v:+.1%}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--static-w", type=float, help="the law's static part (with --exponent; default: the duty sweep's fit)")
    ap.add_argument("--exponent", type=float)
    ap.add_argument("--copy-load", action="store_true", help="the exponent of h100/copy_load.csv (s15tt part C)")
    args = ap.parse_args(argv)
    if args.copy_load:
        law = pc.power_law(adopt=False, copy_load=True)
    elif args.static_w is not None and args.exponent:
        law = pc.PowerLaw(args.static_w, args.exponent, source="given")
    else:
        law = pc.power_law(adopt=True)
    before, sb = errors()
    with card_under(law) as row:
        after, sa = errors()
    print(f"law: static {law.static_w:.1f} W, exponent {law.exponent:.2f} ({law.source}); {CARD}: clock_frac "
          f"{row['clock_frac']}, attention_clock_fracs {row.get('attention_clock_fracs', row.get('attention_clock_frac'))}")
    for rid in before:
        if before[rid] != after[rid]:
            print(f"{rid:28s} {_pct(before[rid]):>8s} -> {_pct(after[rid]):>8s}")
    for name, s in (("catalog", sb), ("this law", sa)):
        within = sum(1 for e in (before if name == "catalog" else after).values() if e is not None and abs(e) <= 0.10)
        print(f"{name:9s}: {s['num_evaluated']} evaluated, {within} within 10%, median |error| {s['median_abs_rel_error']:.1%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Every serving load-run figure an engine-fit switch can move, with the committed tables (the switch off)
and with the tables the switch fits (on), computed the same way: what a rule in docs/notes/ judges
(s16srv: ADOPT_MEASURED_NEW_SIZE, docs/notes/s16srv_rule.md; s17srv: ADOPT_KERNEL_FIRST_LAUNCH; s17srv2:
serve_load_validation.ADOPT_KERNEL_WARMUP; s18srv: ADOPT_POST_PROMPT_DECODE; s19srv2: ADOPT_EP_PROMPT_WARMUP;
s20srv3: ADOPT_EP_DECODE_LEVEL).

Sets: the committed held-out runs (80 checks) and fit runs (250) as `twin validate` replays them; the s13srv
records (calibration/measurements/<folder>/s13srv/) held out and fit, with the host probe as input; the
never-fitted hosts' held-out runs (s13srv_round*, s14srv_newhost_*), as
tests/calibration/test_serve_host_speed_targets.py replays them.

`python -m calibration.serve_switch_compare ADOPT_NAME` prints both settings' counts and medians and every
check whose side of its target differs.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

import calibration.serve_engine_fit as sef
import calibration.serve_load_validation as slv
from calibration import entry
from calibration import records as rec
from calibration.records_io import csv_exists
from calibration.serve_host_speed import checks, probe_folders, replay, tables_with
from calibration.serve_load_validation import FIGURES

NEW_HOST_GLOBS = ("s13srv_round*", "s14srv_newhost_*")   # as tests/calibration/test_serve_host_speed_targets.py


def new_host_folders(fit_folders: dict[str, Path]) -> dict[str, Path]:
    """'<gpu folder>/<sub folder>' -> a never-fitted host's records beside a fit folder's s13srv records."""
    return {f"{name}/{d.name}": d for name, fit in fit_folders.items() for pattern in NEW_HOST_GLOBS
            for d in sorted(fit.parent.glob(pattern)) if csv_exists(d / "serve_load.csv")}


def all_rows(root: Path | None = None) -> dict[str, dict[str, list[dict]]]:
    """set name -> folder -> replayed rows, under the engine tables loaded now."""
    root = rec.records_root() if root is None else root
    committed = {name: Path(root) / name for name in sef.FOLDERS if csv_exists(Path(root) / name / "serve_load.csv")}
    s13 = probe_folders(root)
    return {
        "committed_holdout": {n: replay(d, True, ("holdout",), committed=True) for n, d in committed.items()},
        "committed_fit": {n: replay(d, True, ("fit",), committed=True) for n, d in committed.items()},
        "s13srv_holdout": {n: replay(d, True, ("holdout",)) for n, d in s13.items()},
        "s13srv_fit": {n: replay(d, True, ("fit",)) for n, d in s13.items()},
        "never_fitted_holdout": {n: replay(d, True, ("holdout",)) for n, d in new_host_folders(s13).items()},
    }


def summary(rows: dict[str, dict[str, list[dict]]]) -> dict[str, tuple[int, int, float]]:
    """(met, checks, median |error|) per set, per s13srv held-out folder, and for the held-out set with the
    input (committed held out + s13srv held out)."""
    out = {}
    for name, folders in rows.items():
        flat = [r for rs in folders.values() for r in rs]
        met, n, errs = checks(flat)
        out[name] = (met, n, float(np.median(errs)) if errs else math.nan)
    for name in ("committed_holdout", "s13srv_holdout"):   # per GPU folder (s17srv: the committed ones too)
        for folder, rs in rows[name].items():
            met, n, errs = checks(rs)
            out[f"{name}/{folder}"] = (met, n, float(np.median(errs)) if errs else math.nan)
    held = [r for k in ("committed_holdout", "s13srv_holdout") for rs in rows[k].values() for r in rs]
    met, n, errs = checks(held)
    out["with_input_holdout"] = (met, n, float(np.median(errs)))
    return out


def moved(off: dict, on: dict) -> list[str]:
    """Every check whose error moved by more than 0.1 point, and whether it changed side of its target."""
    lines = []
    for name, folders in off.items():
        for folder, rows in folders.items():
            for a, b in zip(rows, on[name][folder]):
                for k in FIGURES:
                    ea, eb = a[f"{k}_rel_error"], b[f"{k}_rel_error"]
                    if math.isfinite(ea) and math.isfinite(eb) and abs(ea - eb) > 0.001:
                        side = {(True, False): " LOST", (False, True): " GAINED"}.get(
                            (a[f"{k}_within_target"], b[f"{k}_within_target"]), "")
                        lines.append(f"{name:21} {folder:32} {a['run_id']:34} {k:20} {ea:+.1%} -> {eb:+.1%}{side}")
    return lines


def compare(switch: str) -> tuple[dict, dict, list[str], dict]:
    """Both settings of sef.<switch>: (summary off, summary on, moved checks, the tables on)."""
    module = sef if hasattr(sef, switch) else slv   # s17srv2's switch sits with sizes_run_before
    off_rows = all_rows(rec.records_root())
    setattr(module, switch, True)
    try:
        tables_on = sef.fitted_tables()
    finally:
        setattr(module, switch, False)
    setattr(module, switch, True)   # the switch on while replaying (step caches key on it)
    try:
        with tables_with(tables_on):
            on_rows = all_rows(rec.records_root())
    finally:
        setattr(module, switch, False)
    return summary(off_rows), summary(on_rows), moved(off_rows, on_rows), tables_on


def _switch(text: str) -> str:
    """An ADOPT_* switch of serve_engine_fit or sizes_run_before (compare's modules)."""
    if not text.startswith("ADOPT_") or not (hasattr(sef, text) or hasattr(slv, text)):
        raise argparse.ArgumentTypeError(f"got {text!r}; allowed: an ADOPT_* switch of calibration.serve_engine_fit "
                                         "or calibration.serve_load_validation")
    return text


@entry.script
def main(argv: list[str] | None = None) -> None:
    ap = entry.parser("calibration.serve_switch_compare", __doc__)
    ap.add_argument("switch", nargs="?", type=_switch, default="ADOPT_MEASURED_NEW_SIZE", metavar="ADOPT_NAME",
                    help="the switch compared off and on (default ADOPT_MEASURED_NEW_SIZE)")
    off, on, lines, tables = compare(ap.parse_args(argv).switch)
    for key, t in tables.items():
        print(f"{key}: " + ", ".join(f"{k} {t[k] * 1e3:.3f} ms" for k in sef.TERMS if t[k])
              + f", p_ref {t.get('host_probe_launch_s', 0.0) * 1e6:.2f} us, beta {t.get('host_probe_exponent', 0.0):.3f}")
    for name in off:
        (ma, na, ea), (mb, nb, eb) = off[name], on[name]
        print(f"{name:40} off {ma:3}/{na:3} median {ea:.2%}   on {mb:3}/{nb:3} median {eb:.2%}")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

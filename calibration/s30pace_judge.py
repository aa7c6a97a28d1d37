"""s30pace's judgement (docs/notes/s30pace_rule.md): ADOPT_SERVE_BOARD_PACE (twin.serving.iteration: a serving
instance of N > 1 GPUs priced on the default profile runs its GEMM and attention curves at the slowest of its N
boards, twin.costs.board_pace) off and on, on what the rule's guards read:

- G0 / G1 / G2: every serving load-run check of calibration.serve_switch_compare's sets (the committed held-out
  runs, issue 15's; the committed fit runs; s13srv held out and fit with the host input; the never-fitted hosts'
  held out): one-GPU figures identical, no check met off missed on;
- G3: DeepSeek's published serving comparisons (twin.serving.published.deepseek_production): none within 15% off
  outside it on;
- G4 (with --guards OFF.json ON.json, `twin validate --json` with the switch off and on): only serving figures of
  multi-GPU instances differ.
Reported beside them: `twin serve`'s default (R1 on one HGX H200) off and on.

`python -m calibration.s30pace_judge --guards OFF.json ON.json --json calibration/s30pace_judgement.json` (several
minutes: every load run is replayed twice). ON.json is the CLI's own `twin validate` with the switch set in-process
(calibration never imports the CLI): `python -c "import sys, twin.serving.iteration as i; i.ADOPT_SERVE_BOARD_PACE =
True; from twin.cli.main import main; sys.exit(main(['validate', '--quiet', '--json', 'ON.json']))"`.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
from pathlib import Path

import calibration.serve_switch_compare as ssc
from calibration import entry
from calibration import records as rec
from calibration.serve_load_validation import FIGURES
from calibration.records_io import read_json
from twin.serving import iteration

PUBLISHED_BAND = 0.15   # issue 15's band for DeepSeek's published figures (tests/twin/serving/test_serve_published.py)
# `twin validate --json` sections whose figures come from serving iterations (G4: nothing else may move)
SERVING_SECTIONS = ("deepseek_serving_profiles",)
SERVING_RECORD_KEYS = ("serve_load", "serving")   # a records-section path holding one of these is a serving figure


@contextlib.contextmanager
def switched(on: bool):
    """ADOPT_SERVE_BOARD_PACE set to `on` inside the block, restored after."""
    saved = iteration.ADOPT_SERVE_BOARD_PACE
    iteration.ADOPT_SERVE_BOARD_PACE = on
    try:
        yield
    finally:
        iteration.ADOPT_SERVE_BOARD_PACE = saved


def instance_gpus(table: str) -> int:
    """The EP size a replay row's engine table names ('real-serve-h200-ep2...' -> 2; none named -> 1)."""
    found = re.search(r"-ep(\d+)", table or "")
    return int(found.group(1)) if found else 1


def flat_checks(rows: dict[str, dict[str, list[dict]]]) -> dict[str, dict]:
    """'set|folder|run|figure' -> {rel_error, within, gpus} over serve_switch_compare.all_rows' rows."""
    out = {}
    for name, folders in rows.items():
        for folder, rs in folders.items():
            for r in rs:
                for k in FIGURES:
                    out[f"{name}|{folder}|{r['run_id']}|{k}"] = {"rel_error": r[f"{k}_rel_error"],
                                                                 "within": bool(r[f"{k}_within_target"]),
                                                                 "gpus": instance_gpus(r.get("table", ""))}
    return out


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def sets_verdict(off: dict[str, dict], on: dict[str, dict]) -> dict:
    """G0-G2 from flat_checks off and on."""
    lost = sorted(k for k in off if off[k]["within"] and not on[k]["within"])
    gained = sorted(k for k in off if not off[k]["within"] and on[k]["within"])
    one_gpu_moved = sorted(k for k in off if off[k]["gpus"] == 1 and not same(off[k]["rel_error"], on[k]["rel_error"]))
    moves = [abs(on[k]["rel_error"] - off[k]["rel_error"]) for k in off
             if math.isfinite(off[k]["rel_error"]) and math.isfinite(on[k]["rel_error"])]
    multi = [k for k in off if off[k]["gpus"] > 1]
    return {"lost": lost, "gained": gained, "one_gpu_moved": one_gpu_moved,
            "multi_gpu_checks": len(multi), "largest_move_points": 100 * max(moves, default=0.0),
            "G0": not one_gpu_moved,
            "G1": not [k for k in lost if k.startswith("committed_holdout|")],
            "G2": not [k for k in lost if not k.startswith("committed_holdout|")]}


def published_rows() -> dict[str, dict]:
    """DeepSeek's published serving comparisons: scenario -> predicted, claimed, rel_error."""
    from twin.serving.published import deepseek_production   # lazy: the request simulation, only for this part
    return {r["scenario"]: {k: r[k] for k in ("predicted", "claimed", "rel_error", "metric") if k in r}
            for r in deepseek_production()}


def published_verdict(off: dict[str, dict], on: dict[str, dict]) -> dict:
    """G3: no row within the band off is outside it on; every row's move."""
    left = sorted(k for k in off if abs(off[k]["rel_error"]) <= PUBLISHED_BAND and not abs(on[k]["rel_error"]) <= PUBLISHED_BAND)
    return {"moves_points": {k: 100 * (on[k]["rel_error"] - off[k]["rel_error"]) for k in off}, "left_band": left,
            "G3": not left}


def serve_default() -> dict:
    """`twin serve`'s default scenario (R1 on one HGX H200): its headline figures."""
    from twin.core.scenario import load_scenario   # lazy: the request simulation, only for this part
    from twin.serving.run import serve
    r = serve(load_scenario(kind="serving"))
    return {k: getattr(r, k) for k in ("output_tokens_per_s", "output_tokens_per_s_per_node", "tpot_p50_s", "ttft_p50_s",
                                       "e2e_p50_s", "batch", "tpot_s", "ttft_s", "analytic_output_tokens_per_s_per_node",
                                       "usd_per_million_output_tokens", "instance_gpus")}


def leaves(obj, path: str = "") -> dict[str, object]:
    """path -> value of every leaf of a JSON value (lists by index)."""
    if isinstance(obj, dict):
        return {p: v for k, x in obj.items() for p, v in leaves(x, f"{path}/{k}").items()}
    if isinstance(obj, list):
        return {p: v for i, x in enumerate(obj) for p, v in leaves(x, f"{path}/{i}").items()}
    return {path: obj}


def is_serving_path(path: str) -> bool:
    """Whether a `twin validate --json` leaf is a serving figure (G4 lets those move)."""
    top = path.split("/")[1] if path.count("/") else path
    return top in SERVING_SECTIONS or any(k in path for k in SERVING_RECORD_KEYS)


def validate_verdict(off_json: Path, on_json: Path) -> dict:
    """G4: the leaves of `twin validate --json` that differ, by top-level section; non-serving ones fail it."""
    a, b = leaves(json.loads(Path(off_json).read_text())), leaves(json.loads(Path(on_json).read_text()))
    changed = sorted(p for p in set(a) | set(b) if not (p in a and p in b and
                                                        (a[p] == b[p] or (isinstance(a[p], float) and isinstance(b[p], float)
                                                                          and same(a[p], b[p])))))
    sections: dict[str, int] = {}
    for p in changed:
        top = p.split("/")[1]
        sections[top] = sections.get(top, 0) + 1
    other = [p for p in changed if not is_serving_path(p)]
    memory = [p for p in changed if "memory" in p]
    return {"changed_by_section": sections, "changed_count": len(changed), "changed_first": changed[:40], "non_serving_changed": other, "memory_changed": memory,
            "G4": not other and not memory}


def judge(guards: tuple[Path, Path] | None, earlier: dict | None = None) -> dict:
    """Every figure the rule reads, off and on, and its verdict (`earlier`: a judgement of this tree whose figures
    are taken as they are, only G4 and the verdict computed again)."""
    if earlier is not None:
        out = {k: v for k, v in earlier.items() if k not in ("validate", "guards", "adopt")}
        return verdict(out, guards)
    out: dict = {"rule": "docs/notes/s30pace_rule.md", "switch": "twin.serving.iteration.ADOPT_SERVE_BOARD_PACE"}
    figures = {}
    for label, on in (("off", False), ("on", True)):
        with switched(on):
            rows = ssc.all_rows()
            if not flat_checks(rows):   # before the minutes of published rows: nothing of the rule's sets here
                raise FileNotFoundError(f"no serving load run (serve_load.csv) under {rec.records_root()}")
            figures[label] = {"summary": ssc.summary(rows), "checks": flat_checks(rows),
                              "published": published_rows(), "serve_default": serve_default()}
    out["summary"] = {lab: {k: {"met": v[0], "checks": v[1], "median_abs_error": v[2]} for k, v in figures[lab]["summary"].items()}
                      for lab in ("off", "on")}
    out["sets"] = sets_verdict(figures["off"]["checks"], figures["on"]["checks"])
    out["published"] = {lab: figures[lab]["published"] for lab in ("off", "on")}
    out["published"].update(published_verdict(figures["off"]["published"], figures["on"]["published"]))
    out["serve_default"] = {lab: figures[lab]["serve_default"] for lab in ("off", "on")}
    return verdict(out, guards)


def verdict(out: dict, guards: tuple[Path, Path] | None) -> dict:
    """The rule's guards on the figures in `out`; G4 from the two `twin validate --json` files (none: no verdict)."""
    held = {g: out["sets"][g] for g in ("G0", "G1", "G2")}
    held["G3"] = out["published"]["G3"]
    if guards is not None:
        out["validate"] = validate_verdict(*guards)
        held["G4"] = out["validate"]["G4"]
    out["guards"] = held
    out["adopt"] = guards is not None and all(held.values())
    return out


def report(out: dict) -> str:
    lines = [f"{k:40} off {v['met']:3}/{v['checks']:3} median {v['median_abs_error']:.2%}   "
             f"on {out['summary']['on'][k]['met']:3}/{out['summary']['on'][k]['checks']:3} "
             f"median {out['summary']['on'][k]['median_abs_error']:.2%}" for k, v in out["summary"]["off"].items()]
    s = out["sets"]
    lines.append(f"checks lost {s['lost']}, gained {s['gained']}, one-GPU figures moved {len(s['one_gpu_moved'])}, "
                 f"largest move {s['largest_move_points']:.3f} points over {s['multi_gpu_checks']} multi-GPU checks")
    for k, off in out["published"]["off"].items():
        on = out["published"]["on"][k]
        lines.append(f"{k:62} {off['predicted']:>12,.1f} -> {on['predicted']:>12,.1f}  {off['rel_error']:+.2%} -> {on['rel_error']:+.2%}")
    a, b = out["serve_default"]["off"], out["serve_default"]["on"]
    lines.append("twin serve (R1, one HGX H200): " + ", ".join(f"{k} {a[k]:.6g} -> {b[k]:.6g}" for k in a))
    if "validate" in out:
        lines.append(f"twin validate --json changed: {out['validate']['changed_by_section']}; non-serving "
                     f"{out['validate']['non_serving_changed'][:10]}")
    lines.append(f"guards {out['guards']} -> adopt {out['adopt']}")
    return "\n".join(lines)


@entry.script
def main(argv: list[str] | None = None) -> None:
    ap = entry.parser("calibration.s30pace_judge", __doc__)
    ap.add_argument("--guards", nargs=2, type=Path, metavar=("OFF_JSON", "ON_JSON"),
                    help="`twin validate --json` with the switch off and on (G4); without them no verdict")
    ap.add_argument("--json", type=Path, help="write the judgement here")
    ap.add_argument("--figures-from", type=Path, metavar="JSON",
                    help="an earlier judgement of this tree: its figures as they are, only G4 and the verdict again")
    args = ap.parse_args(argv)
    earlier = None
    with entry.user_inputs("--figures-from", args.figures_from, "a judgement JSON this command wrote"):
        earlier = read_json(args.figures_from) if args.figures_from else None
    if args.guards:
        for path in args.guards:
            with entry.user_inputs("--guards", path, "a `twin validate --json` file"):
                json.loads(path.read_text())
    out = judge(tuple(args.guards) if args.guards else None, earlier)
    print(report(out))
    entry.write_json(args.json, out, sort_keys=True, default=float)


if __name__ == "__main__":
    main()

"""`twin validate --json` with calibration's ADOPT_* switches as named, and the comparison of two such
runs by the clauses of docs/notes/s17alt_rule.md (diagnostics only).

    PYTHONPATH=. .venv/bin/python benchmarks/s17alt_figures.py run OUT.json [FLAG=0|1 ...]   (1-2 minutes)
    PYTHONPATH=. .venv/bin/python benchmarks/s17alt_figures.py compare OFF.json ON.json

FLAG: a module-level ADOPT_* name of calibration.pipeline, calibration.pipeline_judgement or
calibration.whole_step (as benchmarks/ep_host_figures.py). `compare` prints, for each run: the held-out
median / P90 per GPU and kind (one GPU) and per host and kind (multi-GPU), the idle counts within
tolerance per host, the ranking judgements (s15rank's folders, the interleaved folders, median order on
the host folders), the H800 chunk pair, and how many validation cases differ between the two runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import calibration.pipeline as pipe
import calibration.pipeline_judgement as judgement
import calibration.whole_step as whole
from twin.cli.main import main as twin_main

IDLE_TOL, IDLE_FLOOR_OF_STEP = 0.10, 0.01   # tests/calibration/test_whole_runs.py


def _set_flags(argv: list[str]) -> None:
    for a in argv:
        name, _, value = a.partition("=")
        mod = next((m for m in (pipe, judgement) if hasattr(m, name)), whole)
        if not name.startswith("ADOPT_") or not hasattr(mod, name) or value not in ("0", "1"):
            raise SystemExit(f"not a FLAG=0|1 of calibration.pipeline, calibration.pipeline_judgement or "
                             f"calibration.whole_step: {a}")
        setattr(mod, name, value == "1")


def _case_key(c: dict) -> str:
    return json.dumps({k: c.get(k) for k in ("gpu", "bench", "kind", "name", "num_gpus", "folder")}, sort_keys=True,
                      default=str) + json.dumps(c.get("row", c.get("config", "")), sort_keys=True, default=str)


def _pairs_line(g: dict) -> str:
    parts = []
    for p in g["pairs"]:
        if p.get("gap") is None:
            continue
        twin = f"{p['twin_gap']:+.2%}" if p.get("twin_gap") is not None else "-"
        parts.append(f"{p['b']}/{p['a']} D {p['gap']:+.2%} [{(p['lo'] or float('nan')):+.2%}, {(p['hi'] or float('nan')):+.2%}]"
                     f" twin {twin} {'met' if p['met'] else 'MISS'}")
    return "; ".join(parts)


def summary(result: dict) -> list[str]:
    lines = []
    for gpu, kinds in sorted(result.get("by_gpu_kind", {}).items()):
        for kind, s in sorted(kinds.items()):
            h = s.get("held_out", {})
            if h.get("num_cases"):
                lines.append(f"1gpu {gpu} {kind}: {h['median_abs_rel_error']:.2%} / {h['p90_abs_rel_error']:.2%} "
                             f"(n={h['num_cases']}, signed {s.get('signed_median_rel_error', float('nan')):+.2%})")
    for s in result.get("by_gpu_kind_gpus", []):
        h = s.get("held_out", {})
        if h.get("num_cases"):
            lines.append(f"multi {s['gpu']}x{s['num_gpus']} {s['kind']}: {h['median_abs_rel_error']:.2%} / "
                         f"{h['p90_abs_rel_error']:.2%} (n={h['num_cases']}, signed {s.get('signed_median_rel_error', float('nan')):+.2%})")
    idle_folders = {folder: v for folder, v in result.get("idle", {}).items()}
    hosts = sorted({f"{p['gpu']}x{p['num_gpus']}" for p in result.get("pipelines", []) if p.get("pp", 1) > 1})
    for host in hosts:
        judged = idle_folders.get(host)
        on_folder = {c["config"] for c in judged["configs"]} if judged else set()
        within = total = 0
        for p in result["pipelines"]:
            if f"{p['gpu']}x{p['num_gpus']}" != host or judgement.config_key(p["config"]) in on_folder:
                continue
            for r, meas in p["idle_measured_s"].items():
                sim = p["idle_simulated_s"][int(r) % p["pp"]]
                total += 1
                within += abs(sim - meas) <= max(IDLE_TOL * meas, IDLE_FLOOR_OF_STEP * p["measured_s"])
        if judged:
            within += judged["counts"]["met"]
            total += judged["counts"]["total"]
        lines.append(f"idle {host}: {within} of {total} GPUs within")
    for key in ("ranking", "ranking_interleaved"):
        for folder, v in sorted(result.get(key, {}).items()):
            for g in v["configs"]:
                met = sum(p["met"] for p in g["pairs"])
                lines.append(f"{key} {folder}/{v['folder']} n{g['config']}: {'met' if g['met'] else 'NOT met'} "
                             f"({met}/{len(g['pairs'])}); {_pairs_line(g)}")
    by_config: dict = {}
    for p in result.get("pipelines", []):
        if p.get("pp", 1) < 2:
            continue
        key = (p["gpu"], p["num_gpus"], p["config"]["num_microbatches"])
        by_config.setdefault(key, []).append(p)
    for (gpu, n, mb), ps in sorted(by_config.items(), key=str):
        meas = [p["schedule"] for p in sorted(ps, key=lambda p: p["measured_s"])]
        pred = [p["schedule"] for p in sorted(ps, key=lambda p: p["predicted_s"])]
        lines.append(f"median order {gpu}x{n} n{mb}: {'as measured' if meas == pred else 'NOT'}; measured "
                     f"{' < '.join(map(str, meas))}, twin {' < '.join(map(str, pred))}")
    pair = (result.get("h800_trace") or {}).get("chunk_pair") or {}
    if "rel_error" in pair:
        lines.append(f"h800 chunk pair {pair['rel_error']:+.2%}")
    return lines


def compare(off: dict, on: dict) -> list[str]:
    a = {_case_key(c): c for c in off.get("cases", [])}
    b = {_case_key(c): c for c in on.get("cases", [])}
    moved = [k for k in a if k in b and a[k].get("predicted_s") != b[k].get("predicted_s")]
    lines = [f"cases: {len(a)} / {len(b)}; predictions that differ: {len(moved)}"]
    kinds: dict = {}
    for k in moved:
        c = a[k]
        key = (c.get("gpu"), c.get("kind"), c.get("num_gpus"))
        kinds[key] = kinds.get(key, 0) + 1
    lines += [f"  moved {g} {k} x{n}: {count}" for (g, k, n), count in sorted(kinds.items(), key=str)]
    return lines


def main(argv: list[str]) -> int:
    if argv[:1] == ["run"] and len(argv) >= 2:
        _set_flags(argv[2:])
        return twin_main(["validate", "--quiet", "--json", argv[1]])
    if argv[:1] == ["compare"] and len(argv) == 3:
        off, on = (json.loads(Path(p).read_text()) for p in argv[1:])
        for name, r in (("OFF", off), ("ON", on)):
            print(f"== {name}")
            print("\n".join(summary(r)))
        print("== difference")
        print("\n".join(compare(off, on)))
        return 0
    raise SystemExit(__doc__)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

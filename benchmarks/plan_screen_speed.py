"""The plan screen's speed on the default space, this tree against a baseline checkout (s21ux).

Screens the same slices of the default `twin plan` space (57,600 DeepSeek-V3 candidates) in one
process per tree, each in its search's order (as a pool worker meets them), and prints CPU
seconds per candidate and the projected CPU time of the whole space; with --whole it also runs
`twin plan --tokens 14.8e12 --days 60 --json F` on the whole default space in each tree and
checks that both JSON answers are equal. Not a test: no test asserts a wall time.

Run: PYTHONPATH=. python benchmarks/plan_screen_speed.py --baseline DIR [--whole] [--slice N]
     (DIR: another checkout, e.g. `git worktree add /tmp/base main`)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OFFSETS = (0, 20_000, 40_000)   # three slices across the space (GPU types, counts, TP differ)

SLICE_CODE = """
import json, sys, time
from twin.core.fields import build
from twin.core.scenario import load_scenario
from twin.core.search_specs import SearchSpec
from twin.planning import search
from twin.planning.space import axes, candidates
sc = load_scenario()
spec = build(SearchSpec, {"tokens": 14.8e12, "days": 60}, "search")
space = axes(sc, spec)
cands = list(candidates(space))
prices = search.catalog_prices(sc)
# each tree screens a slice in its own search's order (s21ux groups candidates by block costs)
order = search.screen_order(space) if hasattr(search, "screen_order") else None
n = int(sys.argv[1])
out = {"total": len(cands), "slices": []}
for start in json.loads(sys.argv[2]):
    part = cands[start:start + n]
    t0 = time.process_time()
    rows = {c.id: search.screen_one(sc, c, spec.tokens, prices) for c in (sorted(part, key=order) if order else part)}
    out["slices"].append({"start": start, "cpu_s": time.process_time() - t0,
                          "rows": [rows[c.id].step_time_s for c in part]})
print(json.dumps(out))
"""


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.1f} (5 min {five:.1f}) on {os.cpu_count()} CPUs"


def slices(tree: str, n: int) -> dict:
    done = subprocess.run([sys.executable, "-c", SLICE_CODE, str(n), json.dumps(OFFSETS)], check=True,
                          capture_output=True, text=True, cwd=tree, env={**os.environ, "PYTHONPATH": tree})
    return json.loads(done.stdout)


def whole(tree: str) -> tuple[float, float, dict]:
    """(wall, CPU) seconds of `twin plan` on the default space, and its JSON answer."""
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "plan.json"
        c0, w0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
        subprocess.run([sys.executable, "-m", "twin.cli.main", "plan", "--tokens", "14.8e12", "--days", "60", "--quiet",
                        "--json", str(target)], check=True, capture_output=True, cwd=tree,
                       env={**os.environ, "PYTHONPATH": tree})
        wall, c1 = time.perf_counter() - w0, resource.getrusage(resource.RUSAGE_CHILDREN)
        return wall, (c1.ru_utime - c0.ru_utime) + (c1.ru_stime - c0.ru_stime), json.loads(target.read_text())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--baseline", metavar="DIR", required=True, help="the checkout to compare with")
    ap.add_argument("--slice", type=int, default=2048, help="candidates per slice (default 2,048; three slices)")
    ap.add_argument("--whole", action="store_true", help="also run `twin plan` on the whole default space in each tree")
    args = ap.parse_args()
    trees = (("baseline", args.baseline), ("this tree", str(ROOT)))
    print(f"{load()}; slices of {args.slice:,} candidates at {', '.join(map(str, OFFSETS))}")
    results = {name: slices(path, args.slice) for name, path in trees}
    for name, res in results.items():
        cpu = sum(s["cpu_s"] for s in res["slices"])
        per = cpu / (args.slice * len(OFFSETS))
        print(f"{name:>9}: screen {cpu:.1f} s CPU, {per * 1e3:.2f} ms a candidate: the whole space "
              f"({res['total']:,}) ~{per * res['total']:.0f} s CPU, ~{per * res['total'] / 2:.0f} s on two free cores")
    base, now = (results[name]["slices"] for name, _ in trees)
    same = all(a["rows"] == b["rows"] for a, b in zip(base, now))
    ratio = sum(s["cpu_s"] for s in base) / sum(s["cpu_s"] for s in now)
    print(f"speed-up {ratio:.2f}x; screened step times identical: {same} ({load()})")
    if args.whole:
        answers = {}
        for name, path in trees:
            wall, cpu, answers[name] = whole(path)
            print(f"{name:>9}: twin plan (default space) {wall:.0f} s wall, {cpu:.0f} s CPU ({load()})")
        print(f"JSON answers equal: {answers['baseline'] == answers['this tree']}")


if __name__ == "__main__":
    main()
